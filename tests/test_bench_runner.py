"""bench.runner (run by hand) at a tiny size, so it cannot rot: every worker it times
drains its jobs from a real ``emit serve``, and its report's ratios are the rates'."""

import trio

from bench.runner import Run, Variant, main, parser, report, variants


async def test_every_variant_drains_its_jobs_from_a_real_server() -> None:
    args = parser().parse_args(
        ["--rounds", "2", "--seconds", "0", "--warmup-jobs", "3", "--min-jobs", "4"]
    )
    with trio.fail_after(120):  # main runs trio itself: in a thread of its own
        lines = await trio.to_thread.run_sync(main, args, abandon_on_cancel=True)
    text = "\n".join(lines)
    for label in ("loop httpx", "loop raw", "runner 1 sync", "runner 1 async"):
        assert text.count(f"    {label} ") == 2  # with progress and without
    assert text.count("runner 16 sync / loop httpx:") == 2
    assert text.count("runner 16 async / loop httpx:") == 2


def test_the_report_divides_by_the_loop_round_by_round() -> None:
    loop = [Run(100, 1.0, 400, 0.5, 0.2), Run(100, 2.0, 400, 0.5, 0.2)]
    fast = [Run(400, 1.0, 560, 0.7, 0.7), Run(400, 1.0, 560, 0.7, 0.7)]
    lines = report({Variant("httpx", 1, True): loop, Variant("sync", 16, True): fast}, rounds=2)
    [row] = [line for line in lines if line.startswith("    runner 16 sync  ")]
    assert row.split()[3:9] == ["400", "400", "-", "400", "6.00x", "1.40"]  # 4x, 8x: median 6x
    [verdict] = [line for line in lines if "/ loop httpx" in line]
    assert "6.00x paired by round (5.33x by medians)" in verdict and verdict.endswith("✓")


def test_the_variants_are_the_loops_and_each_concurrency_and_handler() -> None:
    labels = [v.label for v in variants([1, 16], [True])]
    assert labels == [
        "loop httpx",
        "loop raw",
        "runner 1 sync",
        "runner 1 async",
        "runner 16 sync",
        "runner 16 async",
    ]
