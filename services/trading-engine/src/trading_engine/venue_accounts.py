"""Venue accounts: a user's named accounts at CCXT exchanges and MT5 terminals, credentials encrypted.

An order names its account (`"paper"`, the default, or one of these names). A ccxt account holds the
exchange id and the API credentials (`apiKey`, `secret`, and `password` / `uid` where the exchange
needs them), and may trade the exchange's sandbox; an MT5 account names the user's agent (`agent_id`)
and may map platform symbols to the terminal's names (`symbols`). Credentials are encrypted before they
are stored and never returned; only the last four characters of the API key (or agent id) are, as
`key_hint`, when the key is long enough for that to give nothing away.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

import ccxt
from sqlalchemy.ext.asyncio import AsyncSession

from aitrading.errors import Conflict, Invalid, NotFound
from trading_engine import risk_accounts, store, venue_store
from trading_engine.account_orders import PAPER
from trading_engine.credentials import Credentials
from trading_engine.venue_store import Record
from trading_engine.venues import VenueAccount

if TYPE_CHECKING:
    from trading_engine.settings import Settings

KINDS = ("ccxt", "mt5")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
AGENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")   # data-bridge's rule for agent ids
CCXT_CREDENTIALS = ("apiKey", "secret", "password", "uid")
MAX_CREDENTIAL = 4096
MAX_SYMBOLS = 500
HINT_MIN_LENGTH = 8


@dataclass(frozen=True)
class NewVenueAccount:
    """What a user asks for, before it is checked."""

    name: str
    kind: str
    exchange: str | None = None
    credentials: dict[str, Any] = field(default_factory=dict)
    sandbox: bool = False
    symbols: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VenueAccountInfo:
    """A venue account as its owner sees it: everything but the credentials."""

    id: UUID
    owner: UUID
    name: str
    kind: str
    exchange: str | None
    sandbox: bool
    key_hint: str | None
    symbols: dict[str, str]
    created_at: datetime


@cache
def exchange_traits(exchange_id: str) -> tuple[tuple[str, ...], bool]:
    """The credentials an exchange requires (of CCXT_CREDENTIALS) and whether it has a sandbox."""
    exchange = getattr(ccxt, exchange_id)()
    required = tuple(name for name in CCXT_CREDENTIALS if exchange.requiredCredentials.get(name))
    return required, bool(exchange.urls.get("test"))


def problems(request: NewVenueAccount) -> list[dict[str, str]]:
    """Field problems of a new account, `[{"field", "reason"}]`; empty when it can be created."""
    found: list[dict[str, str]] = []
    if not NAME.fullmatch(request.name):
        found.append({"field": "name",
                      "reason": "1-64 letters, digits and _ . -, starting with a letter or digit"})
    elif request.name.lower() == PAPER:
        found.append({"field": "name", "reason": "'paper' is the engine's own account"})
    if request.kind == "ccxt":
        found += _ccxt_problems(request)
    elif request.kind == "mt5":
        found += _mt5_problems(request)
    else:
        found.append({"field": "kind", "reason": "one of ccxt, mt5"})
    return found


def _ccxt_problems(request: NewVenueAccount) -> list[dict[str, str]]:
    if request.symbols:
        return [{"field": "symbols", "reason": "only MT5 accounts map symbols"}]
    if not request.exchange or request.exchange not in ccxt.exchanges:
        return [{"field": "exchange", "reason": "a ccxt exchange id (GET /api/v1/venues lists them)"}]
    required, has_sandbox = exchange_traits(request.exchange)
    found = [{"field": f"credentials.{name}", "reason": "not one of apiKey, secret, password, uid"}
             for name in request.credentials if name not in CCXT_CREDENTIALS]
    for name in CCXT_CREDENTIALS:
        value = request.credentials.get(name)
        if value is None:
            if name in required or name in ("apiKey", "secret"):
                found.append({"field": f"credentials.{name}", "reason": f"{request.exchange} requires it"})
        elif not isinstance(value, str) or not value.strip() or len(value) > MAX_CREDENTIAL:
            found.append({"field": f"credentials.{name}", "reason": f"text of 1-{MAX_CREDENTIAL} characters"})
    if request.sandbox and not has_sandbox:
        found.append({"field": "sandbox", "reason": f"{request.exchange} has no sandbox in ccxt"})
    return found


def _mt5_problems(request: NewVenueAccount) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    if request.exchange is not None:
        found.append({"field": "exchange", "reason": "only ccxt accounts name an exchange"})
    if request.sandbox:
        found.append({"field": "sandbox", "reason": "an MT5 account is demo or live as its terminal is"})
    agent_id = request.credentials.get("agent_id")
    if not isinstance(agent_id, str) or not AGENT_ID.fullmatch(agent_id):
        found.append({"field": "credentials.agent_id", "reason": "the agent's id: 1-64 of A-Z a-z 0-9 . _ -"})
    found += [{"field": f"credentials.{name}", "reason": "an MT5 account takes only agent_id"}
              for name in request.credentials if name != "agent_id"]
    if len(request.symbols) > MAX_SYMBOLS:
        found.append({"field": "symbols", "reason": f"at most {MAX_SYMBOLS} symbols"})
    found += [{"field": f"symbols.{platform}", "reason": "a terminal symbol name, 1-64 characters"}
              for platform, terminal in request.symbols.items() if not 0 < len(terminal.strip()) <= 64]
    return found


def key_hint(kind: str, credentials: dict[str, Any]) -> str:
    key = str(credentials.get("apiKey" if kind == "ccxt" else "agent_id") or "")
    return key[-4:] if len(key) >= HINT_MIN_LENGTH else ""


def info_of(row: Record) -> VenueAccountInfo:
    options = row.options or {}
    return VenueAccountInfo(id=row.id, owner=row.owner_id, name=row.name, kind=row.kind,
                            exchange=row.exchange, sandbox=row.sandbox, key_hint=row.key_hint or None,
                            symbols=dict(options.get("symbols") or {}), created_at=row.created_at)


def account_of(row: Record, credentials: Credentials) -> VenueAccount:
    """The account with its credentials decrypted, for a venue call."""
    options = dict(row.options or {})
    options["sandbox"] = row.sandbox
    return VenueAccount(id=row.id, owner=row.owner_id, kind=row.kind, name=row.name, exchange=row.exchange,
                        credentials=credentials.decrypt(row.credentials), options=options)


# --- use cases ---------------------------------------------------------------------------------------


async def create(session: AsyncSession, owner: UUID, request: NewVenueAccount,
                 settings: Settings) -> VenueAccountInfo:
    found = problems(request)
    if found:
        detail = "; ".join(f"{p['field']}: {p['reason']}" for p in found)
        raise Invalid(f"the venue account is not valid: {detail}", errors=found)
    cipher = Credentials.from_settings(settings)  # no key: 503 before anything is stored
    credentials = {k: v.strip() if isinstance(v, str) else v for k, v in request.credentials.items()}
    options: dict[str, Any] = {"symbols": {k: v.strip() for k, v in request.symbols.items()}} \
        if request.symbols else {}
    row = await venue_store.insert_account(
        session, owner=owner, name=request.name, kind=request.kind,
        exchange=request.exchange if request.kind == "ccxt" else None, sandbox=request.sandbox,
        options=options, credentials=cipher.encrypt(credentials),
        key_hint=key_hint(request.kind, credentials), now=datetime.now(UTC))
    if row is None:
        raise Conflict(f"you already have a venue account named {request.name!r}",
                       errors=[{"field": "name", "reason": "already used by another of your venue accounts"}])
    return info_of(row)


async def list_of(session: AsyncSession, owner: UUID) -> list[VenueAccountInfo]:
    return [info_of(row) for row in await venue_store.accounts_of(session, owner)]


async def get(session: AsyncSession, owner: UUID, account_id: UUID) -> VenueAccountInfo:
    return info_of(await _row(session, owner, account_id))


async def account_by_id(session: AsyncSession, owner: UUID, account_id: UUID,
                        settings: Settings) -> VenueAccount:
    """The owner's venue account, credentials decrypted; NotFound (404) if none."""
    return account_of(await _row(session, owner, account_id), Credentials.from_settings(settings))


