"""Async SQLAlchemy on asyncpg: one schema per service, Alembic migrations, a session per request.

Every connection of a service runs with `search_path` set to the service's schema, so its tables are
declared without a schema and no service reads another's tables by accident. The request session
commits when the route returns and rolls back when it raises; domain code only adds and flushes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

PLATFORM_MIGRATIONS = Path(__file__).parent / "migrations"


def naming_convention_metadata() -> MetaData:
    return MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


def to_async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


class Database:
    """The engine and session factory of one service schema; a resource of the service factory."""

    name = "postgres"

    def __init__(self, url: str, schema: str, *, migrations: Path | None = None, pool_size: int = 10,
                 echo: bool = False) -> None:
        self.url = to_async_url(url)
        self.schema = schema
        self.migrations = migrations
        self.engine: AsyncEngine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            echo=echo,
            connect_args={"server_settings": {"search_path": schema, "application_name": schema}},
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        await self.migrate()

    async def migrate(self) -> None:
        """Apply the platform tables (outbox, processed events), then the service's own migrations."""
        await self._upgrade(PLATFORM_MIGRATIONS, "alembic_version_platform")
        if self.migrations is not None:
            await self._upgrade(self.migrations, "alembic_version")

    async def _upgrade(self, script_location: Path, version_table: str) -> None:
        async with self.engine.begin() as conn:
            # One migrator at a time per schema, even with several replicas starting together.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                               {"key": f"{self.schema}:{version_table}"})
            await conn.run_sync(_run_alembic_upgrade, script_location, version_table, self.schema)

    async def check(self) -> None:
        async with self.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=2)

    async def stop(self) -> None:
        await self.engine.dispose()


def _run_alembic_upgrade(conn: Connection, script_location: Path, version_table: str, schema: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["connection"] = conn
    cfg.attributes["version_table"] = version_table
    cfg.attributes["schema"] = schema
    command.upgrade(cfg, "head")


def run_migrations_in_env(target_metadata: MetaData | None = None) -> None:
    """The body of every `migrations/env.py`: run online on the connection the library hands over."""
    from alembic import context

    cfg = context.config
    conn: Connection | None = cfg.attributes.get("connection")
    if conn is None:
        raise RuntimeError("migrations run through aitrading.db.Database.migrate, which passes a connection")
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        version_table=cfg.attributes.get("version_table", "alembic_version"),
        version_table_schema=cfg.attributes.get("schema"),
    )
    with context.begin_transaction():
        context.run_migrations()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: commit when the route succeeds, roll back when it raises."""
    db: Database = request.app.state.db
    async with db.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": the commit runs when the route returns, before the response is sent, so a client
# never reads ahead of a write it was told succeeded, and a failing commit is the response's error.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
