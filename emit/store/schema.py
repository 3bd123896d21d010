"""The SQLite schema as numbered migrations. ``PRAGMA user_version`` records how many
have run; each runs once, in its own transaction, in order."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: spaces, tokens, jobs, events, logs
    """
    CREATE TABLE spaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        public_token TEXT NOT NULL,
        created_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        space_id TEXT NOT NULL,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL,
        public INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tokens_space ON tokens (space_id);
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        space_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        attempt_number INTEGER NOT NULL,
        timeout_seconds INTEGER NOT NULL,
        scheduled_for REAL,
        callback_url TEXT,
        callback_headers TEXT,
        idempotency_key TEXT,
        retry_backoff TEXT,
        progress TEXT,
        result TEXT,
        checkpoint TEXT,
        lease_id TEXT,
        deadline REAL,
        event_seq INTEGER NOT NULL,
        log_seq INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        delivered_at REAL,
        started_at REAL,
        completed_at REAL
    );
    CREATE INDEX jobs_space ON jobs (space_id, id);
    CREATE INDEX jobs_space_status ON jobs (space_id, status, id);
    CREATE INDEX jobs_space_name ON jobs (space_id, name, id);
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (space_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE TABLE job_events (
        job_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        attempt_number INTEGER NOT NULL,
        data TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE job_logs (
        job_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        level INTEGER NOT NULL,
        message TEXT NOT NULL,
        ts REAL NOT NULL,
        fields TEXT,
        PRIMARY KEY (job_id, seq)
    ) WITHOUT ROWID;
    """,
    # 2: the durable outbox of webhook callbacks
    """
    CREATE TABLE callbacks (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        space_id TEXT NOT NULL,
        url TEXT NOT NULL,
        headers TEXT,
        body TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_at REAL NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_error TEXT
    );
    CREATE INDEX callbacks_pending ON callbacks (state, next_at);
    """,
    # 3: a job's first events in its own row (see records.INLINE_EVENTS); jobs written
    # before keep their earlier events in job_events, and read both
    """
    ALTER TABLE jobs ADD COLUMN events TEXT NOT NULL DEFAULT ''
    """,
    # 4: a swept job's callbacks are deleted with it (docs/persistence.md, "Retention")
    """
    CREATE INDEX callbacks_job ON callbacks (job_id)
    """,
    # 5: when each key was last used, written in batches (Runtime.flush_key_uses)
    """
    ALTER TABLE tokens ADD COLUMN last_used_at REAL
    """,
)


def migrate(connection: sqlite3.Connection) -> int:
    """Run the migrations this database has not seen; returns the schema version."""
    version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"the database has schema version {version}, newer than this emit knows "
            f"({len(MIGRATIONS)}): upgrade emit"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        statements = [s.strip() for s in script.split(";") if s.strip()]
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    return len(MIGRATIONS)
