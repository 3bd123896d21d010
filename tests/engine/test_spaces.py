"""Spaces and tokens: made with a public token, keys shown once and stored hashed,
scopes from one pure module, revocation, deletion."""

import pytest
import trio
from trio.testing import MockClock

import emit
from emit.ids import hash_key
from emit.realtime.hub import Key
from emit.store.records import Changes


async def test_a_space_is_made_with_a_public_progress_token(rt: emit.Runtime) -> None:
    space = await rt.create_space("email-jobs")
    assert len(space.id) == 26 and space.name == "email-jobs"
    assert space.public_token.startswith("emit_pub_")
    token = await rt.authenticate(space.public_token)
    assert token is not None and token.public
    assert token.scopes == frozenset({"jobs:read:progress"})
    assert [s.id for s in await rt.list_spaces()] == [space.id]


async def test_a_key_is_shown_once_and_only_its_hash_is_kept(rt: emit.Runtime) -> None:
    space = await rt.create_space("s")
    made = await rt.create_token(space.id, name="worker-1", preset="worker")
    assert made.key.startswith("emit_") and len(made.key) >= 5 + 32
    assert made.scopes == frozenset(
        {"jobs:read", "jobs:poll", "jobs:ack", "jobs:progress", "jobs:event",
         "jobs:complete", "jobs:fail", "jobs:keepalive", "jobs:read:progress"}
    )  # fmt: skip
    [_public, listed] = sorted(await rt.list_tokens(space.id), key=lambda t: t.public)[::-1]
    assert listed.id == made.id and listed.key_hash == hash_key(made.key)
    assert made.key.startswith(listed.prefix) and len(listed.prefix) < len(made.key)
    kept = await rt.store.list_tokens(space.id)
    assert made.key not in repr(kept)  # the secret itself is nowhere in the store


async def test_scopes_expand_shorthands_and_refuse_unknown_ones(rt: emit.Runtime) -> None:
    space = await rt.create_space("s")
    made = await rt.create_token(space.id, name="p", scopes=["jobs:create", "jobs:read"])
    assert made.scopes == frozenset({"jobs:create", "jobs:read", "jobs:read:progress"})
    with pytest.raises(emit.InvalidRequest, match="unknown scope"):
        await rt.create_token(space.id, name="x", scopes=["jobs:everything"])
    with pytest.raises(emit.InvalidRequest, match="either scopes or preset"):
        await rt.create_token(space.id, name="x", scopes=["jobs:read"], preset="worker")
    with pytest.raises(emit.InvalidRequest, match="unknown preset"):
        await rt.create_token(space.id, name="x", preset="admin")


async def test_a_revoked_key_no_longer_authenticates(rt: emit.Runtime) -> None:
    space = await rt.create_space("s")
    made = await rt.create_token(space.id, name="w", preset="worker")
    assert await rt.authenticate(made.key) is not None
    await rt.revoke_token(space.id, made.id)
    assert await rt.authenticate(made.key) is None
    assert await rt.authenticate("emit_" + "x" * 43) is None
    with pytest.raises(emit.NotFound):
        await rt.revoke_token(space.id, "01NOSUCHTOKEN0000000000000")


async def test_deleting_a_space_removes_its_jobs_and_keys(rt: emit.Runtime) -> None:
    keep = rt.space((await rt.create_space("keep")).id)
    doomed_space = await rt.create_space("doomed")
    doomed = rt.space(doomed_space.id)
    made = await rt.create_token(doomed_space.id, name="w", preset="worker")
    job = await doomed.create("j")
    kept = await keep.create("j")
    await rt.delete_space(doomed_space.id)
    assert [s.name for s in await rt.list_spaces()] == ["keep"]
    assert await rt.authenticate(made.key) is None
    with pytest.raises(emit.NotFound):
        await doomed.create("j")
    with pytest.raises(emit.NotFound):
        await doomed.get(job.id)
    assert (await keep.get(kept.id)).status == "pending"
    with pytest.raises(emit.NotFound):
        await rt.delete_space(doomed_space.id)


async def test_space_settings_are_validated(rt: emit.Runtime) -> None:
    space = await rt.create_space("s")
    with pytest.raises(emit.InvalidRequest, match="factor"):
        await rt.update_space(space.id, {"retryBackoff": {"factor": 0}})
    with pytest.raises(emit.InvalidRequest, match="unknown setting"):
        await rt.update_space(space.id, {"colour": "red"})
    with pytest.raises(emit.InvalidRequest, match="name"):
        await rt.create_space("")


async def test_a_settings_update_changes_only_what_it_names(rt: emit.Runtime) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    await rt.update_space(space.id, {"retryBackoff": {"initialSeconds": 30}})
    updated = await rt.update_space(space.id, {})  # names nothing: changes nothing
    assert updated.settings["retryBackoff"] == {
        "initialSeconds": 30, "factor": 2, "maxSeconds": 3600,
    }  # fmt: skip
    job = await jobs.create("j")
    await jobs.poll()
    assert (await jobs.fail(job.id, "x")).status == "scheduled"  # the backoff still applies
    cleared = await rt.update_space(space.id, {"retryBackoff": None})
    assert "retryBackoff" not in cleared.settings


async def test_deleting_a_space_answers_its_parked_polls_with_no_jobs(
    autojump_clock: MockClock, rt: emit.Runtime
) -> None:
    space = await rt.create_space("s")
    answers: list[list[emit.Delivery]] = []

    async def long_poll() -> None:
        answers.append(await rt.space(space.id).poll(wait=60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await trio.sleep(1)
        await rt.delete_space(space.id)
    assert answers == [[]]


async def test_a_request_during_a_delete_does_not_bring_the_space_back(
    rt: emit.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    await jobs.create("before")
    at_commit, go = trio.Event(), trio.Event()
    commit = rt._commit

    async def delete_after_a_request(changes: Changes) -> None:
        if changes.deleted_spaces:
            at_commit.set()  # the actor is stopped; the delete is not committed yet
            await go.wait()
        await commit(changes)

    monkeypatch.setattr(rt, "_commit", delete_after_a_request)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rt.delete_space, space.id)
            await at_commit.wait()
            with pytest.raises(emit.NotFound):
                await jobs.create("between")
            assert rt.spaces.whereis(space.id) is None
            go.set()
        assert rt.spaces.whereis(space.id) is None
        with pytest.raises(emit.NotFound):
            await jobs.create("after")
        assert await rt.list_spaces() == []


async def test_a_key_revoked_elsewhere_ends_its_streams_at_the_next_check(
    rt: emit.Runtime,
) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    kept = await rt.create_token(space.id, name="k", preset="worker")
    doomed = await rt.create_token(space.id, name="d", preset="worker")
    job = await jobs.create("j")
    with (
        trio.fail_after(5),
        jobs.stream(None, None, Key(kept.id, hash_key(kept.key))) as kept_stream,
        jobs.job_stream(job.id, True, Key(doomed.id, hash_key(doomed.key))) as doomed_stream,
    ):
        assert await rt.end_revoked_streams() == []
        await rt.store.commit([Changes(revoked_tokens=[(doomed.id, 1.0)])])  # as the CLI does
        assert await rt.end_revoked_streams() == [doomed.id]
        assert doomed_stream.close_code == 4401
        assert kept_stream.subscription.close_code is None
        assert (await jobs.job(job.id)).event_seq == 1  # what a job stream starts from
    assert rt.hub.open_keys() == set()  # each block unsubscribed as it ended
