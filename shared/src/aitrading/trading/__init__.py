"""The trading core: orders and their state machine, pre-trade risk, fill models, portfolio accounting
and the strategy interface. The live trading engine and the backtester run this same code.

Pure: no I/O, no clocks read behind the caller's back (times are passed in), Decimal for money and
quantities.
"""
