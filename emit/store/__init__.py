"""Persistence: the write-ahead log of every space, and the queries that read it.

The space actors' memory is the live truth; the store is its log. All writes go through
one writer (`writer.StoreWriter`), which commits concurrent changes in one transaction
(group commit). Reads go straight to the store and see only committed state, so nobody
can read a change before it is durable.
"""

from .base import Store
from .memory import MemoryStore
from .records import Changes

__all__ = ["Changes", "MemoryStore", "Store"]
