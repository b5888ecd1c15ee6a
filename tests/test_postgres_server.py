"""The PostgreSQL test server itself: a fresh database per test, data that survives restarts."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.postgres import PostgresError, PostgresServer

pytestmark = pytest.mark.anyio

# Databases the `fresh` test got, in order: each run must see a new one, the last one gone.
databases_seen: list[str] = []


async def test_pg_url_is_a_working_database(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        await conn.execute("INSERT INTO notes VALUES (1, 'héllo ✓')")
        assert await conn.fetchval("SELECT body FROM notes WHERE id = 1") == "héllo ✓"
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()


@pytest.mark.parametrize("run", [1, 2])
async def test_each_test_gets_a_fresh_empty_database(pg_url: str, run: int) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        assert name not in databases_seen
        existing = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        assert existing.isdisjoint(databases_seen)  # the earlier test's database was dropped
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
        await conn.execute("CREATE TABLE left_behind (id int)")
        databases_seen.append(name)
    finally:
        await conn.close()  # open connections would not stop the drop, but tidy anyway


async def test_restart_keeps_committed_data_and_the_port(
    postgres: PostgresServer, pg_url: str
) -> None:
    port = postgres.port
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    postgres.restart()
    assert postgres.port == port
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")  # the old session is gone
    await conn.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT array_agg(id) FROM t") == [1]
    finally:
        await conn.close()


async def test_kill_loses_no_commit_and_no_uncommitted_write(
    postgres: PostgresServer, pg_url: str
) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    await conn.execute("BEGIN; INSERT INTO t VALUES (2)")
    postgres.kill()  # mid-transaction, the connection still open
    assert not postgres.running
    conn.terminate()
    postgres.start()  # crash recovery replays the WAL: fsync=off does not matter here
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT array_agg(id) FROM t") == [1]
    finally:
        await conn.close()
    assert "database system was interrupted" in postgres.log_tail(50)


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path, settings={"max_connections": "lots"})
    with pytest.raises(PostgresError, match=r'(?s)exited with code 1.*"max_connections"'):
        server.start()
    assert not server.running


async def test_durable_leaves_fsync_on_and_tests_keep_it_off(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    async def settings(url: str) -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            return [
                await conn.fetchval(f"SHOW {name}")
                for name in ("fsync", "full_page_writes", "synchronous_commit")
            ]
        finally:
            await conn.close()

    assert await settings(postgres.url()) == ["off", "off", "on"]
    with PostgresServer(tmp_path, durable=True) as durable:
        assert await settings(durable.url()) == ["on", "on", "on"]
