"""The heartbeats, the ownership leases and the fence (emit/cluster/leases.py), on a real
PostgreSQL."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from emit.cluster import leases
from emit.store.base import Fenced
from tests.cluster.conftest import connect, expire, until

Conn = psycopg.Connection[Any]


def test_a_heartbeat_keeps_a_node_live(conn: Conn) -> None:
    leases.heartbeat(conn, "a", "http://a:1", 10)
    leases.heartbeat(conn, "b", "http://b:1", 10)
    assert [(n.id, n.url) for n in leases.live_nodes(conn)] == [
        ("a", "http://a:1"),
        ("b", "http://b:1"),
    ]
    expire(conn, node_id="a")
    assert [n.id for n in leases.live_nodes(conn)] == ["b"]
    (b,) = leases.live_nodes(conn)
    leases.heartbeat(conn, "a", "http://a:2", 10)
    leases.heartbeat(conn, "b", "http://b:1", 10)
    (a, b_again) = leases.live_nodes(conn)
    assert (a.id, a.url) == ("a", "http://a:2")
    assert a.started_at < a.heartbeat_at < a.expires_at
    assert b_again.started_at == b.started_at <= b.heartbeat_at < b_again.heartbeat_at
    leases.heartbeat(conn, "b", "http://b:1", 10, starting=True)  # b restarted
    (_, b_restarted) = leases.live_nodes(conn)
    assert b_restarted.started_at > b_again.heartbeat_at


def test_a_claim_takes_a_free_or_expired_space_with_the_next_epoch(conn: Conn) -> None:
    assert leases.claim(conn, "s", "a", 10) == 1
    assert leases.claim(conn, "s", "b", 10) is None
    assert leases.claim(conn, "s", "a", 10) is None  # a live lease is renewed, not claimed
    expire(conn, node_id="a")
    assert leases.claim(conn, "s", "b", 10) == 2
    expire(conn, node_id="b")
    assert leases.claim(conn, "s", "b", 10) == 3  # its own expired lease: a new epoch


def test_claims_of_many_spaces_are_one_statement(conn: Conn) -> None:
    assert leases.claim_all(conn, ["s1", "s2"], "a", 10) == {"s1": 1, "s2": 1}
    assert leases.claim_all(conn, ["s2", "s3", "s3"], "b", 10) == {"s3": 1}
    assert leases.claim_all(conn, [], "b", 10) == {}


def test_renewal_keeps_only_the_leases_still_held_at_their_epoch(conn: Conn) -> None:
    leases.claim_all(conn, ["s1", "s2", "s3", "s4"], "a", 10)
    leases.claim(conn, "s5", "b", 10)
    conn.execute("UPDATE space_owners SET expires_at = '-infinity' WHERE space_id = 's2'")
    conn.execute("UPDATE space_owners SET expires_at = clock_timestamp() WHERE space_id = 's4'")
    held = {"s1": 1, "s2": 1, "s3": 7, "s4": 1, "s5": 1}
    assert leases.renew(conn, "a", held, 10) == {"s1"}
    assert leases.renew(conn, "a", {}, 10) == set()
    # The renewal moved the expiry on; nothing else changed.
    row = conn.execute(
        "SELECT node_id, epoch, expires_at > clock_timestamp() + interval '9 seconds' "
        "FROM space_owners WHERE space_id = 's1'"
    ).fetchone()
    assert row == ("a", 1, True)


def test_a_released_space_is_claimed_at_once_with_the_next_epoch(conn: Conn) -> None:
    leases.claim(conn, "s", "a", 10)
    assert not leases.release(conn, "s", "a", 2)  # not at that epoch: nothing happens
    assert not leases.release(conn, "s", "b", 1)
    assert leases.claim(conn, "s", "b", 10) is None
    assert leases.release(conn, "s", "a", 1)
    assert leases.claim(conn, "s", "b", 10) == 2
    assert leases.renew(conn, "a", {"s": 1}, 10) == set()


def test_owners_are_the_live_leases_with_their_node_url(conn: Conn) -> None:
    leases.heartbeat(conn, "a", "http://a", 10)
    leases.heartbeat(conn, "b", "http://b", 10)
    leases.claim_all(conn, ["s1", "s2"], "a", 10)
    leases.claim(conn, "s3", "b", 10)
    leases.claim(conn, "s4", "b", 10)
    leases.release(conn, "s4", "b", 1)
    assert leases.owners(conn) == {
        "s1": ("a", "http://a", 1),
        "s2": ("a", "http://a", 1),
        "s3": ("b", "http://b", 1),
    }
    assert leases.owners(conn, ["s2", "s4", "nope"]) == {"s2": leases.Owner("a", "http://a", 1)}
    assert leases.owners(conn, []) == {}


def test_leaving_releases_every_lease_and_deletes_the_node(conn: Conn) -> None:
    leases.heartbeat(conn, "a", "http://a", 10)
    leases.claim_all(conn, ["s1", "s2"], "a", 10)
    assert leases.leave(conn, "a") == {"s1", "s2"}
    assert leases.live_nodes(conn) == []
    assert leases.claim_all(conn, ["s1", "s2"], "b", 10) == {"s1": 2, "s2": 2}


def test_a_lease_lasts_more_than_nothing(conn: Conn) -> None:
    with pytest.raises(ValueError, match="more than 0"):
        leases.claim(conn, "s", "a", 0)
    with pytest.raises(ValueError, match="more than 0"):
        leases.heartbeat(conn, "a", "http://a", -1)


# ----------------------------------------------------------------------- the fence


def test_the_fence_passes_only_for_the_holder_at_its_epoch_with_a_live_lease(conn: Conn) -> None:
    leases.claim_all(conn, ["s1", "s2", "s3"], "a", 10)
    leases.claim(conn, "s4", "b", 10)
    expire(conn, node_id="b")
    leases.claim(conn, "s4", "a", 10)  # epoch 2
    with conn.transaction():
        leases.fence(conn, "s1", "a", 1)
        leases.fence_all(conn, "a", {"s2": 1, "s4": 2})
        leases.fence_all(conn, "a", {})
    conn.execute("UPDATE space_owners SET expires_at = clock_timestamp() WHERE space_id = 's3'")
    with pytest.raises(Fenced) as refused, conn.transaction():
        leases.fence_all(conn, "a", {"s1": 1, "s2": 2, "s3": 1, "s4": 1, "s5": 1})
    assert refused.value.spaces == {
        "s2": "is held by node a at epoch 1, not at 2",
        "s3": "has an expired lease at epoch 1",
        "s4": "is held by node a at epoch 2, not at 1",
        "s5": "was never claimed",
    }
    assert refused.value.node_id == "a"  # the space answers 503 (tests/engine/test_ownership.py)
    with pytest.raises(Fenced, match="space s1 is held by node a at epoch 1"):
        leases.fence(conn, "s1", "b", 1)


def test_a_node_whose_lease_expired_commits_nothing(conn: Conn) -> None:
    conn.execute("CREATE TABLE writes (space_id TEXT, n INT)")
    leases.claim(conn, "s", "a", 10)
    with conn.transaction(), conn.cursor() as cur:
        leases.fence(cur, "s", "a", 1)
        cur.execute("INSERT INTO writes VALUES ('s', 1)")
    expire(conn, node_id="a")
    for fence_first in (True, False):
        with pytest.raises(Fenced), conn.transaction(), conn.cursor() as cur:
            if fence_first:
                leases.fence(cur, "s", "a", 1)
            cur.execute("INSERT INTO writes VALUES ('s', 2)")
            leases.fence(cur, "s", "a", 1)
    assert leases.claim(conn, "s", "b", 10) == 2
    with pytest.raises(Fenced), conn.transaction():
        leases.fence(conn, "s", "a", 1)
        conn.execute("INSERT INTO writes VALUES ('s', 3)")
    assert conn.execute("SELECT n FROM writes").fetchall() == [(1,)]


def in_thread(work: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``work`` in a thread; the returned function waits for it and gives its
    result (or raises its exception)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> Any:
        thread.join(timeout=30)
        assert not thread.is_alive(), "the thread did not finish"
        if "error" in box:
            raise box["error"]
        return box["result"]

    return result


def waiting_on_a_lock(conn: Conn) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return row is not None and row[0] > 0


def test_a_claim_waits_for_the_fenced_write_and_the_new_owner_sees_it(db: str, conn: Conn) -> None:
    conn.execute("CREATE TABLE writes (space_id TEXT, n INT)")
    leases.claim(conn, "s", "a", 10)
    # The lease ends a moment after the fence: the write commits after its expiry, but
    # the claim cannot come between. (The one real wait of these tests.)
    conn.execute(
        "UPDATE space_owners SET expires_at = clock_timestamp() + interval '200 milliseconds'"
    )
    with connect(db) as writer, connect(db) as claimer, connect(db) as watcher:
        with writer.transaction():
            leases.fence(writer, "s", "a", 1)
            writer.execute("INSERT INTO writes VALUES ('s', 1)")
            claimed = in_thread(lambda: leases.claim(claimer, "s", "b", 10))
            until(
                lambda: waiting_on_a_lock(watcher),
                10,
                "the claim waits on the row lock",
                every=0.01,
            )
            until(
                lambda: (
                    watcher.execute(
                        "SELECT expires_at <= clock_timestamp() FROM space_owners"
                    ).fetchone()
                    == (True,)
                ),
                10,
                "the lease has expired",
                every=0.01,
            )
            assert waiting_on_a_lock(watcher)  # still: only the commit lets it go on
        assert claimed() == 2
        # The new owner loads after its claim: the write is there.
        assert claimer.execute("SELECT n FROM writes").fetchall() == [(1,)]
        with pytest.raises(Fenced), writer.transaction():
            leases.fence(writer, "s", "a", 1)


def test_a_claim_that_waited_on_a_live_lease_gets_nothing(db: str, conn: Conn) -> None:
    leases.claim(conn, "s", "a", 10)
    with connect(db) as writer, connect(db) as claimer:
        with writer.transaction():
            leases.fence(writer, "s", "a", 1)
            claimed = in_thread(lambda: leases.claim(claimer, "s", "b", 10))
            until(
                lambda: waiting_on_a_lock(conn), 10, "the claim waits on the row lock", every=0.01
            )
        assert claimed() is None


def test_a_claim_gives_up_on_a_write_held_open_and_claims_once_it_ends(db: str, conn: Conn) -> None:
    """A node stopped inside its write holds the lease row's lock: the claim waits half a
    tick at most (it must not hold up its node's renewals), claims nothing, and takes the
    space at a later try, once the server has ended that transaction."""
    leases.claim(conn, "s", "a", 10)
    expire(conn, node_id="a")
    with connect(db) as writer, connect(db) as claimer:
        with writer.transaction():
            with pytest.raises(Fenced):  # expired, but the row stays locked till the end
                leases.fence(writer, "s", "a", 1)
            started = time.monotonic()
            assert leases.claim(claimer, "s", "b", 0.3) is None
            assert time.monotonic() - started < 1
        assert leases.claim(claimer, "s", "b", 0.3) == 2


def test_a_renewal_waits_for_the_nodes_own_group_commit(db: str, conn: Conn) -> None:
    spaces = {f"s{n}": 1 for n in range(5)}
    leases.claim_all(conn, spaces, "a", 10)
    with connect(db) as writer, connect(db) as renewer:
        with writer.transaction():
            leases.fence_all(writer, "a", spaces)
            renewed = in_thread(lambda: leases.renew(renewer, "a", spaces, 10))
            until(
                lambda: waiting_on_a_lock(conn),
                10,
                "the renewal waits on the row locks",
                every=0.01,
            )
        assert renewed() == set(spaces)


def test_no_write_lands_after_the_next_claim_under_contention(db: str, conn: Conn) -> None:
    """Two nodes fight over one space on short leases for a second: each claims it
    when it can, then writes under its epoch until fenced. Every committed write comes
    before (in commit order, by a sequence drawn inside the write's transaction) the
    claim of every later epoch, and was made by that epoch's node."""
    conn.execute("CREATE SEQUENCE seq")
    conn.execute("CREATE TABLE writes (node TEXT, epoch BIGINT, seq BIGINT)")
    conn.execute("CREATE TABLE claims (node TEXT, epoch BIGINT, seq BIGINT)")
    stop = time.monotonic() + 1.0

    def node(name: str) -> tuple[int, int]:
        claims = writes = 0
        with connect(db) as c:
            while time.monotonic() < stop:
                epoch = leases.claim(c, "s", name, 0.02)
                if epoch is None:
                    continue
                c.execute("INSERT INTO claims VALUES (%s, %s, nextval('seq'))", (name, epoch))
                claims += 1
                while time.monotonic() < stop:
                    try:
                        with c.transaction():
                            leases.fence(c, "s", name, epoch)
                            c.execute(
                                "INSERT INTO writes VALUES (%s, %s, nextval('seq'))", (name, epoch)
                            )
                    except Fenced:
                        break
                    writes += 1
        return claims, writes

    results = [in_thread(functools.partial(node, name)) for name in ("a", "b")]
    done = [result() for result in results]
    assert all(claims > 1 and writes > 1 for claims, writes in done), done
    late = conn.execute(
        """
        SELECT w.node, w.epoch, w.seq, c.node, c.epoch, c.seq FROM writes w JOIN claims c
            ON c.epoch > w.epoch AND c.seq < w.seq
        """
    ).fetchall()
    assert late == []
    strangers = conn.execute(
        "SELECT count(*) FROM writes w JOIN claims c USING (epoch) WHERE c.node <> w.node"
    ).fetchone()
    assert strangers == (0,)
