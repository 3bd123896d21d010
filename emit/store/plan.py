"""One transaction's writes as ordered steps of abstract kinds (`Step`), each with its
rows: the order that keeps a group of batches' meaning, shared by the stores that speak
SQL. Each store maps a kind to its own statements."""

from __future__ import annotations

import enum
from typing import Any

from .records import Changes, EventRow, JobRow, LogRow, StateRow, callback_row, space_row, token_row


class Step(enum.Enum):
    """What a step does with its rows (one statement or a few per kind, per store)."""

    INSERT_JOBS = enum.auto()
    UPDATE_JOBS = enum.auto()
    """A job's state columns, its new events appended to those its row holds."""
    INSERT_EVENTS = enum.auto()
    INSERT_LOGS = enum.auto()
    PUT_CALLBACKS = enum.auto()
    """Insert or replace."""
    PUT_SPACES = enum.auto()
    DELETE_SPACE = enum.auto()
    """One row, the space id: the space with its jobs, events, logs, callbacks, tokens."""
    PUT_TOKENS = enum.auto()
    REVOKE_TOKENS = enum.auto()
    """Rows of (revoked at, token id)."""
    NOTE_TOKEN_USES = enum.auto()
    """Rows of (used at, token id): the later of it and the stored one is kept."""
    DELETE_JOBS = enum.auto()
    """Rows of (job id,): each job with its events, logs and callbacks."""
    RECLAIM_PAGES = enum.auto()
    """One empty row per free page to give back (SQLite's incremental vacuum)."""


Planned = tuple[Step, list[tuple[Any, ...]]]


def plan(batches: list[Changes]) -> list[Planned]:
    """One transaction's steps, in an order that keeps every batch's meaning: each
    table's rows of consecutive batches go in one step (jobs before their updates and
    events), and a batch that changes spaces or tokens first closes what came before it,
    so that a deleted space's last jobs are deleted too."""
    steps: list[Planned] = []
    inserts: list[JobRow] = []
    updates: list[StateRow] = []
    events: list[EventRow] = []
    logs: list[LogRow] = []
    callbacks: list[tuple[Any, ...]] = []

    def close() -> None:
        for kind, rows in (
            (Step.INSERT_JOBS, inserts),
            (Step.UPDATE_JOBS, updates),
            (Step.INSERT_EVENTS, events),
            (Step.INSERT_LOGS, logs),
            (Step.PUT_CALLBACKS, callbacks),
        ):
            if rows:
                steps.append((kind, rows.copy()))
                rows.clear()

    for batch in batches:
        if (
            batch.spaces
            or batch.deleted_spaces
            or batch.tokens
            or batch.revoked_tokens
            or batch.token_uses
        ):
            close()
            steps.extend((Step.PUT_SPACES, [space_row(space)]) for space in batch.spaces)
            steps.extend((Step.DELETE_SPACE, [(space_id,)]) for space_id in batch.deleted_spaces)
            steps.extend((Step.PUT_TOKENS, [token_row(token)]) for token in batch.tokens)
            if batch.revoked_tokens:
                rows = [(at, token_id) for token_id, at in batch.revoked_tokens]
                steps.append((Step.REVOKE_TOKENS, rows))
            if batch.token_uses:
                rows = [(at, token_id) for token_id, at in batch.token_uses]
                steps.append((Step.NOTE_TOKEN_USES, rows))
        if batch.deleted_jobs:
            close()
            steps.append((Step.DELETE_JOBS, [(job_id,) for job_id in batch.deleted_jobs]))
            if batch.reclaim_pages:
                steps.append((Step.RECLAIM_PAGES, [()] * batch.reclaim_pages))
        inserts += batch.inserts
        updates += batch.updates
        events += batch.events
        logs += batch.logs
        callbacks += [callback_row(callback) for callback in batch.callbacks]
    close()
    return steps
