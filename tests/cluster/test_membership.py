"""Nodes sharing the spaces (emit/cluster/membership.py) on a real PostgreSQL: three
`Membership`s ticked by hand, each reporting to a recording placement."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest
import trio
import trio.testing

from emit.cluster import leases
from emit.cluster.hashing import owner, ranking
from emit.cluster.membership import Membership, MembershipConfig
from emit.store.base import Fenced
from tests.cluster.conftest import add_spaces, connect, expire

Conn = psycopg.Connection[Any]
SPACES = [f"space-{n:03}" for n in range(300)]
NODES = ("a", "b", "c")
LIMIT = 30  # seconds: every test is over long before


class Log:
    """Every gain and loss of every node, in order; a loss with the lease as the
    database had it at that moment."""

    def __init__(self, url: str | None = None) -> None:
        self.events: list[tuple[str, str, str, object]] = []
        self.watcher = None if url is None else connect(url)

    def index(self, node: str, what: str, space: str) -> int:
        return next(
            i for i, (n, w, s, _) in enumerate(self.events) if (n, w, s) == (node, what, space)
        )

    def held_when_lost(self, node: str, space: str) -> object:
        return self.events[self.index(node, "lost", space)][3]

    def stopped_in_time(self) -> bool:
        """Whether every node stopped each space it lost before any other node could
        hold it: no live lease but its own when it was told."""
        return all(
            lease is None or (isinstance(lease, leases.Owner) and lease.node_id == node)
            for node, what, _, lease in self.events
            if what == "lost"
        )

    async def lease(self, space: str) -> leases.Owner | None:
        watcher = self.watcher
        if watcher is None:
            return None
        return await trio.to_thread.run_sync(lambda: leases.owners(watcher, [space]).get(space))


class Recorder:
    """A node's placement: the spaces it runs, as the runtime would."""

    def __init__(self, node: str, log: Log) -> None:
        self.node = node
        self.log = log
        self.running: dict[str, int] = {}

    async def gained(self, space_id: str, epoch: int) -> None:
        assert space_id not in self.running
        self.running[space_id] = epoch
        self.log.events.append((self.node, "gained", space_id, epoch))

    async def lost(self, space_id: str) -> None:
        del self.running[space_id]
        lease = await self.log.lease(space_id)
        self.log.events.append((self.node, "lost", space_id, lease))


class Cluster:
    def __init__(self, url: str) -> None:
        self.url = url
        self.log = Log(url)
        self.placements = {node: Recorder(node, self.log) for node in NODES}
        self.members = {
            node: Membership(
                MembershipConfig(node, f"http://{node}.internal:8000"),
                lambda: connect(url),
                self.placements[node],
            )
            for node in NODES
        }

    async def tick(self, *nodes: str) -> None:
        for node in nodes:
            await self.members[node].run_once()

    async def settle(self, *nodes: str) -> None:
        """Tick the nodes in turn until a round changes nothing."""
        for _ in range(4):
            before = len(self.log.events)
            await self.tick(*nodes)
            if len(self.log.events) == before:
                return
        raise AssertionError("the nodes did not settle")

    def close(self) -> None:
        if self.log.watcher is not None:
            self.log.watcher.close()

    def owners(self) -> dict[str, tuple[str, int]]:
        with connect(self.url) as conn:
            return {s: (o.node_id, o.epoch) for s, o in leases.owners(conn).items()}

    def running(self) -> dict[str, tuple[str, int]]:
        """Each space the placements run, with its node and epoch; a space run twice
        fails."""
        seen: dict[str, tuple[str, int]] = {}
        for node, placement in self.placements.items():
            for space, epoch in placement.running.items():
                assert space not in seen, f"{space} runs on {seen[space][0]} and {node}"
                seen[space] = (node, epoch)
        return seen


@pytest.fixture
def url(db: str) -> str:
    with connect(db) as conn:
        add_spaces(conn, SPACES)
    return db


@pytest.fixture
def cluster(url: str) -> Iterator[Cluster]:
    cluster = Cluster(url)
    yield cluster
    cluster.close()


def shares(owners: dict[str, tuple[str, int]]) -> dict[str, int]:
    counts = dict.fromkeys(NODES, 0)
    for node, _ in owners.values():
        counts[node] += 1
    return counts


