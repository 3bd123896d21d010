"""Faults end to end: a real server on loopback over a real SQLite file whose writer
process fails on demand, through its test seam (`emit.store._writer_process._Faulty`)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server, start_server
from ..writer_faults import Faults


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults.install(tmp_path, monkeypatch)


@pytest.fixture
async def server(tmp_path: Path, faults: Faults) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        try:
            yield running
        finally:
            faults.clear()  # before the server stops: its drain writes
