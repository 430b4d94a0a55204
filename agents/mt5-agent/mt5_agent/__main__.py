"""`python -m mt5_agent --url wss://host:8000/ws/mt5 --token atp_... --symbols EURUSD,XAUUSD`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from mt5_agent.agent import Agent, Refused, Terminal, TerminalError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mt5-agent", description=__doc__)
    parser.add_argument("--url", required=True, help="the platform's MT5 endpoint, e.g. wss://host:8000/ws/mt5")
    parser.add_argument("--token", default=os.environ.get("MT5_AGENT_TOKEN"),
                        help="API key (atp_...) or access token; default: $MT5_AGENT_TOKEN")
    parser.add_argument("--symbols", default="", help="terminal symbols to stream, comma-separated")
    parser.add_argument("--poll-ms", type=int, default=100, help="tick polling interval (ms)")
    parser.add_argument("--agent-id", default=None, help="stable name of this agent (default: host-login)")
    parser.add_argument("--server-offset-minutes", type=int, default=0,
                        help="minutes the trade server's clock is ahead of UTC (tick times are shifted back)")
    parser.add_argument("--terminal-path", default=None,
                        help="terminal64.exe to start (default: the running terminal)")
    parser.add_argument("--login", type=int, default=None, help="trading account (default: the terminal's)")
    parser.add_argument("--password", default=os.environ.get("MT5_PASSWORD"), help="default: $MT5_PASSWORD")
    parser.add_argument("--server", default=None, help="trade server name")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("a token is needed: --token or MT5_AGENT_TOKEN")
    if args.poll_ms < 10:
        parser.error("--poll-ms must be at least 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import MetaTrader5  # only installable on Windows, next to the terminal

    terminal = Terminal(MetaTrader5, server_offset_minutes=args.server_offset_minutes,
                        path=args.terminal_path, login=args.login, password=args.password, server=args.server)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    agent = Agent(terminal, args.url, args.token, symbols, agent_id=args.agent_id, poll_ms=args.poll_ms)
    try:
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        return 0
    except (Refused, TerminalError) as exc:
        logging.getLogger("mt5_agent").error("%s", exc)
        return 2
    finally:
        terminal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