async def test_every_space_is_owned_exactly_once_and_the_nodes_share_them(cluster: Cluster) -> None:
    with trio.fail_after(LIMIT):
        await cluster.settle(*NODES)
    running = cluster.running()
    assert cluster.owners() == running
    assert cluster.log.stopped_in_time()
    assert {s: n for s, (n, _) in running.items()} == {s: owner(s, NODES) for s in SPACES}
    assert all(count >= 80 for count in shares(running).values()), shares(running)
    # The first node up claimed everything, then handed two thirds over: released
    # before they were claimed, so each moved space is at epoch 2.
    for space, (node, epoch) in running.items():
        assert epoch == (1 if node == "a" else 2)
        if node != "a":
            assert cluster.log.index("a", "lost", space) < cluster.log.index(node, "gained", space)
    assert cluster.members["b"].statistics().live_nodes == NODES


async def test_a_node_leaving_hands_its_spaces_to_the_next_in_the_ranking(cluster: Cluster) -> None:
    with trio.fail_after(LIMIT):
        await cluster.settle(*NODES)
        before = cluster.owners()
        await cluster.members["c"].leave()
        assert cluster.placements["c"].running == {}
        assert cluster.members["c"].statistics().held == {}
        await cluster.tick("c")  # a node that left ticks no more
        assert "c" not in {n for n, _ in cluster.owners().values()}
        await cluster.settle("a", "b")
    after = cluster.owners()
    assert after == cluster.running()
    assert cluster.log.stopped_in_time()
    assert set(after) == set(SPACES)
    for space, (node, epoch) in before.items():
        if node == "c":
            assert after[space] == (ranking(space, NODES)[1], epoch + 1)
        else:
            assert after[space] == (node, epoch)


async def test_a_node_joining_takes_about_a_third_each_released_before_claimed(
    cluster: Cluster,
) -> None:
    with trio.fail_after(LIMIT):
        await cluster.settle("a", "b")
        before = cluster.owners()
        assert shares(before)["c"] == 0
        await cluster.tick("c")  # registers; the spaces it should own are still held
        assert cluster.placements["c"].running == {}
        await cluster.tick("a", "b")  # they see it, stop those spaces and release them
        moving = {s for s in SPACES if owner(s, NODES) == "c"}
        assert set(cluster.owners()) == set(SPACES) - moving
        for space in moving:
            assert space not in cluster.running()
        await cluster.tick("c")
        await cluster.settle(*NODES)
    after = cluster.owners()
    assert after == cluster.running()
    assert cluster.log.stopped_in_time()
    moved = {s for s in SPACES if after[s][0] != before[s][0]}
    assert moved == moving
    assert 70 <= len(moved) <= 130
    for space in moved:
        old, epoch = before[space]
        assert after[space] == ("c", epoch + 1)
        # Its actor stopped while its lease was still live, then the lease was released.
        assert cluster.log.held_when_lost(old, space) == (old, f"http://{old}.internal:8000", epoch)
        assert cluster.log.index(old, "lost", space) < cluster.log.index("c", "gained", space)


async def test_a_node_whose_lease_expired_is_fenced_off_then_gets_its_spaces_back(
    cluster: Cluster,
) -> None:
    """As a node paused past its lease (SIGSTOP) would: the others take its spaces, its
    late writes are refused, and when it comes back it stops them at once."""
    with connect(cluster.url) as conn:
        conn.execute("CREATE TABLE writes (space_id TEXT, n INT)")
        with trio.fail_after(LIMIT):
            await cluster.settle(*NODES)
            before = cluster.owners()
            held = {s: e for s, (n, e) in before.items() if n == "c"}
            expire(conn, node_id="c")
            await cluster.settle("a", "b")
            during = cluster.owners()
            assert set(during) == set(SPACES)
            for space, epoch in held.items():
                assert during[space] == (ranking(space, NODES)[1], epoch + 1)

            # Its late writes, at the epochs it held, commit nothing.
            space = min(held)
            with pytest.raises(Fenced), conn.transaction():
                leases.fence(conn, space, "c", held[space])
                conn.execute("INSERT INTO writes VALUES (%s, 1)", (space,))
            with pytest.raises(Fenced), conn.transaction():
                conn.execute("INSERT INTO writes VALUES (%s, 2)", (space,))
                leases.fence_all(conn, "c", held)
            assert conn.execute("SELECT count(*) FROM writes").fetchone() == (0,)

            # It comes back: its renewals fail, so it stops those spaces at once.
            assert cluster.placements["c"].running == held
            await cluster.tick("c")
            assert cluster.placements["c"].running == {}
            await cluster.settle(*NODES)
    after = cluster.owners()
    assert after == cluster.running()
    for space, epoch in held.items():
        assert after[space] == ("c", epoch + 2)


