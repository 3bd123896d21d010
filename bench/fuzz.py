"""A long Schemathesis run against a real server, by hand:

    .venv/bin/python -m bench.fuzz [--seconds 180] [--examples 25]

The bounded form runs in ``make test`` (tests/http/test_fuzzing.py). This one goes round
every operation of the served OpenAPI document again and again, with valid and invalid
inputs (Schemathesis's positive and negative modes), real keys and real job ids, until
the time is up, and prints what it saw: requests, answers by status class, 5xx, hung
requests (no answer within 10 s), connection errors, and answers that do not match the
document.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable

from tests.http.fuzzing import CALL_TIMEOUT, FuzzTarget, fuzz_schema, fuzz_target
from tests.http.test_fuzzing import CHECKS


def fuzz_operation(
    target: FuzzTarget,
    session: requests.Session,
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: schemathesis.GenerationMode,
    examples: int,
    seen: Counter[str],
    samples: dict[str, str],
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        headers = target.prepare(case)
        label = f"{case.method} {case.path}"
        try:
            response = case.call(
                base_url=target.url, session=session, headers=headers, timeout=CALL_TIMEOUT
            )
        except requests.Timeout:
            seen["hung"] += 1
            samples.setdefault(f"hung: {label}", repr(case.body)[:200])
            return
        except requests.ConnectionError as error:
            seen["connection errors"] += 1
            samples.setdefault(f"connection error: {label}", str(error)[:200])
            return
        seen["requests"] += 1
        seen[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            samples.setdefault(f"{response.status_code}: {label}", response.text[:200])
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as error:  # a mismatch: count, show one
            seen["document mismatches"] += 1
            samples.setdefault(f"mismatch: {label}", str(error).splitlines()[0][:200])

    with contextlib.suppress(Unsatisfiable):  # nothing to make invalid: the mode is moot
        run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--examples", type=int, default=25, help="per operation and mode, a round")
    args = parser.parse_args()
    schema = fuzz_schema()
    operations = [result.ok() for result in schema.get_all_operations()]
    seen: Counter[str] = Counter()
    samples: dict[str, str] = {}
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    started = time.monotonic()
    rounds = 0
    with (
        tempfile.TemporaryDirectory() as data,
        fuzz_target(Path(data) / "data") as target,
        requests.Session() as session,
    ):
        while time.monotonic() - started < args.seconds:
            for operation in operations:
                for mode in modes:
                    fuzz_operation(target, session, operation, mode, args.examples, seen, samples)
            rounds += 1
    elapsed = time.monotonic() - started
    print(f"{len(operations)} operations, {rounds} rounds in {elapsed:.0f} s")
    for name in ("requests", "2xx", "4xx", "5xx", "hung", "connection errors",
                 "document mismatches"):  # fmt: skip
        print(f"  {name:20} {seen[name]:>8,}")
    for what, sample in sorted(samples.items()):
        print(f"  {what}\n      {sample}")


if __name__ == "__main__":
    main()
