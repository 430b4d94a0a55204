-- Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d).
-- The platform uses one database; each service creates and migrates its own schema in it at start
-- (aitrading.db.Database), so nothing else is created here.
SELECT 'CREATE DATABASE aitrading OWNER ' || quote_ident(current_user)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'aitrading')\gexec

\connect aitrading
-- Statement statistics for slow-query hunting (loaded by shared_preload_libraries in compose).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
