"""Fixtures for every test directory: a throwaway PostgreSQL cluster (tests/postgres.py),
started once per session by the first test that asks for it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.postgres import Cluster, missing, running_cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(running_cluster())
        except LookupError as reason:
            missing(str(reason))
        yield cluster


@pytest.fixture
def database_url(postgres_cluster: Cluster) -> str:
    """The URL of a new, empty database of the session's cluster."""
    return postgres_cluster.create_database()
