"""trading-engine: orders and fills, pre-trade risk, the kill switch, deployed strategies, and venues
(paper, CCXT, MT5)."""
