"""Scopes (spec §1): what each key may do, and how shorthands and presets expand.

Pure and small on purpose: the HTTP layer, the CLI and the runtime all ask this module,
so there is one answer to "may this key do that?".
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidRequest

CREATE = "jobs:create"
READ = "jobs:read"
POLL = "jobs:poll"
ACK = "jobs:ack"
PROGRESS = "jobs:progress"
EVENT = "jobs:event"
COMPLETE = "jobs:complete"
FAIL = "jobs:fail"
KEEPALIVE = "jobs:keepalive"
KILL = "jobs:kill"
READ_PROGRESS = "jobs:read:progress"

SCOPES = frozenset(
    {CREATE, READ, POLL, ACK, PROGRESS, EVENT, COMPLETE, FAIL, KEEPALIVE, KILL, READ_PROGRESS}
)
SHORTHANDS: dict[str, frozenset[str]] = {
    "jobs:worker": frozenset({READ, POLL, ACK, PROGRESS, EVENT, COMPLETE, FAIL, KEEPALIVE}),
    "jobs:write": frozenset({ACK, PROGRESS, EVENT, COMPLETE, FAIL, KEEPALIVE}),
}
PRESETS: dict[str, frozenset[str]] = {
    "worker": SHORTHANDS["jobs:worker"] | {READ_PROGRESS},
}
IMPLIED: dict[str, frozenset[str]] = {READ: frozenset({READ_PROGRESS})}
PUBLIC = frozenset({READ_PROGRESS})


def expand(scopes: Iterable[str]) -> frozenset[str]:
    """Shorthands and implications spelled out; unknown scopes are refused.

    >>> sorted(expand(["jobs:read"]))
    ['jobs:read', 'jobs:read:progress']
    """
    result: set[str] = set()
    for scope in scopes:
        if scope in SHORTHANDS:
            result |= SHORTHANDS[scope]
        elif scope in SCOPES:
            result.add(scope)
        else:
            raise InvalidRequest(f"unknown scope {scope!r}", field="scopes")
    for scope in list(result):
        result |= IMPLIED.get(scope, frozenset())
    return frozenset(result)


def for_token(scopes: Iterable[str] | None, preset: str | None) -> frozenset[str]:
    """The scopes of a new token from exactly one of ``scopes`` or ``preset``."""
    if (scopes is None) == (preset is None):
        raise InvalidRequest("give either scopes or preset", field="scopes")
    if preset is not None:
        if preset not in PRESETS:
            raise InvalidRequest(f"unknown preset {preset!r}", field="preset")
        return PRESETS[preset]
    assert scopes is not None
    listed = list(scopes)
    if not listed:
        raise InvalidRequest("scopes must name at least one scope", field="scopes")
    return expand(listed)


def allows(held: frozenset[str], needed: str) -> bool:
    return needed in held
