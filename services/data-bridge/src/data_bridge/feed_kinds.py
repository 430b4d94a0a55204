"""Every kind of feed the manager can start, by the `kind` named at POST /api/v1/feeds."""

from __future__ import annotations

from data_bridge.ccxt_feed import CcxtFeed
from data_bridge.feeds import Feed
from data_bridge.mt5_feed import Mt5Feed
from data_bridge.replay_feed import ReplayFeed
from data_bridge.synthetic_feed import SyntheticFeed

FEED_KINDS: dict[str, type[Feed]] = {
    ReplayFeed.kind: ReplayFeed,
    SyntheticFeed.kind: SyntheticFeed,
    CcxtFeed.kind: CcxtFeed,
    Mt5Feed.kind: Mt5Feed,
}
