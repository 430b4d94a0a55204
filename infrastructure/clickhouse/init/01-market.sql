-- Runs once, on the first start of an empty data volume (docker-entrypoint-initdb.d).
-- database-service owns the tables of the market-data warehouse and creates them itself;
-- this only makes sure its database exists.
CREATE DATABASE IF NOT EXISTS aitrading;
