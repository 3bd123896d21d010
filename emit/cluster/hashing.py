"""Which node owns a space: rendezvous (highest-random-weight) hashing over the live
nodes. Pure: no I/O, no clock.

Each (space, node) pair gets a stable 64-bit weight; the space's owner is the node of
the highest weight, and the ranking of all nodes by weight is the failover order. So
when a node leaves, only its own spaces move (each to the next node of its ranking),
and when a node joins it takes about 1/n of the spaces, each from its previous owner,
and nothing moves between the others.

The weight is blake2b of the two ids, never Python's `hash` (randomized per process):
every node computes the same owner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable


def weight(space_id: str, node_id: str) -> int:
    """The pair's weight: a stable, uniformly spread 64-bit number. Each id is
    length-prefixed, so no two pairs of ids hash the same bytes."""
    digest = hashlib.blake2b(digest_size=8)
    for part in (space_id.encode(), node_id.encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return int.from_bytes(digest.digest(), "big")


def _order(space_id: str) -> Callable[[str], tuple[int, str]]:
    """The key that sorts nodes by their claim on the space: the highest weight first;
    ties (a 2⁻⁶⁴ chance) fall to the smaller id."""
    return lambda node: (-weight(space_id, node), node)


def ranking(space_id: str, node_ids: Iterable[str]) -> list[str]:
    """The nodes in the order they would own the space: the owner first, then whoever
    takes over if it leaves, and so on. Duplicates count once."""
    return sorted(set(node_ids), key=_order(space_id))


def owner(space_id: str, node_ids: Iterable[str]) -> str | None:
    """The node that owns the space among ``node_ids`` (the first of its `ranking`);
    None when there is none."""
    return min(node_ids, key=_order(space_id), default=None)
