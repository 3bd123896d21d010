"""The worker wake (spec §7): a space with a pushUrl gets a best-effort POST whenever a
job becomes pending, filtered by job name; settings are validated."""

import json

import httpx
import pytest
import trio
from trio.testing import MockClock

import emit

from .test_sending import Receiver

PUSH = "https://wake.example.com/emit"


async def test_a_job_becoming_pending_wakes_the_push_url(autojump_clock: MockClock) -> None:
    receiver = Receiver()
    async with emit.open_runtime(
        None, callback_transport=httpx.MockTransport(receiver), allow_private_callbacks=True
    ) as rt:
        space = await rt.create_space("s")
        jobs = rt.space(space.id)
        await rt.update_space(space.id, {"pushUrl": PUSH, "pushHeaders": {"X-Key": "k"},
                                         "pushNames": ["video"]})  # fmt: skip
        video = await jobs.create("video")
        await jobs.create("email")  # filtered out
        await receiver.arrived.wait()
        await trio.sleep(1)
        [(_, request)] = receiver.requests
        assert json.loads(request.content) == {
            "event": "job.pending", "jobId": video.id, "spaceId": space.id, "name": "video",
        }  # fmt: skip
        assert request.headers["x-key"] == "k"
        # A failed attempt put back to pending wakes it again.
        await jobs.claim(video.id)
        await jobs.fail(video.id, "retry me")
        await trio.sleep(1)
        assert len(receiver.requests) == 2
        # Removing the URL stops the wakes.
        await rt.update_space(space.id, {"pushUrl": None})
        await jobs.create("video")
        await trio.sleep(1)
        assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"pushUrl": "ftp://x"}, "pushUrl"),
        ({"pushHeaders": {"a": 1}}, "pushHeaders"),
        ({"pushNames": "video"}, "pushNames"),
        ({"signingSecret": "short"}, "signingSecret"),
        ({"color": "red"}, "color"),
    ],
)
async def test_bad_settings_are_refused_and_change_nothing(
    settings: dict[str, object], field: str
) -> None:
    async with emit.open_runtime(None) as rt:
        space = await rt.create_space("s")
        with pytest.raises(emit.InvalidRequest) as caught:
            await rt.update_space(space.id, settings)
        assert caught.value.field == field
        assert (await rt.get_space(space.id)).settings == {}
