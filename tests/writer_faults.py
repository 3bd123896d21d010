"""The writer process's fault seam, as tests drive it: a file whose content names the
fault (`emit.store._writer_process._Faulty`), named by an environment variable that the
writer process inherits."""

from __future__ import annotations

from pathlib import Path

import pytest

from emit.store._writer_process import FAULTS


class Faults:
    """The fault file the writer process reads before each statement."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def install(cls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Faults:
        path = tmp_path / "faults"
        monkeypatch.setenv(FAULTS, str(path))  # the writer process inherits it
        return cls(path)

    def set(self, fault: str) -> None:
        self.path.write_text(fault)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
