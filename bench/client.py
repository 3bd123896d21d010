"""The benches' one HTTP client and one way to start a server: a raw HTTP/1.1 keep-alive
connection on trio (far cheaper in CPU than a general client, so what a bench measures
is the server), ``emit serve`` in a child process on a fresh data directory, and
beanstalkd, the reference the engine and the HTTP benches measure emit beside."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def percentile(samples: list[float], p: float) -> float:
    """The ``p`` quantile (0 to 1) of ``samples``, nan if there are none."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Http1:
    """A bare HTTP/1.1 keep-alive client: one request at a time, a Content-Length answer."""

    def __init__(self, stream: trio.SocketStream, host: bytes) -> None:
        self.stream = stream
        self.host = host
        self.buffer = b""
        self.closing = False
        """The last answer said ``connection: close`` (Hypercorn closes a keep-alive
        connection after 1,000 requests): this connection carries no more requests."""

    @classmethod
    async def open(cls, host: str, port: int) -> Http1:
        return cls(await trio.open_tcp_stream(host, port), f"{host}:{port}".encode())

    async def _more(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    async def request(
        self, method: bytes, path: str, key: bytes, body: bytes = b""
    ) -> tuple[int, bytes]:
        """One request and its answer: status and body. ``key`` empty: no
        ``x-api-key`` header."""
        auth = b"x-api-key: %s\r\n" % key if key else b""
        await self.stream.send_all(
            b"%s %s HTTP/1.1\r\nhost: %s\r\n%scontent-type: application/json"
            b"\r\ncontent-length: %d\r\n\r\n%s"
            % (method, path.encode(), self.host, auth, len(body), body)
        )
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.closing = True
        if length is None:
            raise ConnectionError(f"an answer without content-length: {head[:200]!r}")
        while len(self.buffer) < length:
            await self._more()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), answer

    async def post(self, path: str, key: bytes, body: bytes) -> tuple[int, bytes]:
        return await self.request(b"POST", path, key, body)

    async def aclose(self) -> None:
        await self.stream.aclose()


class Connection:
    """An `Http1` opened again when the server said it closes the connection (such a
    close carries no further request, so nothing is sent twice); each call checks the
    status it expects."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.http: Http1 | None = None

    async def connect(self) -> None:
        await self.aclose()
        self.http = await Http1.open(self.host, self.port)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    async def call(self, method: bytes, path: str, key: bytes, body: bytes, status: int) -> bytes:
        if self.http is None or self.http.closing:
            await self.connect()
        assert self.http is not None
        try:
            got, answer = await self.http.request(method, path, key, body)
        except BaseException:
            self.http.closing = True  # cut short mid-answer: the next call opens another
            raise
        if got != status:
            raise RuntimeError(f"{method.decode()} {path} -> {got}: {answer[:300]!r}")
        return bytes(answer)

    async def post(self, path: str, key: bytes, body: bytes, status: int) -> bytes:
        return await self.call(b"POST", path, key, body, status)

    async def post_json(self, path: str, key: bytes, body: object, status: int) -> object:
        return json.loads(await self.post(path, key, json.dumps(body).encode(), status))


def session_ends(pid: int, within: float) -> bool:
    """True once no process of the session ``pid`` led is left (emit's store writer
    process follows its server within seconds); after ``within`` s, end them all and say
    False."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            return False
        time.sleep(0.02)


class Served:
    """A server in a child process: started, its first lines read (its output, stderr
    included, is kept: ``lines`` up to the start, ``rest`` after), stopped with SIGTERM.
    A watchdog kills it if it does not start or stop in time. ``session``: in a session
    of its own, so that what it leaves behind (emit's writer process) is ended too."""

    url: str
    """Where it serves, read from its first lines by the subclass."""

    def __init__(
        self,
        command: list[str],
        last_line: Callable[[str], bool],
        *,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
        session: bool = False,
    ) -> None:
        self.session = session
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=session,
        )
        watchdog = threading.Timer(START_TIMEOUT, self.proc.kill)
        watchdog.start()
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if last_line(line):
                break
        watchdog.cancel()
        if self.proc.poll() is not None:
            if session:
                session_ends(self.proc.pid, within=10.0)
            raise RuntimeError("server exited at start:\n" + "\n".join(self.lines))
        self.rest: list[str] = []
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        self.rest.extend(line.rstrip("\n") for line in self.proc.stdout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def value(self, label: str) -> str:
        """The word after ``label`` on the first of its first lines that starts with it."""
        line = next(line for line in self.lines if line.strip().startswith(label))
        return line.split()[len(label.split())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.session:
            session_ends(self.proc.pid, within=10.0)
        self._drain.join(timeout=5)


class EmitServer(Served):
    """``python -m emit serve`` (the ``emit`` command) on a fresh data directory, no rate
    limit, its admin key its own; the keys read from its first lines. It serves the emit
    of ``tree`` (the working directory: this tree by default); ``session`` as `Served`."""

    def __init__(
        self,
        data: Path,
        prefix: list[str] | None = None,
        *extra: str,
        tree: Path = ROOT,
        session: bool = False,
    ) -> None:
        command = [*(prefix or [sys.executable, "-m"]), "emit", "serve", "--data", str(data)]
        command += ["--port", "0", "--rate-limit", "1000000", *extra]
        env = {name: value for name, value in os.environ.items() if name != "EMIT_ADMIN_KEY"}
        super().__init__(
            command,
            lambda line: line.startswith("  public token"),
            cwd=tree,
            env=env,
            session=session,
        )
        self.url = self.lines[0].split()[3]
        self.space = self.value("space id")
        self.producer = self.value("producer key").encode()
        self.worker = self.value("worker key").encode()
        self.public = self.value("public token")
        self.jobs = f"/api/v1/spaces/{self.space}/jobs"


class Beanstalkd:
    """beanstalkd on a free loopback port with its binlog on, in a fresh directory
    (``flags``: ``["-f0"]`` fsyncs every write; by default at most every 50 ms)."""

    def __init__(self, flags: list[str], binary: str | None = None) -> None:
        self.binlog = tempfile.mkdtemp(prefix="emit-bench-beanstalkd-")
        self.port = free_port()
        binary = binary or shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
        self.proc = subprocess.Popen(
            [binary, "-l", "127.0.0.1", "-p", str(self.port), "-b", self.binlog, *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                _, error = self.proc.communicate()
                self.stop()
                raise RuntimeError(f"beanstalkd exited: {error!r}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("beanstalkd did not start listening") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.binlog, ignore_errors=True)
