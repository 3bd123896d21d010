"""The benches' one HTTP client and one way to start emit: a raw HTTP/1.1 keep-alive
connection on trio (far cheaper in CPU than a general client, so what a bench measures
is the server), and ``emit serve`` in a child process on a fresh data directory."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


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
        await self.stream.send_all(
            b"%s %s HTTP/1.1\r\nhost: %s\r\nx-api-key: %s\r\ncontent-type: application/json"
            b"\r\ncontent-length: %d\r\n\r\n%s"
            % (method, path.encode(), self.host, key, len(body), body)
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
            await self.http.stream.aclose()
            self.http = None

    async def call(self, method: bytes, path: str, key: bytes, body: bytes, status: int) -> bytes:
        if self.http is None or self.http.closing:
            await self.connect()
        assert self.http is not None
        got, answer = await self.http.request(method, path, key, body)
        if got != status:
            raise RuntimeError(f"{method.decode()} {path} -> {got}: {answer[:300]!r}")
        return bytes(answer)

    async def post(self, path: str, key: bytes, body: bytes, status: int) -> bytes:
        return await self.call(b"POST", path, key, body, status)

    async def post_json(self, path: str, key: bytes, body: object, status: int) -> object:
        return json.loads(await self.post(path, key, json.dumps(body).encode(), status))


class Served:
    """A server in a child process: started, its first lines read, stopped with SIGTERM.
    A watchdog kills it if it does not start or stop in time."""

    url: str
    """Where it serves, read from its first lines by the subclass."""

    def __init__(self, command: list[str], last_line: Callable[[str], bool]) -> None:
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.join(timeout=5)


class EmitServer(Served):
    """``python -m emit serve`` (the ``emit`` command, serving this tree's emit) on a
    fresh data directory, no rate limit; the keys read from its first lines."""

    def __init__(self, data: Path, prefix: list[str] | None = None, *extra: str) -> None:
        command = [*(prefix or [sys.executable, "-m"]), "emit", "serve", "--data", str(data)]
        command += ["--port", "0", "--rate-limit", "1000000", *extra]
        super().__init__(command, lambda line: line.startswith("  public token"))
        self.url = self.lines[0].split()[3]
        self.space = self.value("space id")
        self.producer = self.value("producer key").encode()
        self.worker = self.value("worker key").encode()
        self.public = self.value("public token")
        self.jobs = f"/api/v1/spaces/{self.space}/jobs"

    def value(self, label: str) -> str:
        line = next(line for line in self.lines if line.strip().startswith(label))
        return line.split()[len(label.split())]
