"""MetaTrader 5 agent of the AI trading platform: a terminal's ticks out, the platform's orders in."""

__version__ = "0.1.0"
