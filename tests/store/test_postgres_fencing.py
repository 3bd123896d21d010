"""The PostgreSQL store's fence: with a node id, every write of a space checks inside
its transaction that this node holds the space at the epoch the write carries. A late
write of a node whose lease another node took over commits nothing, and the refusal
names the spaces, so the writer can commit the others without them. Real PostgreSQL."""

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import trio

from emit.cluster import leases
from emit.domain.model import LogLevel
from emit.domain.records import LogLine, Space
from emit.store.base import Fenced
from emit.store.postgres import PostgresStore
from emit.store.records import Changes, log_row

A, B = "01SPACE000000000000000000A", "01SPACE000000000000000000B"


def line(n: int) -> tuple[Any, ...]:
    return log_row(f"J{n}", LogLine(1, LogLevel.INFO, f"line {n}", 1000.0, None))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    made = PostgresStore(database_url, node_id="node-a")
    with trio.fail_after(60):
        await made.open()
        await made.commit(
            [Changes(spaces=[Space(s, s[-1], f"emit_pub_{s[-1]}", 1000.0, {}) for s in (A, B)])]
        )
        yield made
        await made.close()


def admin(store: PostgresStore) -> psycopg.Connection[Any]:
    return psycopg.connect(store.url, autocommit=True)


def logs(store: PostgresStore) -> list[str]:
    with admin(store) as conn:
        return [r[0] for r in conn.execute("SELECT message FROM job_logs ORDER BY message")]


async def test_writes_commit_while_this_node_holds_the_space_at_their_epoch(
    store: PostgresStore,
) -> None:
    with admin(store) as conn:
        assert leases.claim(conn, A, "node-a", 10) == 1
    with trio.fail_after(30):
        await store.commit([Changes(logs=[line(1)], fence=(A, 1))])
    assert logs(store) == ["line 1"]


async def test_a_late_write_after_another_nodes_claim_commits_nothing(
    store: PostgresStore,
) -> None:
    with admin(store) as conn:
        assert leases.claim(conn, A, "node-a", 10) == 1
        assert leases.claim(conn, B, "node-a", 10) == 1
        # node-a pauses past its lease; node-b claims A.
        conn.execute(
            "UPDATE space_owners SET expires_at = clock_timestamp() WHERE space_id = %s", (A,)
        )
        assert leases.claim(conn, A, "node-b", 10) == 2
    with trio.fail_after(30), pytest.raises(Fenced) as refused:
        await store.commit(
            [Changes(logs=[line(1)], fence=(A, 1)), Changes(logs=[line(2)], fence=(B, 1))]
        )
    assert list(refused.value.spaces) == [A]  # B is still this node's
    assert "held by node node-b at epoch 2" in str(refused.value)
    assert logs(store) == []  # neither: the whole transaction rolled back
    assert store.failure is None  # the database is fine: not a failing store
    with trio.fail_after(30):
        await store.commit([Changes(logs=[line(2)], fence=(B, 1))])  # B's, again alone
    assert logs(store) == ["line 2"]


async def test_writes_of_one_space_at_two_epochs_are_refused_at_the_older(
    store: PostgresStore,
) -> None:
    with admin(store) as conn:
        assert leases.claim(conn, A, "node-a", 10) == 1
    with trio.fail_after(30), pytest.raises(Fenced) as refused:
        await store.commit(
            [Changes(logs=[line(1)], fence=(A, 1)), Changes(logs=[line(2)], fence=(A, 2))]
        )
    assert list(refused.value.spaces) == [A]
    assert logs(store) == []


async def test_without_a_node_id_nothing_is_fenced(database_url: str) -> None:
    alone = PostgresStore(database_url)
    with trio.fail_after(60):
        await alone.open()
        try:
            await alone.commit([Changes(logs=[line(1)], fence=(A, 7))])  # never claimed
        finally:
            await alone.close()
