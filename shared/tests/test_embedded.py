"""Embedded PostgreSQL and NATS: real servers from the wheels, data kept across restarts."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import asyncpg
import nats
import pytest

from aitrading.embedded import EmbeddedNats, EmbeddedPostgres, free_port, port_accepts


def test_free_port_returns_the_preferred_port_when_nothing_listens_on_it() -> None:
    port = free_port()
    assert free_port(port) == port


def test_free_port_falls_back_when_the_preferred_port_is_taken() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        other = free_port(taken)
        assert other != taken
        assert not port_accepts(other)


@pytest.mark.slow
async def test_postgres_keeps_data_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", database="keeps_data")
    await asyncio.to_thread(server.start)
    try:
        first_url = server.url
        assert first_url.startswith("postgresql://postgres@127.0.0.1:") and first_url.endswith("/keeps_data")
        conn = await asyncpg.connect(first_url)
        try:
            await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
            await conn.execute("INSERT INTO notes VALUES (1, 'survives a restart')")
        finally:
            await conn.close()

        await asyncio.to_thread(server.stop)
        assert not server.is_running()
        assert not port_accepts(server.port or 0)

        again = EmbeddedPostgres(tmp_path / "pg", database="keeps_data")
        await asyncio.to_thread(again.start)
        assert again.url == first_url  # the remembered port is reused
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT body FROM notes WHERE id = 1") == "survives a restart"
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.slow
async def test_postgres_start_reuses_a_server_already_running_from_the_same_folder(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")
    await asyncio.to_thread(server.start)
    try:
        second = EmbeddedPostgres(tmp_path / "pg", database="another_db")
        await asyncio.to_thread(second.start)
        assert second.port == server.port
        conn = await asyncpg.connect(second.url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "another_db"
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.stop)
    assert not second.is_running()


@pytest.mark.slow
async def test_nats_jetstream_keeps_stream_data_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    stream, subject = f"KEEP_{uuid.uuid4().hex[:8]}", f"keep.{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(server.start)
    try:
        client = await nats.connect(server.url)
        try:
            js = client.jetstream()
            await js.add_stream(name=stream, subjects=[subject])
            ack = await js.publish(subject, b"persisted")
            assert ack.stream == stream
        finally:
            await client.close()

        await asyncio.to_thread(server.stop)
        assert not server.is_running()

        again = EmbeddedNats(tmp_path / "nats")
        await asyncio.to_thread(again.start)
        assert again.url == server.url
        client = await nats.connect(again.url)
        try:
            message = await client.jetstream().get_msg(stream, seq=ack.seq)
            assert message.data == b"persisted"
        finally:
            await client.close()
    finally:
        await asyncio.to_thread(server.stop)  # stops whichever server runs from the folder (pid file)
