"""The PostgreSQL schema as numbered migrations: the SQLite schema's final state
(`schema.py`) in PostgreSQL's types. A one-row ``schema_version`` table records how many
have run. Every node migrates on open, under one advisory lock, in one transaction: of
several nodes starting at once, the first migrates and the others find it done."""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from ..cluster.schema import MIGRATION as CLUSTER

MIGRATIONS: tuple[str, ...] = (
    # 1: spaces, tokens, jobs (with their first events inline: records.INLINE_EVENTS),
    # events, logs, the webhook outbox. Times are wall-clock epoch seconds; JSON is text,
    # as the rows carry it. Ids compare bytewise (COLLATE "C"), as in SQLite, whatever
    # the database's locale: ids sort by creation time, which listings and the sweep's
    # `id < bound` rely on.
    """
    CREATE TABLE spaces (
        id text COLLATE "C" PRIMARY KEY,
        name text NOT NULL,
        public_token text NOT NULL,
        created_at double precision NOT NULL,
        settings text NOT NULL DEFAULT '{}'
    );
    CREATE TABLE tokens (
        id text COLLATE "C" PRIMARY KEY,
        space_id text COLLATE "C" NOT NULL,
        name text NOT NULL,
        prefix text NOT NULL,
        key_hash text NOT NULL UNIQUE,
        scopes text NOT NULL,
        created_at double precision NOT NULL,
        revoked_at double precision,
        public boolean NOT NULL DEFAULT false,
        last_used_at double precision
    );
    CREATE INDEX tokens_space ON tokens (space_id);
    CREATE TABLE jobs (
        id text COLLATE "C" PRIMARY KEY,
        space_id text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        name text NOT NULL,
        payload text NOT NULL,
        status text NOT NULL,
        priority bigint NOT NULL,
        max_retries bigint NOT NULL,
        attempt_number bigint NOT NULL,
        timeout_seconds bigint NOT NULL,
        scheduled_for double precision,
        callback_url text,
        callback_headers text,
        idempotency_key text,
        retry_backoff text,
        progress text,
        result text,
        checkpoint text,
        lease_id text,
        deadline double precision,
        event_seq bigint NOT NULL,
        log_seq bigint NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        delivered_at double precision,
        started_at double precision,
        completed_at double precision,
        events text NOT NULL DEFAULT ''
    );
    CREATE INDEX jobs_space ON jobs (space_id, id);
    CREATE INDEX jobs_space_status ON jobs (space_id, status, id);
    CREATE INDEX jobs_space_name ON jobs (space_id, name, id);
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (space_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE TABLE job_events (
        job_id text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        type text NOT NULL,
        attempt_number bigint NOT NULL,
        data text,
        created_at double precision NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE job_logs (
        job_id text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        level bigint NOT NULL,
        message text NOT NULL,
        ts double precision NOT NULL,
        fields text,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE callbacks (
        id text COLLATE "C" PRIMARY KEY,
        job_id text COLLATE "C" NOT NULL,
        space_id text COLLATE "C" NOT NULL,
        url text NOT NULL,
        headers text,
        body text NOT NULL,
        attempts bigint NOT NULL,
        next_at double precision NOT NULL,
        state text NOT NULL,
        created_at double precision NOT NULL,
        last_error text
    );
    CREATE INDEX callbacks_pending ON callbacks (state, next_at);
    CREATE INDEX callbacks_job ON callbacks (job_id);
    CREATE INDEX callbacks_space ON callbacks (space_id);
    """,
    # 2: the nodes sharing the database, and who owns each space at which epoch (the
    # cluster's membership and the fence of every write: emit/cluster/leases.py)
    CLUSTER,
)

LOCK = 0x656D6974_0001
"""The advisory lock key that serializes migrations (any node, any emit version)."""


class NewerSchema(Exception):
    """The database was migrated by a newer emit than this one."""


def migrate(connection: psycopg.Connection[TupleRow]) -> int:
    """Run the migrations this database has not seen, in one transaction under the
    advisory lock; returns the schema version. ``connection`` is in autocommit mode."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
            " version integer NOT NULL)"
        )
        row = connection.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > len(MIGRATIONS):
            raise NewerSchema(
                f"the database has schema version {version}, newer than this emit knows "
                f"({len(MIGRATIONS)}): upgrade emit"
            )
        for script in MIGRATIONS[version:]:
            # Whole: with no parameters, a script of several statements is one query
            # (splitting it on semicolons would split its comments too).
            connection.execute(script)
        if row is None:
            connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (0,))
        connection.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
    return len(MIGRATIONS)
