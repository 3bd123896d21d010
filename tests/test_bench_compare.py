"""bench.compare's pure parts (the bench itself runs by hand, against real peers): which
systems ``--only`` picks, the rates and CPU a result reports, and its ratios to emit."""

import os

import pytest

from bench.compare import SYSTEMS, Result, process_tree, ratios, selected


def result(key: str, enqueue_s: float, drain_s: float, client_cpu_s: float | None) -> Result:
    return Result(key, 1000, enqueue_s, drain_s, 0.05, client_cpu_s, 0, 2_000_000, [1.0, 3.0])


def test_only_names_a_system_or_the_systems_it_prefixes() -> None:
    assert selected(None) == list(SYSTEMS)
    assert selected("rq") == ["rq-everysec", "rq-always"]
    assert selected("beanstalkd-f0, emit") == [
        "emit-embedded",
        "emit-http",
        "emit-http-batched",
        "beanstalkd-f0",
    ]
    assert selected("emit-http") == ["emit-http"]
    with pytest.raises(ValueError, match="unknown system bull"):
        selected("bull")


def test_a_result_reports_rates_and_cpu_per_job() -> None:
    done = result("rq-everysec", 0.5, 1.5, 0.1)
    assert (done.enqueue_rate, done.drain_rate, done.combined_rate) == (2000, 1000 / 1.5, 500)
    assert (done.server_us, done.client_us) == pytest.approx((50, 100))
    assert done.total_us == pytest.approx(150)
    assert done.growth_per_job == 2000
    assert (done.p50, done.p99) == (3.0, 3.0)
    embedded = result("emit-embedded", 1, 1, None)
    assert embedded.client_us == 0 and embedded.total_us == pytest.approx(50)


def test_ratios_divide_by_the_reference() -> None:
    reference = result("emit-http-batched", 1.0, 1.0, 0.05)
    twice_as_fast = result("beanstalkd-default", 0.5, 0.5, 0.0)
    cells = ratios(twice_as_fast, reference).split()
    assert cells[-7:] == ["2.00x", "2.00x", "2.00x", "1.00x", "1.00x", "0.50x", "1.00x"]


def test_the_process_tree_starts_at_the_process() -> None:
    assert process_tree(os.getpid())[0] == os.getpid()
