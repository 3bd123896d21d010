"""Engine tests run the whole runtime on each store: in memory, a real SQLite file and a
real PostgreSQL database (tests/engine/stores.py; PostgreSQL's run skips where it is not
installed, outside CI). Tests that involve time also take ``autojump_clock``: deadlines,
backoff and long polls then pass instantly, on every store."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import emit
from emit.store.base import Store
from emit.store.memory import MemoryStore
from emit.store.records import Changes
from emit.store.sqlite import SQLiteStore
from tests.engine.stores import ClockHeld

STORES = ("memory", "sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "stores(*kinds): run on these stores only (of STORES), with the reason"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that opens a runtime on ``new_store`` (or takes ``rt``) runs once per
    store, unless marked ``stores(...)`` with the stores it applies to."""
    if "store_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = STORES if marker is None else tuple(k for k in STORES if k in marker.args)
        metafunc.parametrize("store_kind", kinds)


@pytest.fixture
def store_kind() -> str:
    """The store under test; every test taking it is parametrized (`pytest_generate_tests`)."""
    raise AssertionError("parametrized by pytest_generate_tests")


@pytest.fixture
def new_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], Store]:
    """Makes a store on this test's data, of the kind under test: each call a new store
    object on the same data, so a runtime opened again on it finds what the last one
    left (the in-memory store by keeping one, whose open and close keep its contents)."""
    if store_kind == "memory":
        memory = MemoryStore()
        return lambda: ClockHeld(memory)
    if store_kind == "sqlite":
        return lambda: ClockHeld(SQLiteStore(tmp_path / "emit.db"))
    from emit.store.postgres import PostgresStore

    url: str = request.getfixturevalue("database_url")
    return lambda: ClockHeld(PostgresStore(url))


@pytest.fixture
async def rt(new_store: Callable[[], Store]) -> AsyncIterator[emit.Runtime]:
    async with emit.open_runtime(new_store()) as runtime:
        yield runtime


@pytest.fixture
async def jobs(rt: emit.Runtime) -> emit.SpaceJobs:
    space = await rt.create_space("test")
    return rt.space(space.id)


def stall_commits(monkeypatch: pytest.MonkeyPatch, rt: emit.Runtime) -> trio.Event:
    """Hold every commit of ``rt``'s store until the returned event is set: the writes
    handed over meanwhile stay in flight."""
    store = rt.store
    commit = store.commit
    go = trio.Event()

    async def stalled_commit(changes: list[Changes]) -> None:
        await go.wait()
        await commit(changes)

    monkeypatch.setattr(store, "commit", stalled_commit)
    return go


def crash_when_told(monkeypatch: pytest.MonkeyPatch, actor: type[Any], what: str) -> None:
    """Make every ``actor`` told the string ``"crash"`` raise
    ``RuntimeError("injected <what> crash")``, a bug in its ``receive``."""
    receive = actor.receive

    async def crashing_receive(self: Any, message: Any) -> object:
        if message == "crash":
            raise RuntimeError(f"injected {what} crash")
        return await receive(self, message)

    monkeypatch.setattr(actor, "receive", crashing_receive)
