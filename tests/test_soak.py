"""The soak's checks (``bench/soak.py``, run by hand): they read a real store, and each
kind of violation they exist for is caught. A checker that cannot fail proves nothing."""

from pathlib import Path

import trio

import emit
from bench.soak import Ledger, Stored, double_leased, judge, read_store


async def test_the_store_is_read_with_every_history(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with emit.open_runtime(tmp_path, allow_private_callbacks=True) as rt:
            space = await rt.create_space("soak")
            jobs = rt.space(space.id)
            done = await jobs.create("w")
            # Never final, so never sent: its history stays as written here.
            waiting = await jobs.create("w", callback_url="http://127.0.0.1:9/hook")
            [delivery] = await jobs.poll(ack=True)
            assert delivery.id == done.id
            await jobs.complete(done.id, {"n": 1}, lease_id=delivery.lease_id)
    stored = read_store(tmp_path / "emit.db")
    assert stored[done.id] == Stored(
        "completed",
        {"n": 1},
        False,
        [(1, "created"), (2, "delivered"), (3, "started"), (4, "completed")],
    )
    assert stored[waiting.id] == Stored("pending", None, True, [(1, "created")])


def test_a_second_delivery_under_a_live_lease_is_caught() -> None:
    assert not double_leased([(1, "created"), (2, "delivered"), (3, "delivery_timeout"),
                              (4, "delivered"), (5, "started"), (6, "retried"),
                              (7, "delivered"), (8, "completed")])  # fmt: skip
    assert double_leased([(1, "created"), (2, "delivered"), (3, "started"), (4, "delivered")])


def test_every_kind_of_violation_is_caught() -> None:
    ledger = Ledger()
    ledger.add(created=["kept", "lost", "done", "undone"])
    ledger.add(completed={"done": {"n": 1}, "undone": {"n": 2}})
    history = [(1, "created"), (2, "delivered"), (3, "completed")]
    jobs = {
        "kept": Stored("dead", {"error": "timeout"}, True, [(1, "created"), (2, "dead")]),
        "done": Stored("completed", {"n": 1}, True, history),
        "undone": Stored("completed", {"n": 3}, False, history),
        "twice": Stored(
            "running", None, False, [(1, "created"), (2, "delivered"), (3, "delivered")]
        ),
        "gap": Stored("pending", None, False, [(1, "created"), (3, "retried")]),
    }
    delivered = {("done", "completed"), ("gap", "completed")}
    verdict = judge(jobs, ledger, delivered)
    assert verdict.lost_creates == ["lost"]
    assert verdict.lost_completes == ["undone"]  # completed, but not with its result
    assert verdict.double_leases == ["twice"]
    assert verdict.gaps == ["gap"]
    assert verdict.due == {("kept", "dead"), ("done", "completed")}
    assert verdict.undelivered == [("kept", "dead")]
    assert verdict.phantom == [("gap", "completed")]
    assert verdict.violations == 6

    clean = judge({"done": jobs["done"]}, Ledger(), {("done", "completed")})
    assert clean.violations == 0
