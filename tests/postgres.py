"""A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl` in a temporary
directory, on a free loopback port, removed afterwards. One cluster per test session
(`cluster`); a fresh, empty database per test (`database_url`).

Where PostgreSQL is not installed the tests that need it skip, saying how to install it;
under CI (``CI`` set) that is a failure instead: CI must run them. PostgreSQL refuses to
run as root, so as root the cluster runs as the ``postgres`` user (Debian's package makes
it), else as ``nobody``.

Durability is off in the cluster (``fsync=off``): a test kills emit, never PostgreSQL,
and a commit is still answered only once PostgreSQL has applied it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL = "install PostgreSQL (apt-get install postgresql)"


def find_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on the PATH, else Debian's
    versioned directory (``/usr/lib/postgresql/<major>/bin``, the newest)."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def missing(reason: str) -> None:
    """Skip, or under CI fail: CI must run the PostgreSQL tests."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
    pytest.skip(f"needs PostgreSQL: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _unprivileged() -> pwd.struct_passwd | None:
    """Whom to run the server as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and there is no postgres nor nobody user")


@dataclass
class Cluster:
    """A running throwaway cluster."""

    bin: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://emit@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = self.user
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            text=True,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
            cwd=self.root,
            timeout=120,
        )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "emit", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-t", "60", "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY file_copy')
        return self.url(name)

    def log(self) -> str:
        try:
            return (self.root / "log").read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """Start a cluster; stop and remove it afterwards. Raises `LookupError` (with the
    reason) where PostgreSQL or psycopg is missing."""
    bin = find_bin()
    if bin is None:
        raise LookupError(f"initdb and pg_ctl were not found: {INSTALL}")
    try:
        import psycopg  # noqa: F401
    except ImportError as error:  # pragma: no cover - a dependency of emit
        raise LookupError(f"psycopg is not installed ({error})") from None
    user = _unprivileged()
    root = Path(tempfile.mkdtemp(prefix="emit-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster = Cluster(bin, root, free_port(), user)
    try:
        try:
            cluster.start()
        except subprocess.CalledProcessError as error:
            raise RuntimeError(
                f"PostgreSQL did not start ({' '.join(error.cmd[:1])}): "
                f"{error.stderr.strip()}\n{cluster.log()}"
            ) from None
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
