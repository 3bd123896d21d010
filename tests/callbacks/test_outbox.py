"""The outbox is the truth, hints only make delivery prompt: a callback whose hint was
lost is still delivered, and a try whose outcome cannot be recorded for a while is
recorded later, not made again and again."""

from __future__ import annotations

import httpx
import pytest
import trio
from trio.testing import MockClock

import emit
from emit.callbacks.sender import RESCAN_SECONDS
from emit.domain.model import Published
from emit.errors import Unavailable
from emit.runtime import Runtime


def _receiver(posts: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        posts.append(request.url.path)
        return httpx.Response(200)

    return httpx.MockTransport(handler)


async def test_a_failing_publish_does_not_lose_the_webhook_hint(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: list[str] = []
    async with emit.open_runtime(
        None, allow_private_callbacks=True, callback_transport=_receiver(posts)
    ) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        await jobs.create("bad", callback_url="https://example.com/bad")
        publish = rt.hub.publish

        def failing(space_id: str, events: list[Published]) -> None:
            if any(event.type == "completed" for event in events):
                monkeypatch.setattr(rt.hub, "publish", publish)  # once
                raise RuntimeError("injected publish bug")
            publish(space_id, events)

        monkeypatch.setattr(rt.hub, "publish", failing)
        monkeypatch.setattr(rt.hub, "watched", lambda space_id: True)
        [delivery] = await jobs.poll()
        await jobs.complete(delivery.id, {"r": 1})  # committed; its publish fails
        await trio.sleep(5)  # well before any rescan
        assert posts == ["/bad"]


async def test_a_callback_whose_hint_was_lost_is_found_in_the_outbox(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: list[str] = []
    monkeypatch.setattr(Runtime, "_notify_callbacks", lambda self, callbacks: None)
    async with emit.open_runtime(
        None, allow_private_callbacks=True, callback_transport=_receiver(posts)
    ) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("lost-hint", callback_url="https://example.com/hook")
        [delivery] = await jobs.poll()
        await jobs.complete(delivery.id)
        await trio.sleep(RESCAN_SECONDS + 5)
        assert posts == ["/hook"]
        view = await jobs.get(job.id)
        assert view.events is not None and view.events[-1].type == "callback_sent"


async def test_a_try_that_cannot_be_recorded_is_recorded_later_not_made_again(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts: list[str] = []
    recording = Runtime._record_callback
    refusing = True

    async def record(self: Runtime, *args: object) -> None:
        if refusing:
            raise Unavailable("storage failed; nothing was accepted")  # a full disk, say
        await recording(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Runtime, "_record_callback", record)
    async with emit.open_runtime(
        None, allow_private_callbacks=True, callback_transport=_receiver(posts)
    ) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j", callback_url="https://example.com/hook")
        [delivery] = await jobs.poll()
        await jobs.complete(delivery.id)
        await trio.sleep(300)  # five minutes in which the outcome cannot be recorded
        assert posts == ["/hook"], f"{len(posts)} POSTs of one webhook"
        refusing = False
        await trio.sleep(120)
        assert posts == ["/hook"]
        view = await jobs.get(job.id)
        assert view.events is not None
        assert [str(e.type) for e in view.events].count("callback_sent") == 1
