"""The MT5 agent: streams a MetaTrader 5 terminal's ticks to the platform and places its orders there.

It runs on the Windows machine next to the terminal (the MetaTrader5 package talks to the terminal
process over local IPC), connects out to the platform's `/ws/mt5` with a bearer token, and:

- polls `copy_ticks_from` for every streamed symbol and sends the ticks newer than the last one sent,
  in batches; the position in the tick history only advances once a batch is sent, so ticks that
  arrive while the connection is down are read from the terminal's history after the reconnect;
- answers `order` messages with `order_send` and an `order_result`, and `ping` with `pong`;
- reconnects with capped, jittered exponential backoff; a refused token (401/403) or hello ends it
  instead, since retrying cannot mend it.

The MetaTrader5 module is not meant for concurrent calls, so every call goes through one worker
thread (`Terminal.call`), which also keeps the blocking IPC off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from mt5_agent import __version__, protocol
from mt5_agent.protocol import OrderRequest

log = logging.getLogger("mt5_agent")
T = TypeVar("T")

MAX_TICKS_PER_POLL = 10_000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_AGENT_ID = re.compile(r"[^A-Za-z0-9_.-]")


class TerminalError(RuntimeError):
    """The terminal refused something the agent cannot do without (initialize, say)."""


class Refused(RuntimeError):
    """The platform refused the agent (its token, or its hello): retrying the same cannot succeed."""


@dataclass
class Cursor:
    """Where a symbol's tick history was read up to: the last tick's time and how many shared it."""

    last_msc: int | None = None
    at_last: int = 0


@dataclass(frozen=True)
class SymbolSpec:
    digits: int
    volume_digits: int


class Terminal:
    """The MetaTrader5 module (or a stand-in with the same functions) behind one worker thread."""

    def __init__(self, mt5: Any, *, server_offset_minutes: int = 0,
                 max_ticks_per_poll: int = MAX_TICKS_PER_POLL, **initialize: Any) -> None:
        self.mt5 = mt5
        self.offset_ms = server_offset_minutes * 60_000
        self.max_ticks = max_ticks_per_poll
        self.initialize_args = {k: v for k, v in initialize.items() if v is not None}
        self.cursors: dict[str, Cursor] = {}
        self.specs: dict[str, SymbolSpec] = {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mt5")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    # --- the functions below run in the terminal thread ---

    def open(self) -> dict[str, Any]:
        """Connect to the terminal; what it says about itself goes into the hello."""
        mt5 = self.mt5
        args = dict(self.initialize_args)
        path = args.pop("path", None)  # the terminal's path is initialize's one positional argument
        if not (mt5.initialize(path, **args) if path else mt5.initialize(**args)):
            code, description = mt5.last_error()
            raise TerminalError(f"MetaTrader 5 did not initialize: {code} {description}")
        about: dict[str, Any] = {}
        terminal = mt5.terminal_info()
        if terminal is not None:
            about.update(company=terminal.company, name=terminal.name, build=terminal.build)
        account = mt5.account_info()
        if account is not None:
            about.update(login=account.login, server=account.server, currency=account.currency)
        return about

    def shutdown(self) -> None:
        self.mt5.shutdown()

    def select(self, symbol: str) -> str | None:
        """Make a symbol streamable; the reason when the terminal refuses it."""
        mt5 = self.mt5
        if not mt5.symbol_select(symbol, True):
            code, description = mt5.last_error()
            return f"symbol_select failed: {code} {description}"
        info = mt5.symbol_info(symbol)
        if info is None:
            code, description = mt5.last_error()
            return f"symbol_info failed: {code} {description}"
        self.specs[symbol] = SymbolSpec(int(info.digits), protocol.digits_of_step(float(info.volume_step)))
        return None

    def collect(self, symbols: list[str]) -> tuple[list[dict[str, Any]], dict[str, Cursor], bool]:
        """New ticks of `symbols` since their cursors: (rows, cursors after them, more waiting)."""
        rows: list[dict[str, Any]] = []
        moved: dict[str, Cursor] = {}
        more = False
        for symbol in symbols:
            spec = self.specs.get(symbol)
            if spec is None:
                continue
            cursor = self.cursors.get(symbol, Cursor())
            if cursor.last_msc is None:
                tick = self.mt5.symbol_info_tick(symbol)
                if tick is None or not tick.time_msc:
                    continue  # no quote yet (market closed since the terminal started)
                rows.append(self._row(symbol, spec, tick.time_msc, tick.bid, tick.ask, tick.last,
                                      tick.volume_real or tick.volume, tick.flags))
                moved[symbol] = Cursor(int(tick.time_msc), 1)
                continue
            # copy_ticks_from takes whole seconds: read from the last tick's second and skip what was sent.
            start = datetime.fromtimestamp(cursor.last_msc // 1000, tz=UTC)
            history = self.mt5.copy_ticks_from(symbol, start, self.max_ticks, self.mt5.COPY_TICKS_ALL)
            if history is None:
                code, description = self.mt5.last_error()
                log.warning("copy_ticks_from failed for %s: %s %s", symbol, code, description)
                continue
            last, at_last, skip, fresh = cursor.last_msc, cursor.at_last, cursor.at_last, 0
            for tick in history:
                msc = int(tick["time_msc"])
                if msc < cursor.last_msc:
                    continue
                if msc == cursor.last_msc and skip:
                    skip -= 1
                    continue
                volume = float(tick["volume_real"]) or float(tick["volume"])
                rows.append(self._row(symbol, spec, msc, float(tick["bid"]), float(tick["ask"]),
                                      float(tick["last"]), volume, int(tick["flags"])))
                fresh += 1
                if msc == last:
                    at_last += 1
                else:
                    last, at_last = msc, 1
            if fresh:
                moved[symbol] = Cursor(last, at_last)
            more = more or (len(history) >= self.max_ticks and fresh > 0)
        return rows, moved, more

    def _row(self, symbol: str, spec: SymbolSpec, time_msc: int, bid: float, ask: float, last: float,
             volume: float, flags: int) -> dict[str, Any]:
        return {"symbol": symbol, "time_msc": int(time_msc) - self.offset_ms,
                "bid": protocol.decimal_text(bid, spec.digits),
                "ask": protocol.decimal_text(ask, spec.digits),
                "last": protocol.decimal_text(last, spec.digits),
                "volume": protocol.decimal_text(volume, spec.volume_digits) or "0", "flags": int(flags)}

    def execute(self, order: OrderRequest) -> dict[str, Any]:
        """Send one order to the terminal; the fields of its `order_result` (without the request id)."""
        mt5 = self.mt5
        info = mt5.symbol_info(order.symbol)
        if info is None:
            return {"ok": False, "error": f"the terminal does not know the symbol {order.symbol}"}
        if not info.visible:
            mt5.symbol_select(order.symbol, True)
        buy = order.side == "buy"
        request: dict[str, Any] = {
            "symbol": order.symbol, "volume": float(order.volume), "deviation": order.deviation,
            "magic": order.magic, "comment": order.comment,
            "type_time": mt5.ORDER_TIME_DAY if order.time_in_force == "day" else mt5.ORDER_TIME_GTC}
        if order.type == "market":
            tick = mt5.symbol_info_tick(order.symbol)
            if tick is None:
                return {"ok": False, "error": f"no price for {order.symbol} in the terminal"}
            request.update(action=mt5.TRADE_ACTION_DEAL, price=tick.ask if buy else tick.bid,
                           type=mt5.ORDER_TYPE_BUY if buy else mt5.ORDER_TYPE_SELL)
        elif order.type == "limit":
            request.update(action=mt5.TRADE_ACTION_PENDING, price=float(order.price or 0),
                           type=mt5.ORDER_TYPE_BUY_LIMIT if buy else mt5.ORDER_TYPE_SELL_LIMIT)
        elif order.type == "stop":
            request.update(action=mt5.TRADE_ACTION_PENDING, price=float(order.stop_price or 0),
                           type=mt5.ORDER_TYPE_BUY_STOP if buy else mt5.ORDER_TYPE_SELL_STOP)
        else:  # stop_limit: triggers at the stop price, then rests as a limit at the price
            request.update(action=mt5.TRADE_ACTION_PENDING, price=float(order.stop_price or 0),
                           stoplimit=float(order.price or 0),
                           type=mt5.ORDER_TYPE_BUY_STOP_LIMIT if buy else mt5.ORDER_TYPE_SELL_STOP_LIMIT)
        request["type_filling"] = self._filling(order, info, pending=order.type != "market")
        if order.sl is not None:
            request["sl"] = float(order.sl)
        if order.tp is not None:
            request["tp"] = float(order.tp)
        if order.position is not None:
            request["position"] = order.position
        result = mt5.order_send(request)
        if result is None:
            code, description = mt5.last_error()
            return {"ok": False, "error": f"order_send failed: {code} {description}"}
        digits, volume_digits = int(info.digits), protocol.digits_of_step(float(info.volume_step))
        done = (mt5.TRADE_RETCODE_DONE, mt5.TRADE_RETCODE_PLACED, mt5.TRADE_RETCODE_DONE_PARTIAL)
        return {"ok": result.retcode in done, "retcode": int(result.retcode), "deal": int(result.deal),
                "order": int(result.order), "volume": protocol.decimal_text(result.volume, volume_digits),
                "price": protocol.decimal_text(result.price, digits),
                "bid": protocol.decimal_text(result.bid, digits),
                "ask": protocol.decimal_text(result.ask, digits),
                "comment": str(result.comment), "retcode_external": int(result.retcode_external)}

    def _filling(self, order: OrderRequest, info: Any, *, pending: bool) -> int:
        mt5 = self.mt5
        if order.filling is not None:
            return int({"fok": mt5.ORDER_FILLING_FOK, "ioc": mt5.ORDER_FILLING_IOC,
                        "return": mt5.ORDER_FILLING_RETURN}[order.filling])
        if pending:
            return int(mt5.ORDER_FILLING_RETURN)
        # The symbol's allowed fillings are a bit mask (SYMBOL_FILLING_FOK = 1, SYMBOL_FILLING_IOC = 2).
        if info.filling_mode & 1:
            return int(mt5.ORDER_FILLING_FOK)
        if info.filling_mode & 2:
            return int(mt5.ORDER_FILLING_IOC)
        return int(mt5.ORDER_FILLING_RETURN)


def default_agent_id(login: Any = None) -> str:
    base = f"{socket.gethostname()}-{login}" if login else socket.gethostname()
    return _AGENT_ID.sub("-", base)[:64] or "mt5-agent"


class Agent:
    def __init__(self, terminal: Terminal, url: str, token: str, symbols: list[str], *,
                 agent_id: str | None = None, poll_ms: int = 100, batch_max: int = 1000,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 30.0, open_timeout_s: float = 10.0,
                 welcome_timeout_s: float = 10.0) -> None:
        self.terminal = terminal
        self.url = url
        self.token = token
        self.own_symbols = list(dict.fromkeys(symbols))
        self.wanted: list[str] = []  # what the platform's feeds asked for on top
        self.selected: set[str] = set()  # symbols the terminal agreed to stream
        self.agent_id = agent_id
        self.poll_s = poll_ms / 1000
        self.batch_max = batch_max
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.welcome_timeout_s = welcome_timeout_s
        self.connected = asyncio.Event()
        self.connections = 0
        self.ticks_sent = 0
        self.orders = 0
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Stream until cancelled; raises Refused or TerminalError when it cannot go on."""
        about = await self.terminal.call(self.terminal.open)
        try:
            self.agent_id = self.agent_id or default_agent_id(about.get("login"))
            self.about = about
            await self._select(self.own_symbols)
            attempt = 0
            while True:
                try:
                    await self._connect_once()
                    attempt = 0  # a session that got going resets the backoff
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status in (401, 403):
                        body = exc.response.body.decode("utf-8", "replace")[:300] if exc.response.body else ""
                        raise Refused(f"the platform refused the token ({status}): {body}") from exc
                    log.warning("the platform answered %s; retrying", status)
                except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                    log.warning("connection to %s lost or refused: %r", self.url, exc)
                delay = self._backoff(attempt)
                attempt += 1
                log.info("reconnecting in %.2f s", delay)
                await asyncio.sleep(delay)
        finally:
            await self.terminal.call(self.terminal.shutdown)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(attempt, 32))
        return self._rng.uniform(ceiling / 2, ceiling)

    @property
    def streaming(self) -> list[str]:
        """The agent's own symbols and those the platform wants, as far as the terminal has them."""
        return [s for s in dict.fromkeys([*self.own_symbols, *self.wanted]) if s in self.selected]

    async def _select(self, symbols: list[str]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for symbol in symbols:
            if symbol in self.selected:
                continue
            reason = await self.terminal.call(self.terminal.select, symbol)
            if reason is None:
                self.selected.add(symbol)
            else:
                failed[symbol] = reason
                log.warning("cannot stream %s: %s", symbol, reason)
        return failed

    async def _connect_once(self) -> None:
        async with connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                           open_timeout=self.open_timeout_s, max_size=MAX_MESSAGE_BYTES,
                           user_agent_header=f"mt5-agent/{__version__}") as ws:
            await self._send(ws, protocol.hello(str(self.agent_id), self.streaming, self.about, __version__))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), self.welcome_timeout_s))
            if welcome.get("type") == protocol.ERROR:
                raise Refused(f"the platform refused the agent: {welcome.get('detail')}")
            if welcome.get("type") != protocol.WELCOME:
                raise ConnectionError(f"the platform did not welcome the agent: {welcome}")
            self.connections += 1
            log.info("connected to %s as %s", self.url, welcome.get("agent_id"))
            await self._subscribe(ws, welcome.get("subscribe") or [], answer=False)
            self.connected.set()
            streamer = asyncio.create_task(self._stream(ws), name="mt5-stream")
            receiver = asyncio.create_task(self._receive(ws), name="mt5-receive")
            try:
                done, _ = await asyncio.wait({streamer, receiver}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the first to end says why the session ended
            finally:
                self.connected.clear()
                for task in (streamer, receiver, *self._tasks):
                    task.cancel()
                await asyncio.gather(streamer, receiver, *self._tasks, return_exceptions=True)

    async def _stream(self, ws: ClientConnection) -> None:
        while True:
            rows, moved, more = await self.terminal.call(self.terminal.collect, self.streaming)
            for start in range(0, len(rows), self.batch_max):
                await self._send(ws, protocol.ticks(rows[start:start + self.batch_max]))
            self.terminal.cursors.update(moved)  # only what was handed to the connection
            self.ticks_sent += len(rows)
            if not more:
                await asyncio.sleep(self.poll_s)

    async def _receive(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                message = json.loads(raw)
            except ValueError:
                log.warning("ignoring a message that is not JSON")
                continue
            if not isinstance(message, dict):
                continue
            kind = message.get("type")
            if kind == protocol.PING:
                await self._send(ws, {"type": protocol.PONG, "id": message.get("id")})
            elif kind == protocol.SUBSCRIBE:
                await self._subscribe(ws, message.get("symbols") or [], answer=True)
            elif kind == protocol.ORDER:
                # Orders run beside the stream: ticks keep flowing while the terminal works on one.
                task = asyncio.create_task(self._order(ws, message), name="mt5-order")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif kind == protocol.ERROR:
                log.warning("the platform reports: %s", message.get("detail"))

    async def _subscribe(self, ws: ClientConnection, symbols: list[Any], *, answer: bool) -> None:
        self.wanted = [s for s in symbols if isinstance(s, str) and s]
        failed = await self._select(self.wanted)
        if answer or failed:
            await self._send(ws, {"type": protocol.SYMBOLS, "streaming": self.streaming, "failed": failed})

    async def _order(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        request_id = message.get("request_id")
        self.orders += 1
        try:
            order = OrderRequest.parse(message.get("order"))
        except ValueError as exc:
            result: dict[str, Any] = {"ok": False, "error": str(exc)}
        else:
            log.info("order %s: %s %s %s %s", request_id, order.side, order.volume, order.symbol, order.type)
            result = await self.terminal.call(self.terminal.execute, order)
        await self._send(ws, {"type": protocol.ORDER_RESULT, "request_id": request_id, **result})

    async def _send(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        await ws.send(json.dumps(message, separators=(",", ":")))
