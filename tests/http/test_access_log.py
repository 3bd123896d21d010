"""The access log: a line per request on ``emit.access`` at INFO with the method, the
route template (never the path), the status, the milliseconds and the key's id (never
the key), and a line when a WebSocket opens and when it closes; its JSON form carries
them as keys."""

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from emit.serverlog import JsonFormatter, TextFormatter

from .conftest import Server


class Lines(logging.Handler):
    """The access lines, and an event set once ``wanted`` of them are written (a line
    is written once its answer is out: after the client has it)."""

    def __init__(self, wanted: int) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.wanted = wanted
        self.enough = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if len(self.records) >= self.wanted:
            self.enough.set()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[Lines]:
    caplog.set_level(logging.INFO, "emit.access")
    handler = Lines(0)
    logging.getLogger("emit.access").addHandler(handler)
    yield handler
    logging.getLogger("emit.access").removeHandler(handler)


async def test_a_request_is_one_line_with_its_route_template_status_and_key_id(
    server: Server, lines: Lines
) -> None:
    lines.wanted = 6
    with trio.fail_after(10):
        made = await server.client.post(
            f"/api/v1/spaces/{server.space}/jobs",
            json={"name": "a"},
            headers=server.headers("producer"),
        )
        job = made.json()["id"]
        await server.client.get(f"/api/v1/jobs/{job}", headers=server.headers("producer"))
        await server.client.get(
            f"/api/v1/spaces/{server.space}/tokens", headers=server.headers("admin")
        )
        await server.client.get(f"/api/v1/jobs/{job}", headers=server.headers("unknown"))
        await server.client.get("/healthz")
        await server.client.get("/no/such/path")
        await lines.enough.wait()
    producer = (await server.rt.authenticate(server.keys["producer"])).id  # type: ignore[union-attr]
    got = [r.fields for r in lines.records]  # type: ignore[attr-defined]
    for fields in got:
        assert isinstance(fields.pop("ms"), float)
    assert got == [
        {"method": "POST", "route": "/api/v1/spaces/<space_id>/jobs", "status": 201, "key": producer},
        {"method": "GET", "route": "/api/v1/jobs/<job_id>", "status": 200, "key": producer},
        {"method": "GET", "route": "/api/v1/spaces/<space_id>/tokens", "status": 200, "key": "admin"},
        {"method": "GET", "route": "/api/v1/jobs/<job_id>", "status": 401, "key": "-"},
        {"method": "GET", "route": "/healthz", "status": 200, "key": "-"},
        {"method": "GET", "route": "-", "status": 404, "key": "-"},
    ]  # fmt: skip
    text = "\n".join(r.getMessage() for r in lines.records)
    assert job not in text and server.space not in text  # templates, not paths
    assert all(key not in text for key in server.keys.values())  # ids, never keys
    assert all(r.levelno == logging.INFO for r in lines.records)


async def test_a_websocket_is_logged_as_it_opens_and_as_it_closes(
    server: Server, lines: Lines
) -> None:
    lines.wanted = 4
    reader = server.keys["producer"]
    ws_url = server.url.replace("http://", "ws://")
    url = f"{ws_url}/api/v1/realtime/spaces/{server.space}?token={reader}"
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            await ws.get_message()  # connected
        refused = f"{ws_url}/api/v1/realtime/spaces/{server.space}?token=nope"
        async with open_websocket_url(refused) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        await lines.enough.wait()  # the close is logged as the handler ends
    producer = (await server.rt.authenticate(reader)).id  # type: ignore[union-attr]
    route = "/api/v1/realtime/spaces/<space_id>"
    got = [r.fields for r in lines.records]  # type: ignore[attr-defined]
    assert [(f["event"], f["route"], f["key"], f.get("by")) for f in got] == [
        ("open", route, producer, None),
        ("close", route, producer, "client"),
        ("open", route, "-", None),
        ("close", route, "-", "server"),
    ]
    assert got[3]["status"] == 4401 and isinstance(got[3]["ms"], float)
    assert all(reader not in r.getMessage() for r in lines.records)


def test_the_json_form_has_the_access_fields_as_keys_and_the_text_form_reads_as_a_line() -> None:
    record = logging.LogRecord("emit.access", logging.INFO, __file__, 1,
                               "%s %s %d %.2fms key=%s",
                               ("GET", "/healthz", 200, 0.5, "-"), None)  # fmt: skip
    record.fields = {"method": "GET", "route": "/healthz", "status": 200, "ms": 0.5, "key": "-"}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    shown = orjson.loads(line)
    assert set(shown) == {"time", "level", "logger", "message", "method", "route", "status",
                          "ms", "key"}  # fmt: skip
    assert shown["level"] == "INFO" and shown["logger"] == "emit.access"
    assert shown["time"].endswith("Z") and shown["status"] == 200
    text = TextFormatter().format(record)
    assert text.endswith(" INFO emit.access GET /healthz 200 0.50ms key=-")


def test_configure_sets_the_level_and_the_form(monkeypatch: pytest.MonkeyPatch) -> None:
    from emit.serverlog import configure

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    configure("warning", "json", stream)
    logging.getLogger("emit.access").info("not written")
    logging.getLogger("emit.store").warning("the store %s", "fails")
    [line] = stream.getvalue().splitlines()
    assert orjson.loads(line)["message"] == "the store fails"
    with pytest.raises(ValueError):
        configure("loud", "text")
