from portfolio_manager.store import metadata

from aitrading.db import run_migrations_in_env

run_migrations_in_env(metadata)
