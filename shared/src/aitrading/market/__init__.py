"""The market-data kernel: timeframes, the tick and bar model, their NATS wire form, bar frames.

Shared because data-bridge, database-service, feature-engineering, pattern-validator, the trading
engine and the backtester must agree exactly on what a bar is and when it closes.
"""
