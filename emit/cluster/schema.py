"""The tables of the cluster, as one numbered migration of the PostgreSQL store: the
live nodes (a heartbeat row each) and the ownership lease of each space.

Every time in them is the database's (``now()``, ``clock_timestamp()``): leases are set
and compared by PostgreSQL alone, so the nodes' own clocks never matter.
"""

from __future__ import annotations

MIGRATION = """
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    -- The node's internal URL, for the requests other nodes forward to it.
    url TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    -- The node is live while this is in the future; each heartbeat moves it on.
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE space_owners (
    space_id TEXT PRIMARY KEY,
    -- The node holding (or that last held) the space. No foreign key to nodes: a lease
    -- is judged by its own expiry, and a node row may go before its leases expire.
    node_id TEXT NOT NULL,
    -- One more at each claim, never reset: a row is released, not deleted, so the
    -- epoch only goes up, and a write fenced at an older epoch is refused.
    epoch BIGINT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    -- The lease is live while this is in the future; a released lease has -infinity.
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX space_owners_node ON space_owners (node_id);
"""
"""The DDL, run once in one transaction as the PostgreSQL store's migration that follows
its ``spaces`` table."""
