"""What the installed packages carry beyond their code."""

from pathlib import Path
from types import ModuleType

import pytest

import actors
import emit


@pytest.mark.parametrize("package", [actors, emit])
def test_both_packages_say_they_ship_types(package: ModuleType) -> None:
    # PEP 561: without the marker, mypy treats an embedding program's `import emit` as
    # untyped; pyproject's package-data puts it into the wheel.
    assert (Path(str(package.__file__)).parent / "py.typed").is_file()
