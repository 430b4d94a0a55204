"""pattern-validator: candlestick and chart patterns over stored and live bars, and users' own rules."""
