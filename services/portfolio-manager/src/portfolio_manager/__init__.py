"""portfolio-manager: positions, cash and realized P&L from fills, valuation, allocation and rebalancing."""