class Switch:
    """A connection factory the test can cut off (each connection fails) or hang (each
    waits until let go)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down = False
        self.hanging = threading.Event()
        self.go = threading.Event()
        self.go.set()

    @contextlib.contextmanager
    def connect(self) -> Iterator[Conn]:
        if not self.go.is_set():
            self.hanging.set()
            self.go.wait(timeout=LIMIT)
        if self.down:
            raise psycopg.OperationalError("the database is out of reach")
        with connect(self.url) as conn:
            yield conn


def one_node(url: str, switch: Switch) -> tuple[Membership, Recorder]:
    placement = Recorder("a", Log())
    config = MembershipConfig("a", "http://a.internal:8000", lease_seconds=10)
    return Membership(config, switch.connect, placement), placement


async def test_out_of_reach_of_the_database_for_a_lease_every_space_is_lost(
    url: str, mock_clock: trio.testing.MockClock
) -> None:
    switch = Switch(url)
    membership, placement = one_node(url, switch)
    with trio.fail_after(LIMIT):
        await membership.run_once()
        assert set(placement.running) == set(SPACES)
        switch.down = True
        mock_clock.jump(5)
        await membership.run_once()
        assert set(placement.running) == set(SPACES)  # the leases may still be live
        assert membership.statistics().failing_since is not None
        mock_clock.jump(5)
        await membership.run_once()
        assert placement.running == {}
        assert membership.statistics().held == {}
        # Back in reach: it claims them again once the leases it lost have expired.
        switch.down = False
        with connect(url) as conn:
            expire(conn, node_id="a")
        await membership.run_once()
    assert placement.running == dict.fromkeys(SPACES, 2)
    assert membership.statistics().failing_since is None


async def test_a_database_that_hangs_loses_every_space_when_the_lease_runs_out(
    url: str, mock_clock: trio.testing.MockClock
) -> None:
    switch = Switch(url)
    membership, placement = one_node(url, switch)
    with trio.fail_after(LIMIT):
        await membership.run_once()
        switch.go.clear()
        switch.down = True  # once let go
        async with trio.open_nursery() as nursery:
            nursery.start_soon(membership.run_once)
            await trio.to_thread.run_sync(switch.hanging.wait, LIMIT)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(9.5)
            await trio.testing.wait_all_tasks_blocked()
            assert set(placement.running) == set(SPACES)
            mock_clock.jump(0.5)
        assert placement.running == {}
        switch.go.set()


async def test_run_ticks_until_the_node_leaves(url: str) -> None:
    switch = Switch(url)
    membership, placement = one_node(url, switch)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            await nursery.start(membership.run)
            assert set(placement.running) == set(SPACES)  # started after the first tick
            await membership.leave()
    assert placement.running == {}
    with connect(url) as conn:
        assert leases.live_nodes(conn) == []
        assert leases.owners(conn) == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node_id": ""}, "needs an id"),
        ({"url": ""}, "needs a URL"),
        ({"lease_seconds": 0}, "more than 0"),
        ({"lease_seconds": float("nan")}, "more than 0"),
    ],
)
def test_a_config_is_checked(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"node_id": "a", "url": "http://a", **change}
    with pytest.raises(ValueError, match=message):
        MembershipConfig(**fields)


def test_a_tick_is_a_third_of_the_lease() -> None:
    assert MembershipConfig("a", "http://a", lease_seconds=9).every == 3


async def test_a_pool_gives_the_connections(url: str) -> None:
    """As the node runs it: psycopg-pool's connections, idle and not in autocommit."""
    with psycopg_pool.ConnectionPool(url, min_size=1, max_size=2, open=True) as pool:
        placement = Recorder("a", Log())
        membership = Membership(MembershipConfig("a", "http://a"), pool.connection, placement)
        with trio.fail_after(LIMIT):
            await membership.run_once()
            await membership.run_once()
            assert set(placement.running) == set(SPACES)
            await membership.leave()
        assert placement.running == {}
        with pool.connection() as conn:
            assert leases.owners(conn) == {}
