"""bench.cluster (run by hand) in its parts that need no cluster, so they cannot rot:
the CPU it reads from /proc, and the projection it makes from the windows."""

import os
import subprocess
import sys
import threading

import pytest

from bench.cluster import Config, Window, family_cpu, project, session_cpu


def test_a_session_and_a_family_count_their_processes_cpu() -> None:
    spin = (
        "import sys, time\nend = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\nprint('spun', flush=True)\nsys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", spin],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timer = threading.Timer(60, child.kill)  # bounded: a stuck child fails the test
    timer.start()
    try:
        assert child.stdout is not None and child.stdout.readline() == "spun\n"
        assert session_cpu(child.pid) >= 0.29
        assert family_cpu(os.getpid()) >= session_cpu(child.pid)
    finally:
        timer.cancel()
        child.kill()
        child.wait(timeout=30)


def window(jobs: int, node_cpu: float, postgres_cpu: float) -> Window:
    return Window(jobs, 1.0, node_cpu, postgres_cpu, 0.0, 0.0)


def test_the_projection_charges_the_forwarded_share_the_hop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configs = [
        Config("1", [object()] * 1, [], "pg", [window(1000, 0.100, 0.050)]),  # type: ignore[list-item]
        Config("3", [object()] * 3, [], "pg", [window(1000, 0.200, 0.050)]),  # type: ignore[list-item]
    ]
    project(configs)
    out = capsys.readouterr().out
    assert "a forwarded job costs 150 µs more" in out  # (200 - 100) / (2/3)
    rows = {
        line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:8].strip().isdigit()
    }
    assert rows["1"] == ["100", "10,000", "0.5"]
    assert rows["2"] == ["175", "11,429", "0.6"]  # 100 + 150/2 µs a job over 2 cores
