"""`OwnersRouter`: where a request for a space goes, from the owners table a node last
read; a known space without an owner asks for the table to be read again at once."""

from __future__ import annotations

from typing import Any, cast

from emit.cluster.forwarding import LOCAL, Moving, Remote
from emit.cluster.leases import Owner
from emit.cluster.node import OwnersRouter


class Runtime:
    def __init__(self, owned: set[str]) -> None:
        self.owned = owned

    def owns(self, space_id: str) -> bool:
        return space_id in self.owned


def test_spaces_route_by_the_owners_table() -> None:
    router = OwnersRouter(cast(Any, Runtime({"mine"})), "a")
    router.update(
        {"mine": Owner("a", "http://a", 1), "theirs": Owner("b", "http://b:8787", 3)},
        ["mine", "theirs", "orphan"],
        {"a": "http://a", "b": "http://b:8787"},
    )
    assert router.route("mine") is LOCAL
    assert router.route("theirs") == Remote("http://b:8787")
    assert not router.stale.is_set()
    assert router.route("unknown") is LOCAL  # nobody knows it: answered 404 here
    assert not router.stale.is_set()
    assert isinstance(router.route("orphan"), Moving)  # known, no owner yet
    assert router.stale.is_set()  # read the table again now: a claim may be done


def test_a_lease_this_node_holds_but_has_not_started_yet_is_moving() -> None:
    router = OwnersRouter(cast(Any, Runtime(set())), "a")
    router.update({"s": Owner("a", "http://a", 2)}, ["s"])
    assert isinstance(router.route("s"), Moving)
