"""The nodes' heartbeats and the spaces' ownership leases, as small synchronous
operations on a psycopg connection (run them in a worker thread: psycopg's async API is
asyncio's, and emit runs on trio). Each is one short transaction of its own, on an idle
connection, but `fence` and `fence_all`, which run inside the caller's transaction.

A lease is a row of ``space_owners`` (emit/cluster/schema.py): the node that holds the
space, its epoch, and when the lease expires. Every time is the database's
(``clock_timestamp()``), so the nodes' clocks never matter.

- `claim` takes a space whose lease has expired (or that never had one), atomically:
  one ``INSERT … ON CONFLICT DO UPDATE … WHERE expired``. Each claim's epoch is one more
  than the last, a node re-claiming its own expired lease included: a lease, once
  expired, is gone, and whatever was written under it is for the next epoch to load.
- `renew` moves a live lease's expiry on, at the epoch it was claimed with, and never
  revives an expired one. `release` ends a lease at once (its expiry becomes
  ``-infinity``; the row stays, so the epoch keeps going up).

The fence
---------
Every write transaction of a space calls `fence` (or `fence_all` for a group commit of
many spaces) inside the transaction, before it commits. The fence reads the space's
lease row ``FOR SHARE`` and raises `Fenced` unless this node holds the space at the
epoch the write was made under, with an unexpired lease. That makes a late write
impossible:

- The row lock is held until the write's transaction ends. A claim by another node
  updates the row, so its ``ON CONFLICT DO UPDATE`` waits for that lock: it cannot land
  in the middle of the write. Once the write commits, the claim goes on, sees the row
  and (the lease having expired) claims it.
- The new owner loads the space only after its claim has committed, so what it loads
  includes every write that committed before the claim: none is lost.
- Any write that fences after the claim finds another node or a newer epoch in the row
  and fails, and its transaction commits nothing.

So every committed write of a space was made by the node that held it at that epoch, and
committed before the next epoch's claim. A fence that passes close to the lease's end is
still safe: the write may commit a moment after the lease has expired, but no claim can
come between.

Why ``FOR SHARE`` and not ``FOR KEY SHARE``: a claim is an ``UPDATE`` that changes no
key column, so it takes ``FOR NO KEY UPDATE``, which ``FOR KEY SHARE`` does not block.
``FOR SHARE`` blocks every update of the row, whichever statement makes it. It also makes
this node's own `renew` wait for its writer's commit (a few milliseconds): to keep them
from deadlocking, every statement here that locks several lease rows locks them in the
order of their space ids.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import tuple_row

from ..store.base import Fenced


@dataclass(frozen=True, slots=True)
class Node:
    """A node's heartbeat row."""

    id: str
    url: str
    """Its internal URL, for the requests other nodes forward to it."""
    started_at: datetime.datetime
    heartbeat_at: datetime.datetime
    expires_at: datetime.datetime


class Owner(NamedTuple):
    """Who holds a space's live lease, and where to reach it."""

    node_id: str
    url: str
    epoch: int


CLAIM_LOCK_WAIT = 6
"""A claim waits for a lease row another transaction has locked at most the lease
divided by this (half a membership tick), and at least `CLAIM_LOCK_WAIT_MIN` seconds."""
CLAIM_LOCK_WAIT_MIN = 0.05


def _lease(seconds: float) -> float:
    if not seconds > 0:
        raise ValueError(f"a lease must last more than 0 seconds, not {seconds!r}")
    return seconds


# ----------------------------------------------------------------------- the nodes


def heartbeat(
    conn: psycopg.Connection[Any],
    node_id: str,
    url: str,
    lease_seconds: float,
    *,
    starting: bool = False,
) -> None:
    """Register the node, or keep it live for another ``lease_seconds``. The first
    heartbeat of a process is ``starting``: the node's start time is now (a node that
    restarts under the same id keeps its row)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO nodes (id, url, started_at, heartbeat_at, expires_at)
            VALUES (%(id)s, %(url)s, clock_timestamp(), clock_timestamp(),
                    clock_timestamp() + make_interval(secs => %(lease)s))
            ON CONFLICT (id) DO UPDATE
               SET url = excluded.url, heartbeat_at = excluded.heartbeat_at,
                   expires_at = excluded.expires_at,
                   started_at = CASE WHEN %(starting)s THEN excluded.started_at
                                     ELSE nodes.started_at END
            """,
            {"id": node_id, "url": url, "lease": _lease(lease_seconds), "starting": starting},
        )


