"""A node's membership of the cluster: the service that keeps its heartbeat, claims the
spaces rendezvous hashing gives it, renews their leases, and hands over those it should
no longer own, reporting each space gained and lost to the node's `Placement` (the
runtime, which starts and stops the space actors).

Each tick (`Membership.run_once`; `Membership.run` ticks every third of the lease, on
trio's clock):

1. heartbeat, renew the leases held, read the live nodes and every space id: one trip
   to the database, in a worker thread;
2. report `lost` for each space whose renewal failed (its lease expired, or another
   node claimed it), at once: its actor must stop;
3. hand over the spaces held that another node should own now (a node joined, or the
   space is gone): report `lost` first, so the actor stops, *then* release the lease,
   so the new owner can claim it on its next tick without waiting for it to expire;
4. claim the spaces this node should own and does not hold, and report `gained` for
   each claimed, with its epoch: the actor loads the space from the store after the
   claim, so it sees every write of the previous owner.

When the database cannot be reached, the leases held may expire unseen: once a lease's
whole length has passed since the last renewal began (on trio's clock, which runs no
faster than the database's), every space held is reported lost. The fence
(emit/cluster/leases.py) refuses their writes from then on anyway; stopping their
actors keeps the node from answering from a memory that may no longer be the truth.

`Placement.gained` and `lost` are awaited inside the tick, so they must return promptly
(start or stop an actor, not wait for it to load): a slow one delays the renewals.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import psycopg
import trio
from psycopg.rows import tuple_row

from . import leases
from .hashing import owner

DEFAULT_LEASE = 10.0
"""Seconds an ownership lease (and a node's heartbeat) lasts unless renewed: how long a
dead node's spaces wait before another node claims them."""
TICKS_PER_LEASE = 3
"""Ticks in one lease: a lease survives two failed renewals in a row."""

log = logging.getLogger("emit.cluster")

T = TypeVar("T")
Connect = Callable[[], contextlib.AbstractContextManager[psycopg.Connection[Any]]]
"""Gives a connection for the length of a ``with`` (``pool.connection`` of a
psycopg-pool, or ``lambda: psycopg.connect(url)``), idle, to run a few short
transactions on. Give its connections a ``connect_timeout`` and a ``tcp_user_timeout``
(or keepalives): a call the tick gave up on still holds the membership's one thread
until it returns."""


class Placement(Protocol):
    """What the node does with the spaces it gains and loses (the runtime: start and
    stop their actors). Both must return promptly."""

    async def gained(self, space_id: str, epoch: int) -> None:
        """The node holds the space from now on, at ``epoch``: every write of it fences
        with that epoch. Load it from the store now (after the claim)."""

    async def lost(self, space_id: str) -> None:
        """The node no longer holds the space, or can no longer know it does: stop its
        actor at once; its writes would be fenced off."""


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    node_id: str
    """The node's name in the cluster: stable across restarts keeps its spaces where
    they were (the hash is of this id)."""
    url: str
    """The node's internal URL, where the other nodes forward requests for its spaces."""
    lease_seconds: float = DEFAULT_LEASE

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("a node needs an id")
        if not self.url:
            raise ValueError("a node needs a URL the other nodes can reach it at")
        if not (math.isfinite(self.lease_seconds) and self.lease_seconds > 0):
            raise ValueError(f"a lease must last more than 0 seconds, not {self.lease_seconds}")

    @property
    def every(self) -> float:
        """Seconds between ticks."""
        return self.lease_seconds / TICKS_PER_LEASE


class Observed(NamedTuple):
    """What one tick read: the spaces whose lease it renewed, the live nodes, and the
    spaces this node should own among them."""

    renewed: set[str]
    live: tuple[str, ...]
    mine: set[str]


@dataclass(frozen=True, slots=True)
class MembershipStatistics:
    held: Mapping[str, int]
    """Each space held, with its epoch."""
    live_nodes: tuple[str, ...]
    """The live nodes the last successful tick saw."""
    failing_since: float | None
    """When (trio time) the ticks began to fail to reach the database; None while they
    reach it."""


class Membership:
    """One node's membership: `run` it in a nursery (``await nursery.start(m.run)``
    returns after the first tick), and `leave` on a graceful stop."""

    def __init__(self, config: MembershipConfig, connect: Connect, placement: Placement) -> None:
        self.config = config
        self._connect = connect
        self._placement = placement
        self._held: dict[str, int] = {}
        self._live: tuple[str, ...] = ()
        self._valid_until = -math.inf
        """Trio time until which every lease held is surely live: when the last
        successful renewal began, plus the lease."""
        self._tick_started = -math.inf
        self._failing_since: float | None = None
        self._registered = False  # a heartbeat of this process went through
        self._left = trio.Event()
        self._lock = trio.Lock()  # one tick (or the leaving) at a time
        # One call to the database at a time: a call given up on (its thread abandoned)
        # still holds it, so a hung database holds one thread, not one more each tick.
        self._limiter = trio.CapacityLimiter(1)

    def statistics(self) -> MembershipStatistics:
        return MembershipStatistics(dict(self._held), self._live, self._failing_since)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick every third of the lease until the node leaves; started once the first
        tick has claimed what it could."""
        await self.run_once()
        task_status.started()
        while not self._left.is_set():
            wake = self._tick_started + self.config.every
            if self._held:
                # Be there when the leases may run out, if the database stays away.
                wake = min(wake, self._valid_until)
            with trio.move_on_at(wake):
                await self._left.wait()
            await self.run_once()

    async def run_once(self) -> None:
        """One tick (see the module's docstring)."""
        async with self._lock:
            if not self._left.is_set():
                await self._tick()

    async def leave(self) -> None:
        """Leave the cluster: report every space lost, release their leases and delete
        the node's row, so the other nodes claim the spaces at once. Ticks stop."""
        async with self._lock:
            if self._left.is_set():
                return
            self._left.set()
            held, self._held = self._held, {}
            await self._lose(held, "the node is leaving")
            done = await self._db(
                self._leave, deadline=trio.current_time() + self.config.lease_seconds
            )
            if done is None:
                log.warning("node %s left without releasing its leases", self.config.node_id)

    # ------------------------------------------------------------------- the tick

    async def _tick(self) -> None:
        config = self.config
        started = self._tick_started = trio.current_time()
        held = dict(self._held)
        # Past the leases' end, the renewal is of no use: the spaces are lost anyway.
        deadline = self._valid_until if held else started + config.lease_seconds
        observed = await self._db(self._observe, held, not self._registered, deadline=deadline)
        if observed is None:
            if self._failing_since is None:
                self._failing_since = started
            if self._held and trio.current_time() >= self._valid_until:
                held, self._held = self._held, {}
                await self._lose(held, "the database was out of reach for a whole lease")
            return
        self._failing_since = None
        self._registered = True
        self._valid_until = started + config.lease_seconds
        self._live = observed.live

        expired = {space: held[space] for space in held if space not in observed.renewed}
        for space in expired:
            del self._held[space]
        await self._lose(expired, "its lease was lost")

        mine = observed.mine
        moving = {space: epoch for space, epoch in self._held.items() if space not in mine}
        for space in moving:
            del self._held[space]
        await self._lose(moving, "another node owns it now")
        if moving:
            # Only now that its actor has stopped: the next owner may claim it.
            await self._db(leases.release_all, config.node_id, moving, deadline=self._soon())

        wanted = sorted(mine - self._held.keys())
        if wanted:
            claimed = await self._db(self._claim, wanted, deadline=self._soon()) or {}
            for space in sorted(claimed):
                self._held[space] = claimed[space]
                log.info("node %s owns space %s (epoch %d)", config.node_id, space, claimed[space])
                await self._placement.gained(space, claimed[space])

    async def _lose(self, spaces: Iterable[str], why: str) -> None:
        for space in sorted(spaces):
            log.info("node %s lost space %s: %s", self.config.node_id, space, why)
            await self._placement.lost(space)

    def _soon(self) -> float:
        """The deadline of a claim or a release: one tick."""
        return trio.current_time() + self.config.every

    async def _db(self, work: Callable[..., T], *args: Any, deadline: float) -> T | None:
        """``work(connection, *args)`` in a worker thread; None when the database fails
        or does not answer by ``deadline`` (the thread is then abandoned: what it does
        later is safe, as every lease change is judged by the database)."""
        config = self.config

        def run() -> T:
            with self._connect() as conn:
                return work(conn, *args)

        with trio.move_on_at(deadline):
            try:
                return await trio.to_thread.run_sync(
                    run, abandon_on_cancel=True, limiter=self._limiter
                )
            except psycopg.Error as error:
                log.warning("node %s could not reach the database: %s", config.node_id, error)
                return None
        log.warning("node %s: the database did not answer in time", config.node_id)
        return None

    # ------------------------------------------------- in the worker thread

    def _observe(
        self, conn: psycopg.Connection[Any], held: Mapping[str, int], starting: bool
    ) -> Observed:
        config = self.config
        leases.heartbeat(conn, config.node_id, config.url, config.lease_seconds, starting=starting)
        renewed = leases.renew(conn, config.node_id, held, config.lease_seconds)
        live = tuple(sorted({config.node_id, *(node.id for node in leases.live_nodes(conn))}))
        # Here, off the event loop: hashing 100,000 spaces takes a quarter of a second.
        mine = {space for space in all_spaces(conn) if owner(space, live) == config.node_id}
        return Observed(renewed, live, mine)

    def _claim(self, conn: psycopg.Connection[Any], spaces: list[str]) -> dict[str, int]:
        return leases.claim_all(conn, spaces, self.config.node_id, self.config.lease_seconds)

    def _leave(self, conn: psycopg.Connection[Any]) -> set[str]:
        return leases.leave(conn, self.config.node_id)


def all_spaces(conn: psycopg.Connection[Any]) -> list[str]:
    """Every space's id: the spaces the nodes share."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT id FROM spaces")
        return [space for (space,) in cur.fetchall()]
