from trading_engine.store import metadata

from aitrading.db import run_migrations_in_env

run_migrations_in_env(metadata)
