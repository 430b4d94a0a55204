"""A stand-in for the `MetaTrader5` package (Windows-only), with its functions, constants and shapes.

`FakeMetaTrader5()` behaves like the imported module: `initialize`, `last_error`, `shutdown`,
`terminal_info`, `account_info`, `symbol_select`, `symbol_info`, `symbol_info_tick`, `copy_ticks_from`
(a numpy structured array with the real dtype), `order_send` (an `OrderSendResult`). The test side
adds symbols and ticks (`add_symbol`, `push_tick`) and reads the requests the agent sent
(`requests`). One instance per test, so tests do not share a terminal.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from datetime import datetime
from typing import Any

import numpy as np

TICK_DTYPE = np.dtype([("time", "<i8"), ("bid", "<f8"), ("ask", "<f8"), ("last", "<f8"), ("volume", "<u8"),
                       ("time_msc", "<i8"), ("flags", "<u4"), ("volume_real", "<f8")])

Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")
SymbolInfo = namedtuple("SymbolInfo", "name visible select digits point volume_min volume_max volume_step "
                                      "filling_mode trade_tick_size currency_base currency_profit")
TerminalInfo = namedtuple("TerminalInfo", "connected trade_allowed company name path build")
AccountInfo = namedtuple("AccountInfo", "login server currency company leverage balance")
OrderSendResult = namedtuple("OrderSendResult", "retcode deal order volume price bid ask comment request_id "
                                                "retcode_external request")


class FakeMetaTrader5:
    # The package's constants that the agent uses, with the package's values.
    COPY_TICKS_ALL, COPY_TICKS_INFO, COPY_TICKS_TRADE = -1, 1, 2
    TICK_FLAG_BID, TICK_FLAG_ASK, TICK_FLAG_LAST, TICK_FLAG_VOLUME = 2, 4, 8, 16
    TRADE_ACTION_DEAL, TRADE_ACTION_PENDING = 1, 5
    ORDER_TYPE_BUY, ORDER_TYPE_SELL, ORDER_TYPE_BUY_LIMIT, ORDER_TYPE_SELL_LIMIT = 0, 1, 2, 3
    ORDER_TYPE_BUY_STOP, ORDER_TYPE_SELL_STOP = 4, 5
    ORDER_TYPE_BUY_STOP_LIMIT, ORDER_TYPE_SELL_STOP_LIMIT = 6, 7
    ORDER_FILLING_FOK, ORDER_FILLING_IOC, ORDER_FILLING_RETURN = 0, 1, 2
    ORDER_TIME_GTC, ORDER_TIME_DAY = 0, 1
    TRADE_RETCODE_PLACED, TRADE_RETCODE_DONE, TRADE_RETCODE_DONE_PARTIAL = 10008, 10009, 10010
    TRADE_RETCODE_REJECT, TRADE_RETCODE_INVALID_VOLUME = 10006, 10014
    RES_S_OK, RES_E_FAIL, RES_E_NOT_FOUND, RES_E_INTERNAL_FAIL = 1, -1, -4, -10001

    def __init__(self, *, login: int = 5012345, server: str = "Demo-Server") -> None:
        self.login = login
        self.server = server
        self.initialized = False
        self.initialize_calls: list[dict[str, Any]] = []
        self.symbols: dict[str, SymbolInfo] = {}
        self.ticks: dict[str, list[tuple[Any, ...]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.retcode = self.TRADE_RETCODE_DONE
        self.refuse_initialize = False
        self._error: tuple[int, str] = (self.RES_S_OK, "Success")
        self._next_ticket = 1000
        self._lock = threading.Lock()  # the test thread adds ticks while the agent's thread reads them

    # --- the test side ---

    def add_symbol(self, name: str, *, digits: int = 5, volume_step: float = 0.01,
                   filling_mode: int = 1) -> None:
        self.symbols[name] = SymbolInfo(name, False, False, digits, 10.0 ** -digits, volume_step, 100.0,
                                        volume_step, filling_mode, 10.0 ** -digits, name[:3], name[3:6])
        self.ticks[name] = []

    def push_tick(self, symbol: str, time_msc: int, bid: float, ask: float, last: float = 0.0,
                  volume: float = 0.0, flags: int = 6) -> None:
        with self._lock:
            row = (time_msc // 1000, bid, ask, last, int(volume), time_msc, flags, volume)
            self.ticks[symbol].append(row)

    # --- the package's functions ---

    def initialize(self, path: str | None = None, **kwargs: Any) -> bool:
        self.initialize_calls.append({"path": path, **kwargs})
        if self.refuse_initialize:
            self._error = (self.RES_E_INTERNAL_FAIL, "IPC initialize failed, MetaTrader 5 x64 not found")
            return False
        self.initialized = True
        self._error = (self.RES_S_OK, "Success")
        return True

    def shutdown(self) -> None:
        self.initialized = False

    def last_error(self) -> tuple[int, str]:
        return self._error

    def terminal_info(self) -> TerminalInfo | None:
        if not self.initialized:
            return None
        return TerminalInfo(True, True, "Fake Broker Ltd", "MetaTrader 5",
                            r"C:\Program Files\MetaTrader 5", 4755)

    def account_info(self) -> AccountInfo | None:
        if not self.initialized:
            return None
        return AccountInfo(self.login, self.server, "USD", "Fake Broker Ltd", 100, 10_000.0)

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        info = self.symbols.get(symbol)
        if info is None:
            self._error = (self.RES_E_NOT_FOUND, "Terminal: Not found")
            return False
        self.symbols[symbol] = info._replace(visible=enable, select=enable)
        return True

    def symbol_info(self, symbol: str) -> SymbolInfo | None:
        info = self.symbols.get(symbol)
        if info is None:
            self._error = (self.RES_E_NOT_FOUND, "Terminal: Not found")
        return info

    def symbol_info_tick(self, symbol: str) -> Tick | None:
        with self._lock:
            rows = self.ticks.get(symbol)
            if not rows:
                self._error = (self.RES_E_NOT_FOUND, "Terminal: Not found")
                return None
            return Tick(*rows[-1])

    def copy_ticks_from(self, symbol: str, date_from: datetime | int, count: int, flags: int) -> Any:
        if symbol not in self.ticks:
            self._error = (self.RES_E_NOT_FOUND, "Terminal: Not found")
            return None
        start_s = int(date_from.timestamp()) if isinstance(date_from, datetime) else int(date_from)
        with self._lock:
            rows = [row for row in self.ticks[symbol] if row[5] >= start_s * 1000][:count]
        return np.array(rows, dtype=TICK_DTYPE)

    def order_send(self, request: dict[str, Any]) -> OrderSendResult | None:
        self.requests.append(dict(request))
        info = self.symbols.get(request.get("symbol", ""))
        if info is None:
            self._error = (self.RES_E_FAIL, "Invalid params")
            return None
        self._next_ticket += 1
        done = self.retcode in (self.TRADE_RETCODE_DONE, self.TRADE_RETCODE_PLACED)
        with self._lock:
            last = self.ticks[info.name][-1] if self.ticks[info.name] else None
        bid, ask = (last[1], last[2]) if last else (0.0, 0.0)
        return OrderSendResult(self.retcode, self._next_ticket if done else 0, self._next_ticket + 500000,
                               request["volume"] if done else 0.0, request.get("price", 0.0) if done else 0.0,
                               bid, ask, "Request executed" if done else "Request rejected", 1, 0, request)
