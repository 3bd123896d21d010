"""A node of a cluster: the runtime on a PostgreSQL store other nodes share, joined to
them. `joined` runs the node's `Membership` (heartbeats, and this node's share of the
spaces, claimed and handed over: the runtime starts and stops their actors), and keeps
the table of owners that `OwnersRouter` forwards requests by.

    async with emit.open_runtime(url, node="node-a") as rt:
        router = OwnersRouter(rt, "node-a")
        async with joined(rt, NodeConfig("node-a", "http://10.0.0.1:8787"), router):
            ...  # serve HTTP with the router (emit.http.server.serve)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import psycopg_pool
import trio

from ..errors import MOVING_RETRY_AFTER
from . import leases
from .forwarding import HOP_HEADER, LOCAL, TICK_PATH, Moving, Placement, Remote
from .membership import DEFAULT_LEASE, Membership, MembershipConfig, all_spaces

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("emit.cluster")

STALE_GAP = 0.1
"""Seconds at least between two reads of the owners table."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    id: str
    """The node's name: keep it stable across restarts, and a restarted node gets back
    the spaces it had (the hash is of this id)."""
    url: str
    """Where the other nodes reach this one (``http://host:port``), to forward to it."""
    lease: float = DEFAULT_LEASE
    """Seconds an ownership lease lasts unless renewed: how long a dead node's spaces
    wait before another node claims them."""
    secret: str | None = None
    """The cluster secret: with it, a node that makes a space asks the others to claim
    their share at once (`forwarding.TICK_PATH`), rather than at their next tick."""


class OwnersRouter:
    """Where each space lives, as this node last read it (`forwarding.Router`): a space
    this node owns is `Local`; another live node's is `Remote`; a space with no live
    owner (its node died, its lease has not run out) is `Moving`; a space nobody knows
    is `Local`, to be answered 404."""

    def __init__(self, runtime: Runtime, node_id: str) -> None:
        self.runtime = runtime
        self.node_id = node_id
        self.owners: dict[str, leases.Owner] = {}
        self.spaces: frozenset[str] = frozenset()
        self.nodes: dict[str, str] = {}
        """The live nodes: id → internal URL."""
        self.ticker: Callable[[], Awaitable[None]] | None = None
        self.stale = trio.Event()
        """Set when a request found a known space with no owner: the table may be a
        moment behind a claim (another node's tick), so it is read again at once."""

    async def tick(self) -> None:
        """Another node asks: run the membership's tick now (`forwarding.TICK_PATH`)."""
        if self.ticker is not None:
            await self.ticker()

    def route(self, space_id: str) -> Placement:
        if self.runtime.owns(space_id):
            return LOCAL
        owner = self.owners.get(space_id)
        if owner is not None and owner.node_id != self.node_id:
            return Remote(owner.url)
        if owner is not None or space_id in self.spaces:
            self.stale.set()
            return Moving(MOVING_RETRY_AFTER)
        return LOCAL

    def update(
        self,
        owners: Mapping[str, leases.Owner],
        spaces: Iterable[str],
        nodes: Mapping[str, str] | None = None,
    ) -> None:
        self.owners = dict(owners)
        self.spaces = frozenset(spaces)
        if nodes is not None:
            self.nodes = dict(nodes)


def _pool(url: str, lease: float) -> psycopg_pool.ConnectionPool[psycopg.Connection[Any]]:
    """Connections for the membership and the owners table, apart from the store's: a
    hung connection must not hold up a lease's renewal past the lease."""
    return psycopg_pool.ConnectionPool(
        url,
        min_size=1,
        max_size=2,
        open=False,
        timeout=lease,
        kwargs={
            "connect_timeout": max(1, int(lease / 2)),
            "keepalives": 1,
            "keepalives_idle": max(1, int(lease / 3)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": int(lease * 1000),
        },
    )


@asynccontextmanager
async def joined(
    runtime: Runtime, config: NodeConfig, router: OwnersRouter | None = None
) -> AsyncIterator[Membership]:
    """Join the cluster for the block: the runtime (opened with ``node=config.id`` on
    the shared store) is told of each space this node gains and loses, and ``router``
    learns the owners every tick. On leaving, the node stops its spaces and releases
    their leases, so the other nodes claim them at once."""
    url = getattr(runtime.store, "url", None)
    if runtime.owned is None or not isinstance(url, str):
        raise RuntimeError("joined() needs a runtime opened on a PostgreSQL URL with node=")
    pool = _pool(url, config.lease)
    await trio.to_thread.run_sync(pool.open)
    membership = Membership(
        MembershipConfig(config.id, config.url, config.lease), pool.connection, runtime
    )

    def read() -> tuple[dict[str, leases.Owner], list[str], dict[str, str]]:
        with pool.connection() as conn:
            nodes = {node.id: node.url for node in leases.live_nodes(conn)}
            return leases.owners(conn), all_spaces(conn), nodes

    async def refresh() -> None:
        if router is None:
            return
        try:
            owners, spaces, nodes = await trio.to_thread.run_sync(read, abandon_on_cancel=True)
        except psycopg.Error as exc:
            log.warning("node %s could not read the spaces' owners: %s", config.id, exc)
            return
        router.update(owners, spaces, nodes)

    async def tick() -> None:
        await membership.run_once()
        await refresh()

    async def keep_routing(router: OwnersRouter) -> None:
        while True:
            router.stale = trio.Event()  # before the read: an ask during it is kept
            await refresh()
            with trio.move_on_after(config.lease / 3):
                await router.stale.wait()
            await trio.sleep(STALE_GAP)  # at most one read per gap, however many ask

    async def nudge_others() -> None:
        others = [] if router is None else [u for n, u in router.nodes.items() if n != config.id]
        if others and config.secret:
            async with (
                httpx.AsyncClient(timeout=config.lease / 2, trust_env=False) as http,
                trio.open_nursery() as nursery,
            ):
                for other in others:
                    nursery.start_soon(_nudge, http, other, config.secret)

    async def created(space_id: str) -> None:
        # Placed at once: this node ticks (it claims the space if the hash gives it
        # here), and asks the others to (its owner claims it), rather than leave the
        # space without an owner until their next tick.
        await tick()  # its read of the live nodes is whom the nudge goes to
        await nudge_others()
        await refresh()

    if router is not None:
        router.ticker = tick
    runtime.space_created = created
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(membership.run)
            if router is not None:
                nursery.start_soon(keep_routing, router)
            try:
                yield membership
            finally:
                with trio.CancelScope(shield=True):
                    runtime.space_created = None
                    await membership.leave()
                    # Its spaces are free now: the others claim them at once, not at
                    # their next tick.
                    with trio.move_on_after(config.lease / 2):
                        await nudge_others()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(pool.close)


async def _nudge(http: httpx.AsyncClient, url: str, secret: str) -> None:
    """Ask the node at ``url`` to tick now; best effort (its own tick comes anyway)."""
    try:
        await http.post(url.rstrip("/") + TICK_PATH, headers={HOP_HEADER: secret})
    except httpx.HTTPError as exc:
        log.info("node at %s was not reached to ask it to tick: %s", url, exc)
