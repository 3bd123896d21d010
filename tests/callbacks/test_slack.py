"""Slack notifications (a space's ``slackUrl`` and ``slackEvents``): the chosen job
events arrive at a real receiver on loopback as Slack messages and the others do not; a
failing receiver is retried with the webhooks' backoff (on the autojump clock, with
httpx.MockTransport); bad settings are refused and change nothing."""

import itertools
import json

import httpx
import pytest
import trio
from trio.testing import MockClock

import emit
from emit.callbacks.policy import CallbackPolicy

from .test_receivers import FAST, Hook, hook  # noqa: F401 (the fixture)
from .test_sending import Receiver

SLACK = "https://hooks.slack.example.com/services/T0/B0/x"


async def test_the_chosen_events_reach_a_real_receiver_and_the_others_do_not(
    hook: tuple[Hook, str],  # noqa: F811
) -> None:
    receiver, base = hook
    receiver.script["/slack"] = [500]  # the first try fails: retried
    with trio.fail_after(30):
        async with emit.open_runtime(
            None, allow_private_callbacks=True, callback_policy=FAST
        ) as rt:
            space = await rt.create_space("billing")
            await rt.update_space(
                space.id,
                {"slackUrl": f"{base}/slack", "slackEvents": ["failed", "completed", "killed"]},
            )
            jobs = rt.space(space.id)
            flaky = await jobs.create("email", max_retries=2)  # created: not chosen
            await jobs.claim(flaky.id)
            await jobs.ack(flaky.id)  # started: not chosen
            await jobs.fail(flaky.id, "smtp down")
            await jobs.claim(flaky.id)
            await jobs.complete(flaky.id, {"sent": 1})
            doomed = await jobs.create("report")
            await jobs.kill(doomed.id, "not needed")
            await receiver.wait_for("/slack", 4)  # three notices, one of them twice
            # A last one, told long after anything unchosen would have been.
            last = await jobs.create("last")
            await jobs.kill(last.id)
            await receiver.wait_for("/slack", 5)
    texts = [json.loads(body)["text"] for path, _, body in receiver.arrivals]
    assert sorted(set(texts)) == sorted(
        [
            f"[billing] Job email ({flaky.id}) failed: smtp down",
            f"[billing] Job email ({flaky.id}) completed",
            f"[billing] Job report ({doomed.id}) was killed: not needed",
            f"[billing] Job last ({last.id}) was killed",
        ]
    )
    assert len(texts) == 5
    _, headers, _ = receiver.arrivals[0]
    assert headers["content-type"] == "application/json"


async def test_a_failing_receiver_is_retried_with_backoff_then_given_up(
    autojump_clock: MockClock,
) -> None:
    receiver = Receiver(statuses=[500, 503, 500, 502, 200])
    async with emit.open_runtime(
        None,
        callback_policy=CallbackPolicy(tries=4, timeout=5),
        callback_transport=httpx.MockTransport(receiver),
        allow_private_callbacks=True,  # no DNS here: the mock answers for every host
    ) as rt:
        space = await rt.create_space("s")
        await rt.update_space(space.id, {"slackUrl": SLACK, "slackEvents": ["dead"]})
        jobs = rt.space(space.id)
        job = await jobs.create("sync", max_retries=0)
        await jobs.claim(job.id)
        await jobs.fail(job.id, "boom")
        await trio.sleep(60)  # the tries' waits: about 1, 3 and 9 s
        assert len(receiver.requests) == 4
        times = [at for at, _ in receiver.requests]
        for wait, base in zip(itertools.pairwise(times), [1, 3, 9], strict=True):
            assert base * 0.8 <= wait[1] - wait[0] <= base * 1.2 + 0.1
        await trio.sleep(3600)
        assert len(receiver.requests) == 4  # given up after the policy's last try
        assert json.loads(receiver.requests[0][1].content) == {
            "text": f"[s] Job sync ({job.id}) is dead (no attempts left): boom"
        }
        assert str(receiver.requests[0][1].url) == SLACK


async def test_a_retry_that_succeeds_ends_it_and_removing_the_url_stops_the_notices(
    autojump_clock: MockClock,
) -> None:
    receiver = Receiver(statuses=[500])
    async with emit.open_runtime(
        None, callback_transport=httpx.MockTransport(receiver), allow_private_callbacks=True
    ) as rt:
        space = await rt.create_space("s")
        await rt.update_space(space.id, {"slackUrl": SLACK})  # the outcomes, by default
        jobs = rt.space(space.id)
        job = await jobs.create("x")
        await jobs.kill(job.id)
        await trio.sleep(600)
        assert len(receiver.requests) == 2  # 500, then 200: done
        await rt.update_space(space.id, {"slackUrl": None})
        await jobs.kill((await jobs.create("y")).id)
        await trio.sleep(600)
        assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"slackUrl": "slack.com/hook"}, "slackUrl"),
        ({"slackUrl": "http://127.0.0.1/hook"}, "slackUrl"),  # private, not allowed here
        ({"slackUrl": SLACK, "slackEvents": ["done"]}, "slackEvents"),
    ],
)
async def test_bad_slack_settings_are_refused_and_change_nothing(
    settings: dict[str, object], field: str
) -> None:
    async with emit.open_runtime(None) as rt:
        space = await rt.create_space("s")
        await rt.update_space(space.id, {"rateLimit": 5})
        with pytest.raises(emit.InvalidRequest) as caught:
            await rt.update_space(space.id, settings)
        assert caught.value.field == field
        assert (await rt.get_space(space.id)).settings == {"rateLimit": 5}
