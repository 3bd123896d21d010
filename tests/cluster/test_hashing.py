"""Rendezvous hashing (emit/cluster/hashing.py): balanced, stable, and moving only what
must move when a node leaves or joins."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from emit.cluster.hashing import owner, ranking, weight
from tests.test_layering import SOURCE, impure

SPACES = [f"space-{n}" for n in range(3_000)]
NODES = ["node-a", "node-b", "node-c"]

ids = st.text(min_size=1, max_size=12)
node_sets = st.lists(ids, min_size=1, max_size=6, unique=True)


def test_hashing_is_pure() -> None:
    assert impure(SOURCE, "emit.cluster.hashing") == []


def test_three_nodes_share_the_spaces_evenly() -> None:
    for nodes in (NODES, ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]):
        counts = Counter(owner(space, nodes) for space in SPACES)
        assert set(counts) == set(nodes)
        for n in counts.values():
            assert 900 <= n <= 1_100, counts


def test_no_nodes_no_owner() -> None:
    assert owner("space-1", []) is None
    assert ranking("space-1", []) == []


@given(space=ids, nodes=node_sets)
def test_the_owner_heads_the_ranking(space: str, nodes: list[str]) -> None:
    order = ranking(space, nodes)
    assert sorted(order) == sorted(nodes)
    assert owner(space, nodes) == order[0]
    assert owner(space, reversed(nodes)) == order[0]
    assert ranking(space, [*nodes, *nodes]) == order


@given(space=ids, nodes=node_sets.filter(lambda nodes: len(nodes) >= 2), data=st.data())
def test_a_node_leaving_moves_only_its_own_spaces_to_the_next_in_the_ranking(
    space: str, nodes: list[str], data: st.DataObject
) -> None:
    leaving = data.draw(st.sampled_from(nodes))
    rest = [node for node in nodes if node != leaving]
    before = owner(space, nodes)
    after = owner(space, rest)
    if before != leaving:
        assert after == before
    else:
        assert after == ranking(space, nodes)[1]
    assert ranking(space, rest) == [n for n in ranking(space, nodes) if n != leaving]


@given(space=ids, nodes=node_sets, joining=ids)
def test_a_node_joining_takes_spaces_only_for_itself(
    space: str, nodes: list[str], joining: str
) -> None:
    after = owner(space, [*nodes, joining])
    assert after in (owner(space, nodes), joining)


def test_a_node_joining_takes_about_a_third() -> None:
    before = {space: owner(space, NODES[:2]) for space in SPACES}
    after = {space: owner(space, NODES) for space in SPACES}
    moved = [space for space in SPACES if before[space] != after[space]]
    assert all(after[space] == "node-c" for space in moved)
    assert 900 <= len(moved) <= 1_100


def test_weights_are_the_same_in_every_process() -> None:
    """Python's own `hash` of text differs between processes; the weight must not."""
    code = (
        "from emit.cluster.hashing import weight, owner\n"
        "print(weight('space-1', 'node-a'), owner('space-7', ['a', 'b', 'c']))\n"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert seen == {f"{weight('space-1', 'node-a')} {owner('space-7', ['a', 'b', 'c'])}\n"}


def test_ids_do_not_run_into_each_other() -> None:
    assert weight("ab", "c") != weight("a", "bc")
