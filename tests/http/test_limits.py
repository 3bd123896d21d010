"""Limits: the body limit (413), malformed input (400 naming the field), and the per-key
rate limit (429 with Retry-After) — each refusal changes nothing."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emit.http.ratelimit import RateLimiter
from emit.http.settings import HttpSettings

from .conftest import ADMIN_KEY, Server, start_server


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=5, max_body=4096, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


async def test_a_body_over_the_limit_is_413_and_creates_nothing(strict: Server) -> None:
    path = f"/api/v1/spaces/{strict.space}/jobs"
    big = {"name": "j", "payload": "x" * 5000}
    response = await strict.client.post(path, json=big, headers=strict.headers("producer"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert (await strict.rt.space(strict.space).list())[1] == 0


async def test_malformed_json_and_wrong_fields_are_400(strict: Server) -> None:
    path = f"/api/v1/spaces/{strict.space}/jobs"
    headers = {**strict.headers("producer"), "content-type": "application/json"}
    broken = await strict.client.post(path, content=b'{"name": ', headers=headers)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    wrong = await strict.client.post(path, json={"name": "j", "timeoutSeconds": "soon"},
                                     headers=headers)  # fmt: skip
    assert wrong.status_code == 400 and "timeoutSeconds" in wrong.json()["error"]["message"]


async def test_the_rate_limit_answers_429_with_retry_after(strict: Server) -> None:
    path = f"/api/v1/spaces/{strict.space}/stats"
    statuses = []
    for _ in range(8):
        response = await strict.client.get(path, headers=strict.headers("producer"))
        statuses.append(response.status_code)
    assert statuses[:5] == [200] * 5  # a burst of one second's worth
    assert 429 in statuses[5:]
    limited = next(r for r in [await strict.client.get(path, headers=strict.headers("producer"))]
                   if r.status_code == 429)  # fmt: skip
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    # Another key has its own bucket.
    other = await strict.client.get(path, headers=strict.headers("worker"))
    assert other.status_code == 200


def test_the_token_bucket_refills_at_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=10)
    assert [limiter.take("k", 0.0) for _ in range(10)] == [0.0] * 10
    assert limiter.take("k", 0.0) == pytest.approx(0.1)
    assert limiter.take("k", 0.05) == pytest.approx(0.05)  # half a token came back
    assert limiter.take("k", 0.2) == 0.0
    assert limiter.take("other", 0.0) == 0.0


def test_a_key_with_its_own_rate_gets_its_own_bucket_size() -> None:
    limiter = RateLimiter(rate=1000, burst=1000)
    assert limiter.take("slow", 0.0, rate=0.5) == 0.0  # a burst of one request
    assert limiter.take("slow", 0.0, rate=0.5) == pytest.approx(2.0)
    assert limiter.take("slow", 1.0, rate=0.5) == pytest.approx(1.0)  # half a token back
    assert limiter.take("slow", 2.0, rate=0.5) == 0.0
    assert limiter.take("fast", 0.0) == 0.0


def test_forgetting_idle_keys_never_hands_a_slow_key_an_early_request() -> None:
    limiter = RateLimiter(rate=1000, burst=1000)
    assert limiter.take("slow", 0.0, rate=0.01) == 0.0  # its next token in 100 s
    for n in range(100_001):  # past the point where idle buckets are forgotten
        limiter.take(f"k{n}", 10.0)
    assert limiter.take("slow", 10.0, rate=0.01) == pytest.approx(90.0)


async def test_a_space_rate_limit_setting_holds_for_its_keys_at_once(server: Server) -> None:
    """Spec §7: a space's settings include its rate limit. The server allows a million
    requests a second here; the space asks for one a hundred seconds."""
    space = f"/api/v1/spaces/{server.space}"
    admin = server.headers("admin")
    patched = await server.client.patch(space, json={"rateLimit": 0.01}, headers=admin)
    assert patched.status_code == 200 and patched.json()["settings"]["rateLimit"] == 0.01
    stats = f"{space}/stats"
    assert (await server.client.get(stats, headers=server.headers("worker"))).status_code == 200
    limited = await server.client.get(stats, headers=server.headers("worker"))
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 99
    other = f"/api/v1/spaces/{server.other_space}/stats"  # another space: the server's rate
    for _ in range(3):
        assert (await server.client.get(other, headers=server.headers("other"))).status_code == 200
    cleared = await server.client.patch(space, json={"rateLimit": None}, headers=admin)
    assert "rateLimit" not in cleared.json()["settings"]
    assert (await server.client.get(stats, headers=server.headers("worker"))).status_code == 200
    for bad in (0, -1, True, "fast", 2_000_000):
        refused = await server.client.patch(space, json={"rateLimit": bad}, headers=admin)
        assert refused.status_code == 400 and "rateLimit" in refused.json()["error"]["message"]
