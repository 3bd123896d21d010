"""The cluster's errors.

The hierarchy::

    emit.errors.Unavailable   503: nothing was accepted; retry
    └── Fenced                a write of spaces this node no longer holds at its epoch
                              (another node claimed them, or the lease expired), refused
                              inside the write's own transaction; .spaces names them
"""

from __future__ import annotations

from collections.abc import Mapping

from emit.errors import Unavailable


class Fenced(Unavailable):
    """This node does not hold these spaces at the epoch it writes with: the write's
    transaction must roll back, and the spaces' actors stop (another node owns them, or
    will once it claims them)."""

    def __init__(self, node_id: str, reasons: Mapping[str, str]) -> None:
        self.node_id = node_id
        self.spaces: dict[str, str] = dict(reasons)
        """Each refused space, with why (whose lease it is)."""
        why = "; ".join(f"space {space} {reason}" for space, reason in sorted(reasons.items()))
        super().__init__(f"node {node_id} is fenced off: {why}")
