"""Faults end to end: a real server on loopback over a real SQLite file whose writer
process fails on demand, through its test seam (`emit.store._writer_process._Faulty`)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emit.http.settings import HttpSettings
from emit.store._writer_process import FAULTS

from ..http.conftest import ADMIN_KEY, Server, start_server


class Faults:
    """The fault file the writer process reads before each statement."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def set(self, fault: str) -> None:
        self.path.write_text(fault)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Faults:
    path = tmp_path / "faults"
    monkeypatch.setenv(FAULTS, str(path))  # the writer process inherits it
    return Faults(path)


@pytest.fixture
async def server(tmp_path: Path, faults: Faults) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        try:
            yield running
        finally:
            faults.clear()  # before the server stops: its drain writes
