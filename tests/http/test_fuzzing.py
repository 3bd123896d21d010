"""Schemathesis against a real server, from the OpenAPI document the server serves: with
real keys and real job ids, no answer is a 5xx, none hangs, and every answer matches the
document (status, content type, headers, body schema). Bounded: a few examples per
operation; ``python -m bench.fuzz`` runs the same for as long as you like."""

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from emit.http.openapi import openapi_document

from .fuzzing import CALL_TIMEOUT, FuzzTarget, fuzz_schema, fuzz_target

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
schema = fuzz_schema()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    with fuzz_target(tmp_path_factory.mktemp("fuzz") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as opened:
        yield opened


def test_the_fuzzed_document_is_the_served_one(target: FuzzTarget) -> None:
    served = requests.get(f"{target.url}/api/v1/openapi.json", timeout=CALL_TIMEOUT).json()
    assert served == openapi_document()


@schema.parametrize()  # type: ignore[untyped-decorator]
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_answer_is_a_5xx_hangs_or_breaks_the_document(
    case: schemathesis.Case[Any], target: FuzzTarget, session: requests.Session
) -> None:
    headers = target.prepare(case)
    case.call_and_validate(
        base_url=target.url,
        session=session,
        headers=headers,
        checks=CHECKS,
        timeout=CALL_TIMEOUT,  # a hung request fails here (requests' read timeout)
    )
