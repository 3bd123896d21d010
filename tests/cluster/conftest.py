"""A fresh PostgreSQL database with the cluster's tables and a minimal ``spaces`` table
(the PostgreSQL store's own, in the real thing), and connections to it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from emit.cluster.schema import MIGRATION

TIMEOUT_MS = 20_000
"""No statement of a test waits longer (a lock wait included): a bug fails the test, it
does not hang it."""


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, options=f"-c statement_timeout={TIMEOUT_MS}")


@pytest.fixture
def db(database_url: str) -> str:
    with connect(database_url) as conn, conn.transaction():
        conn.execute("CREATE TABLE spaces (id TEXT PRIMARY KEY)")
        conn.execute(MIGRATION)
    return database_url


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(db) as connection:
        yield connection


def add_spaces(conn: psycopg.Connection[Any], spaces: list[str]) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO spaces (id) VALUES (%s)", [(s,) for s in spaces])


def expire(conn: psycopg.Connection[Any], *, node_id: str) -> None:
    """Force the node's heartbeat and every lease it holds to have expired, on the
    database's clock, without waiting."""
    past = "clock_timestamp() - interval '1 second'"
    conn.execute(f"UPDATE nodes SET expires_at = {past} WHERE id = %s", (node_id,))
    conn.execute(
        f"UPDATE space_owners SET expires_at = {past} "
        "WHERE node_id = %s AND expires_at > clock_timestamp()",
        (node_id,),
    )


def until(condition: Callable[[], Any], seconds: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition`` until it gives something true, and return that; fail after
    ``seconds``. For what has no event to wait on: another session's lock, or the state
    of real node processes."""
    deadline = time.monotonic() + seconds
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(every)
