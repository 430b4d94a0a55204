"""Pytest plugin of the platform (loaded with `-p aitrading.testing`): real PostgreSQL, NATS and Redis.

`DATABASE_URL`, `NATS_URL` and `REDIS_URL` from the environment are used when set; otherwise the
session starts embedded PostgreSQL and NATS (JetStream) under a temporary folder. Redis has no embedded
server: without `REDIS_URL` the Redis-backed tests are skipped and the in-process backends are tested.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from aitrading.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("NATS_URL")
    if url:
        yield url
        return
    from aitrading.embedded import EmbeddedNats

    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set: Redis-backed behaviour is not tested on this machine")
    return url