def live_nodes(conn: psycopg.Connection[Any]) -> list[Node]:
    """The nodes whose heartbeat has not expired, by id."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """
            SELECT id, url, started_at, heartbeat_at, expires_at FROM nodes
             WHERE expires_at > clock_timestamp() ORDER BY id
            """
        )
        return [Node(*row) for row in cur.fetchall()]


def leave(conn: psycopg.Connection[Any], node_id: str) -> set[str]:
    """The node leaves: release every lease it still holds and delete its row, in one
    transaction. Returns the spaces released."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """
            WITH mine AS (
                SELECT space_id FROM space_owners
                 WHERE node_id = %(node)s AND expires_at > clock_timestamp()
                 ORDER BY space_id FOR NO KEY UPDATE
            )
            UPDATE space_owners SET expires_at = '-infinity'
             WHERE space_id IN (SELECT space_id FROM mine) RETURNING space_id
            """,
            {"node": node_id},
        )
        released = {space for (space,) in cur.fetchall()}
        cur.execute("DELETE FROM nodes WHERE id = %s", (node_id,))
        return released


# ----------------------------------------------------------------------- the leases


def claim(
    conn: psycopg.Connection[Any], space_id: str, node_id: str, lease_seconds: float
) -> int | None:
    """Claim the space for the node: its new epoch, or None while a live lease holds it
    (another node's, or this node's own: a live lease is renewed, not claimed), or a
    write stopped inside its transaction still locks it."""
    return claim_all(conn, [space_id], node_id, lease_seconds).get(space_id)


def claim_all(
    conn: psycopg.Connection[Any], space_ids: Iterable[str], node_id: str, lease_seconds: float
) -> dict[str, int]:
    """`claim` for many spaces in one statement: the epoch of each space claimed."""
    spaces = sorted(set(space_ids))
    if not spaces:
        return {}
    # A fenced write holds its row's lock until it commits, a few milliseconds; one held
    # longer is a node stopped inside its write (until the server ends its transaction:
    # the store's `IDLE_IN_WRITE`). Waiting for it would hold up the caller's renewals:
    # the claim gives up (claiming nothing), to be tried again at the next tick.
    wait = max(CLAIM_LOCK_WAIT_MIN, _lease(lease_seconds) / CLAIM_LOCK_WAIT)
    try:
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(wait * 1000)}ms",))
            # The expiry is read again after the row lock is taken (a fenced write may
            # hold it): the lease is judged, and the new one starts, when the claim runs.
            cur.execute(
                """
                INSERT INTO space_owners AS o (space_id, node_id, epoch, claimed_at, expires_at)
                SELECT s, %(node)s, 1, clock_timestamp(),
                       clock_timestamp() + make_interval(secs => %(lease)s)
                  FROM unnest(%(spaces)s::text[]) AS s ORDER BY s
                ON CONFLICT (space_id) DO UPDATE
                   SET node_id = excluded.node_id, epoch = o.epoch + 1,
                       claimed_at = clock_timestamp(),
                       expires_at = clock_timestamp() + make_interval(secs => %(lease)s)
                 WHERE o.expires_at <= clock_timestamp()
                RETURNING o.space_id, o.epoch
                """,
                {"node": node_id, "lease": lease_seconds, "spaces": spaces},
            )
            return {space: epoch for space, epoch in cur.fetchall()}
    except psycopg.errors.LockNotAvailable:
        return {}


def renew(
    conn: psycopg.Connection[Any], node_id: str, held: Mapping[str, int], lease_seconds: float
) -> set[str]:
    """Move on the live leases the node holds (``held``: each space's epoch), in one
    statement. Returns the spaces still held at those epochs; any other is lost (its
    lease expired, or another node claimed it)."""
    if not held:
        return set()
    spaces = sorted(held)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """
            WITH held AS (
                SELECT o.space_id FROM space_owners o
                  JOIN unnest(%(spaces)s::text[], %(epochs)s::bigint[]) AS h (space_id, epoch)
                    ON o.space_id = h.space_id AND o.epoch = h.epoch
                 WHERE o.node_id = %(node)s AND o.expires_at > clock_timestamp()
                 ORDER BY o.space_id FOR NO KEY UPDATE OF o
            )
            UPDATE space_owners
               SET expires_at = clock_timestamp() + make_interval(secs => %(lease)s)
             WHERE space_id IN (SELECT space_id FROM held)
            RETURNING space_id
            """,
            {
                "node": node_id,
                "lease": _lease(lease_seconds),
                "spaces": spaces,
                "epochs": [held[space] for space in spaces],
            },
        )
        return {space for (space,) in cur.fetchall()}


def release(conn: psycopg.Connection[Any], space_id: str, node_id: str, epoch: int) -> bool:
    """End the node's lease of the space at once, if it is still the node's at that
    epoch, so the next owner can claim it without waiting for it to expire. Whether it
    was."""
    return bool(release_all(conn, node_id, {space_id: epoch}))


def release_all(conn: psycopg.Connection[Any], node_id: str, held: Mapping[str, int]) -> set[str]:
    """`release` for many spaces in one statement: the spaces released."""
    if not held:
        return set()
    spaces = sorted(held)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """
            WITH held AS (
                SELECT o.space_id FROM space_owners o
                  JOIN unnest(%(spaces)s::text[], %(epochs)s::bigint[]) AS h (space_id, epoch)
                    ON o.space_id = h.space_id AND o.epoch = h.epoch
                 WHERE o.node_id = %(node)s
                 ORDER BY o.space_id FOR NO KEY UPDATE OF o
            )
            UPDATE space_owners SET expires_at = '-infinity'
             WHERE space_id IN (SELECT space_id FROM held) RETURNING space_id
            """,
            {"node": node_id, "spaces": spaces, "epochs": [held[space] for space in spaces]},
        )
        return {space for (space,) in cur.fetchall()}


def owners(
    conn: psycopg.Connection[Any], space_ids: Collection[str] | None = None
) -> dict[str, Owner]:
    """Who holds each space's live lease (of ``space_ids``, or of every space), for
    routing a request to it. A space whose lease has expired is missing: it is moving."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        query = """
            SELECT o.space_id, o.node_id, n.url, o.epoch
              FROM space_owners o JOIN nodes n ON n.id = o.node_id
             WHERE o.expires_at > clock_timestamp()
        """
        if space_ids is None:
            cur.execute(query)
        else:  # by the primary key
            cur.execute(query + " AND o.space_id = ANY(%s::text[])", (sorted(space_ids),))
        return {space: Owner(node, url, epoch) for space, node, url, epoch in cur.fetchall()}


# ----------------------------------------------------------------------- the fence


def fence(
    target: psycopg.Connection[Any] | psycopg.Cursor[Any], space_id: str, node_id: str, epoch: int
) -> None:
    """Inside a write transaction of the space: raise `Fenced` unless the node holds the
    space at ``epoch`` with a live lease, and lock its lease row until the transaction
    ends, so no claim can come before the write commits (the module's docstring says
    why that makes a late write impossible)."""
    fence_all(target, node_id, {space_id: epoch})


def fence_all(
    target: psycopg.Connection[Any] | psycopg.Cursor[Any], node_id: str, held: Mapping[str, int]
) -> None:
    """`fence` for every space a group commit writes (``held``: each space's epoch), in
    one statement, locking the rows in the order of their space ids. Raises `Fenced`
    naming every space refused; runs in the caller's transaction, which must then roll
    back."""
    if not held:
        return
    conn = target if isinstance(target, psycopg.Connection) else target.connection
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """
            SELECT space_id, node_id, epoch, expires_at > clock_timestamp()
              FROM space_owners WHERE space_id = ANY(%s::text[])
             ORDER BY space_id FOR SHARE
            """,
            (sorted(held),),
        )
        found = {space: (holder, at, live) for space, holder, at, live in cur.fetchall()}
    refused = {}
    for space, epoch in held.items():
        if space not in found:
            refused[space] = "was never claimed"
            continue
        holder, at, live = found[space]
        if holder != node_id or at != epoch:
            refused[space] = f"is held by node {holder} at epoch {at}, not at {epoch}"
        elif not live:
            refused[space] = f"has an expired lease at epoch {at}"
    if refused:
        raise Fenced(refused, node_id)
