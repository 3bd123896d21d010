"""Scopes (spec §1): shorthands, the worker preset, implications, and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from emit.domain import scopes
from emit.errors import InvalidRequest

SINGLE = [
    "jobs:create",
    "jobs:read",
    "jobs:poll",
    "jobs:ack",
    "jobs:progress",
    "jobs:event",
    "jobs:complete",
    "jobs:fail",
    "jobs:keepalive",
    "jobs:kill",
    "jobs:read:progress",
]
WORKER = {
    "jobs:read",
    "jobs:poll",
    "jobs:ack",
    "jobs:progress",
    "jobs:event",
    "jobs:complete",
    "jobs:fail",
    "jobs:keepalive",
}
WRITE = {"jobs:ack", "jobs:progress", "jobs:event", "jobs:complete", "jobs:fail", "jobs:keepalive"}


def test_the_scope_table_is_the_spec_table() -> None:
    assert set(SINGLE) == scopes.SCOPES


@pytest.mark.parametrize("scope", [s for s in SINGLE if s != "jobs:read"])
def test_a_plain_scope_expands_to_itself(scope: str) -> None:
    assert scopes.expand([scope]) == {scope}


def test_jobs_read_implies_jobs_read_progress() -> None:
    assert scopes.expand(["jobs:read"]) == {"jobs:read", "jobs:read:progress"}


def test_jobs_read_progress_does_not_imply_jobs_read() -> None:
    assert "jobs:read" not in scopes.expand(["jobs:read:progress"])


def test_the_worker_shorthand_expands_with_read_and_so_read_progress() -> None:
    assert scopes.expand(["jobs:worker"]) == WORKER | {"jobs:read:progress"}
    assert "jobs:worker" not in scopes.expand(["jobs:worker"])


def test_the_write_shorthand_expands_without_any_read() -> None:
    assert scopes.expand(["jobs:write"]) == WRITE


def test_shorthands_and_scopes_combine() -> None:
    assert scopes.expand(["jobs:write", "jobs:create", "jobs:ack"]) == WRITE | {"jobs:create"}


def test_expand_is_idempotent() -> None:
    once = scopes.expand(["jobs:worker", "jobs:kill"])
    assert scopes.expand(once) == once


@pytest.mark.parametrize(
    "bad", ["jobs:admin", "jobs:*", "JOBS:READ", "jobs:read ", "", "worker", "jobs"]
)
def test_an_unknown_scope_is_refused_naming_the_scopes_field(bad: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        scopes.expand(["jobs:read", bad])
    assert info.value.field == "scopes"
    assert repr(bad) in info.value.message


def test_the_worker_preset_is_the_worker_shorthand_plus_read_progress() -> None:
    assert scopes.for_token(None, "worker") == WORKER | {"jobs:read:progress"}
    assert scopes.PRESETS["worker"] == scopes.expand(["jobs:worker"])


def test_a_token_from_scopes_is_expanded() -> None:
    assert scopes.for_token(["jobs:read", "jobs:write"], None) == WRITE | {
        "jobs:read",
        "jobs:read:progress",
    }


def test_an_unknown_preset_is_refused_naming_the_preset_field() -> None:
    with pytest.raises(InvalidRequest) as info:
        scopes.for_token(None, "admin")
    assert info.value.field == "preset"


@pytest.mark.parametrize(
    ("given", "preset"),
    [(None, None), (["jobs:read"], "worker"), ([], "worker")],
    ids=["neither", "both", "empty-list-and-preset"],
)
def test_a_token_needs_exactly_one_of_scopes_or_preset(given: Any, preset: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        scopes.for_token(given, preset)
    assert info.value.field == "scopes"


def test_a_token_with_an_empty_scope_list_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        scopes.for_token([], None)
    assert info.value.field == "scopes"


def test_a_token_with_an_unknown_scope_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        scopes.for_token(["jobs:read", "jobs:everything"], None)
    assert info.value.field == "scopes"


def test_the_public_token_holds_only_read_progress() -> None:
    assert frozenset({"jobs:read:progress"}) == scopes.PUBLIC


def test_allows_checks_membership_in_the_expanded_set() -> None:
    held = scopes.for_token(["jobs:read", "jobs:poll"], None)
    assert scopes.allows(held, "jobs:poll")
    assert scopes.allows(held, "jobs:read:progress")
    assert not scopes.allows(held, "jobs:ack")
    assert not scopes.allows(scopes.PUBLIC, "jobs:read")
    worker = scopes.for_token(None, "worker")
    assert not scopes.allows(worker, "jobs:create")
    assert not scopes.allows(worker, "jobs:kill")
