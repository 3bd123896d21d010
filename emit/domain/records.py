"""The records of emit besides jobs: spaces, their keys, log lines and webhook deliveries.

Frozen values: the engine makes them, the store persists them (emit/store/records.py
holds their rows) and the views render them. They belong to neither, so that what a
caller sees does not depend on how it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..codec import JSON
from .model import LogLevel


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    level: LogLevel
    message: str
    ts: float
    fields: JSON


@dataclass(frozen=True, slots=True)
class Space:
    id: str
    name: str
    public_token: str
    created_at: float
    settings: dict[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    space_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None = None
    public: bool = False
    last_used_at: float | None = None
    """When a request last used the key, as of the runtime's last flush of its uses
    (`Runtime.list_tokens` adds those not yet flushed)."""


@dataclass(frozen=True, slots=True)
class Callback:
    """One webhook to deliver (spec §5): the outbox row. ``body`` is the exact JSON text
    sent (and signed); ``state`` is pending, delivered or failed (given up)."""

    id: str
    job_id: str
    space_id: str
    url: str
    headers: dict[str, str] | None
    body: str
    attempts: int
    next_at: float
    state: str
    created_at: float
    last_error: str | None = None
