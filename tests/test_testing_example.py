"""docs/testing.md's "Testing your own code" runs as written: its files are written to a
fresh directory and run by pytest in a process of their own, as a user's project would
run them, with the emit.testing plugin loaded the way the page says."""

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).parent.parent / "docs" / "testing.md"


def example_files() -> dict[str, str]:
    """The page's code blocks that begin with ``# FILENAME``, after the section's title."""
    section = DOC.read_text().split("## Testing your own code", 1)[1]
    files = {}
    for block in re.findall(r"```(?:python|ini)\n(.*?)```", section, re.DOTALL):
        first, _, rest = block.partition("\n")
        if first.startswith("# ") and "." in first:
            files[first[2:].strip()] = rest
    return files


def test_the_example_in_testing_md_passes(tmp_path: Path) -> None:
    files = example_files()
    assert set(files) == {"pytest.ini", "conftest.py", "test_emails.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_emails.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


def test_the_fixtures_refuse_the_real_clock(tmp_path: Path) -> None:
    files = example_files()
    (tmp_path / "pytest.ini").write_text(files["pytest.ini"])
    (tmp_path / "conftest.py").write_text(files["conftest.py"])
    (tmp_path / "test_clock.py").write_text(
        "async def test_without_the_clock(emit_jobs):\n    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_clock.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "add autojump_clock to the test's arguments" in done.stdout
