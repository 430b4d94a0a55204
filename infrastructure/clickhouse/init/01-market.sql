-- Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d).
--
-- database-service owns the market-data warehouse and creates its tables itself at start-up
-- (services/database-service/src/database_service/sql.py: bars, ticks, symbols, retention), so the
-- same DDL serves chDB in-process and this server and nothing here can drift from it. Retention is
-- applied by the service as table TTLs. This only makes sure the database exists, since the service
-- connects with CLICKHOUSE_URL=http://aitrading:...@clickhouse:8123/aitrading.
CREATE DATABASE IF NOT EXISTS aitrading;