async def account_named(session: AsyncSession, owner: UUID, name: str, settings: Settings) -> VenueAccount:
    """The owner's venue account called `name`, credentials decrypted; NotFound (404) naming it if none."""
    row = await venue_store.account_by_name(session, owner, name)
    if row is None:
        raise NotFound(f"you have no venue account named {name!r}",
                       errors=[{"field": "account", "reason": f"no venue account named {name!r}"}])
    return account_of(row, Credentials.from_settings(settings))


async def delete(session: AsyncSession, owner: UUID, account_id: UUID, settings: Settings) -> None:
    """Delete an account without open orders (409 while it has some: they could no longer be followed).
    The owner's risk lock keeps an order from being placed on it meanwhile."""
    await risk_accounts.lock(session, owner, settings)
    row = await _row(session, owner, account_id)
    open_orders = await store.open_orders_of(session, owner, row.name)
    if open_orders:
        raise Conflict(f"venue account {row.name!r} has {len(open_orders)} open orders; cancel them first",
                       open_orders=len(open_orders))
    await venue_store.delete_account(session, owner, account_id)


async def _row(session: AsyncSession, owner: UUID, account_id: UUID) -> Record:
    row = await venue_store.account_by_id(session, owner, account_id)
    if row is None:
        raise NotFound(f"no venue account {account_id}")
    return row
