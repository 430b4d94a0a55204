"""data-bridge settings: quality thresholds, batching, bar-close timing, feeds started on first boot."""

from __future__ import annotations

from typing import Any

from aitrading.settings import ServiceSettings

# Started on first boot when no feed is stored: a clearly labelled synthetic feed at a modest rate,
# so a fresh `make run` shows live data without filling the disk.
DEFAULT_FEEDS: list[dict[str, Any]] = [
    {"kind": "synthetic", "symbols": ["SYN-BTC/USD", "SYN-ETH/USD"],
     "params": {"rate": 2, "start_price": "100"}},
]


class Settings(ServiceSettings):
    service_name: str = "data-bridge"

    # Quality: a tick whose |log return| exceeds `spike_sigma` standard deviations of the rolling
    # EWMA estimate is a spike, once `spike_warmup` returns have been seen.
    spike_sigma: float = 10.0
    spike_warmup: int = 20
    spike_ewma_lambda: float = 0.94
    # A move at or below this |log return| is never a spike (a price that sat still has no variance).
    spike_min_return: float = 0.002
    # This many consecutive ticks agreeing on a new level make it a level shift, accepted from there.
    spike_confirm: int = 3
    keep_spikes: bool = False
    # An active feed with no data for this long is reported stale.
    stale_after_s: float = 60.0
    stale_check_interval_s: float = 5.0
    # Quality findings are summed per symbol and check and published once per interval.
    quality_flush_s: float = 1.0

    # Ticks are published per symbol every `tick_flush_ms` or once `tick_batch_max` are pending.
    tick_flush_ms: int = 50
    tick_batch_max: int = 5000
    # A tick event larger than this is split (NATS refuses messages over its max_payload, 1 MiB).
    max_event_bytes: int = 900_000
    # Unsent events kept while NATS refuses them; beyond this the oldest are dropped (and counted).
    publish_buffer_max: int = 200_000
    publish_retry_initial_s: float = 0.2
    publish_retry_max_s: float = 5.0

    # A live feed's bar closes this long after its bucket ends even when no later tick arrives.
    bar_close_grace_s: float = 2.0

    # Hot quotes mirrored in Redis (when REDIS_URL is set) expire after this.
    quote_ttl_s: float = 3600.0

    # WebSocket ingest: how often a connection is told its accepted/dropped counts.
    ingest_stats_interval_s: float = 1.0
    # /ws/market: messages a client may have queued before it is disconnected as too slow.
    market_queue_size: int = 20_000

    # How often feeds are claimed (one instance runs each feed, under a Postgres advisory lock),
    # their status and counters saved, and changes made through another replica applied.
    feed_claim_interval_s: float = 5.0
    # Backoff of a feed's own reconnect loop (warehouse, exchange, agent).
    feed_backoff_initial_s: float = 1.0
    feed_backoff_max_s: float = 60.0

    # Feeds created on first boot when the store has none (JSON list in DEFAULT_FEEDS).
    default_feeds: list[dict[str, Any]] = DEFAULT_FEEDS
