"""database-service: the market-data warehouse (bars, ticks, symbols) on ClickHouse or chDB."""
