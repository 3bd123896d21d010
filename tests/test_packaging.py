"""What the installed packages carry beyond their code, and a wheel of the project
installed and run as a user would."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import actors
import emit

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("package", [actors, emit])
def test_both_packages_say_they_ship_types(package: ModuleType) -> None:
    # PEP 561: without the marker, mypy treats an embedding program's `import emit` as
    # untyped; pyproject's package-data puts it into the wheel.
    assert (Path(str(package.__file__)).parent / "py.typed").is_file()


def test_a_wheel_installs_into_a_fresh_venv_and_serves_from_any_directory(
    tmp_path: Path,
) -> None:
    # Built from a copy holding only what the build is given (so the test writes nothing
    # into the checkout), installed with its dependencies from the package index into a
    # new virtual environment, and run from a directory that is not the source.
    source = _mkdir(tmp_path / "source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("actors", "emit"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip(sys.executable, "wheel", str(source), "--no-deps", "--wheel-dir", str(tmp_path / "dist"))
    (wheel,) = (tmp_path / "dist").glob("emit-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    shipped = {
        path.relative_to(source).as_posix()
        for package in ("actors", "emit")
        for path in (source / package).rglob("*")
        if path.is_file()
    }
    assert {"emit/py.typed", "actors/py.typed", "emit/store/_writer_process.py"} <= shipped
    assert shipped <= packed, sorted(shipped - packed)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip(str(venv / "bin" / "python"), "install", str(wheel))

    elsewhere = _mkdir(tmp_path / "elsewhere")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("EMIT_")}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import emit; print(emit.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv)

    installed = str(venv / "bin" / "emit")

    def emit_json(*args: str) -> Any:
        done = subprocess.run(
            [installed, *args, "--json"],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)

    space = emit_json("spaces", "create", "packaged")["id"]
    key = emit_json("tokens", "create", space, "--name", "p", "--scopes", "jobs:create")["key"]
    server = subprocess.Popen(
        [installed, "serve", "--port", "0"],
        cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(60, server.kill)
    watchdog.start()
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        url = re.search(r"http://\S+", first)
        assert url, first
        with httpx.Client(base_url=url[0], timeout=30) as http:
            assert http.get("/healthz").status_code == 200
            made = http.post(  # the store's writer process runs from the installed package
                f"/api/v1/spaces/{space}/jobs", json={"name": "installed"},
                headers={"x-api-key": key},
            )  # fmt: skip
            assert made.status_code == 201, made.text
            signin = http.get("/signin")  # the dashboard's templates and styles are shipped
            assert signin.status_code == 200 and "Admin key" in signin.text
            assert http.get("/dashboard/static/dashboard.css").status_code == 200
        server.send_signal(signal.SIGTERM)
        rest, _ = server.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0 and "emit stopped" in rest
    assert (elsewhere / "emit-data" / "emit.db").is_file()  # ./emit-data, where it ran


def pip(python: str, *args: str) -> None:
    done = subprocess.run(
        [python, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
