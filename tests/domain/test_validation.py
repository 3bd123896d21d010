"""Validation of what callers send: create, poll, progress, backoff, log level, settings.

Every refusal is InvalidRequest (400) naming the wire field (camelCase) in ``.field``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from emit.domain.model import (
    LogLevel,
    RetryBackoff,
    encode_json,
    validate_backoff,
    validate_log_level,
    validate_new_job,
    validate_poll,
    validate_progress,
)
from emit.domain.settings import read_settings, validate_settings
from emit.errors import InvalidRequest
from emit.isotime import iso

NOW = 1_800_000_000.0
HUGE_INT = json.loads("1" + "0" * 400)  # what the JSON parser gives for a long integer


def refused(call: Any, *args: Any, **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        call(*args, **kwargs)
    assert info.value.status == 400
    return info.value


def create(**fields: Any) -> Any:
    fields.setdefault("name", "email.send")
    return validate_new_job(fields, now=NOW)


# ------------------------------------------------------------------------------ create


def test_a_minimal_job_gets_the_documented_defaults() -> None:
    job = validate_new_job({"name": "email.send"}, now=NOW)
    assert job.name == "email.send"
    assert job.payload == "null"
    assert job.priority == 0
    assert job.max_retries == 3
    assert job.timeout_seconds == 300
    assert job.scheduled_for is None
    assert job.callback_url is None
    assert job.callback_headers is None
    assert job.idempotency_key is None
    assert job.retry_backoff is None


def test_a_full_job_keeps_every_field() -> None:
    job = create(
        payload={"to": "ü@example.com", "n": [1, 2]},
        priority=-7,
        maxRetries=10,
        timeoutSeconds=60,
        scheduledFor=iso(NOW + 3600),
        callbackUrl="https://hooks.example.com/done?x=1",
        callbackHeaders={"Authorization": "Bearer t"},
        idempotencyKey="order-42",
        retryBackoff={"initialSeconds": 5, "factor": 3, "maxSeconds": 600},
    )
    assert json.loads(job.payload) == {"to": "ü@example.com", "n": [1, 2]}
    assert job.payload == '{"to":"ü@example.com","n":[1,2]}'  # compact, not ASCII-escaped
    assert (job.priority, job.max_retries, job.timeout_seconds) == (-7, 10, 60)
    assert job.scheduled_for == NOW + 3600
    assert job.callback_url == "https://hooks.example.com/done?x=1"
    assert job.callback_headers == {"Authorization": "Bearer t"}
    assert job.idempotency_key == "order-42"
    assert job.retry_backoff == RetryBackoff(5.0, 3.0, 600.0)


def test_explicit_nulls_mean_the_defaults() -> None:
    job = create(
        payload=None,
        priority=None,
        maxRetries=None,
        timeoutSeconds=None,
        scheduledFor=None,
        callbackUrl=None,
        callbackHeaders=None,
        idempotencyKey=None,
        retryBackoff=None,
    )
    assert (job.priority, job.max_retries, job.timeout_seconds) == (0, 3, 300)
    assert job.payload == "null"
    assert job.scheduled_for is None
    assert job.retry_backoff is None


@pytest.mark.parametrize("field", ["status", "attemptNumber", "type", "id", "maxretries"])
def test_an_unknown_field_is_refused_by_name(field: str) -> None:
    error = refused(create, **{field: 1})
    assert error.field == field
    assert field in error.message


def test_of_several_unknown_fields_the_first_in_sorted_order_is_named() -> None:
    assert refused(create, zeta=1, alpha=2).field == "alpha"


def test_unknown_fields_are_reported_before_anything_else() -> None:
    error = refused(validate_new_job, {"bogus": 1, "priority": 99999}, now=NOW)
    assert error.field == "bogus"


@pytest.mark.parametrize("name", [None, "", "x" * 201, 5, ["a"], {"a": 1}, True])
def test_a_bad_name_is_refused(name: Any) -> None:
    raw = {} if name is None else {"name": name}
    error = refused(validate_new_job, raw, now=NOW)
    assert error.field == "name"


@pytest.mark.parametrize("name", ["a", "x" * 200, "email.send/v2", "名前"])
def test_a_name_of_1_to_200_characters_is_accepted(name: str) -> None:
    assert create(name=name).name == name


INT_FIELDS = [
    # field, attribute, low, high
    ("priority", "priority", -1000, 1000),
    ("maxRetries", "max_retries", 0, 25),
    ("timeoutSeconds", "timeout_seconds", 1, 86400),
]


@pytest.mark.parametrize(("field", "attr", "low", "high"), INT_FIELDS)
def test_integer_fields_accept_their_bounds(field: str, attr: str, low: int, high: int) -> None:
    assert getattr(create(**{field: low}), attr) == low
    assert getattr(create(**{field: high}), attr) == high


@pytest.mark.parametrize(("field", "attr", "low", "high"), INT_FIELDS)
@pytest.mark.parametrize("offset", ["below", "above"])
def test_integer_fields_refuse_values_out_of_range(
    field: str, attr: str, low: int, high: int, offset: str
) -> None:
    value = low - 1 if offset == "below" else high + 1
    error = refused(create, **{field: value})
    assert error.field == field
    assert f"{low} to {high}" in error.message


@pytest.mark.parametrize(("field", "attr", "low", "high"), INT_FIELDS)
@pytest.mark.parametrize(
    "value", [1.5, 2.0, "2", True, False, [1], {"v": 1}, pytest.param(HUGE_INT, id="huge")]
)
def test_integer_fields_refuse_non_integers(
    field: str, attr: str, low: int, high: int, value: Any
) -> None:
    assert refused(create, **{field: value}).field == field


@pytest.mark.parametrize("payload", [{}, {"payload": {"to": "a@b.c"}}, {"payload": None}])
def test_a_job_of_a_name_and_payload_only_gets_the_defaults_spelt_out(
    payload: dict[str, Any],
) -> None:
    spelt_out = {
        "priority": 0, "maxRetries": 3, "timeoutSeconds": 300, "scheduledFor": None,
        "callbackUrl": None, "callbackHeaders": None, "idempotencyKey": None,
        "retryBackoff": None,
    }  # fmt: skip
    assert create(**payload) == create(**payload, **spelt_out)


def test_payload_can_be_any_json() -> None:
    payloads: list[Any] = [[1, "two", None], "text", 3.5, True, {"nested": {"deep": [{}]}}]
    for payload in payloads:
        assert json.loads(create(payload=payload).payload) == payload


@pytest.mark.parametrize("payload", [float("nan"), float("inf"), {"x": float("-inf")}, b"x"])
def test_a_payload_that_is_not_json_is_refused(payload: Any) -> None:
    assert refused(create, payload=payload).field == "payload"


def test_encode_json_names_the_field_it_was_given() -> None:
    assert encode_json({"a": 1}, "result") == '{"a":1}'
    assert refused(encode_json, float("nan"), "result").field == "result"


def test_scheduled_for_in_the_future_is_parsed_to_epoch_seconds() -> None:
    assert create(scheduledFor=iso(NOW + 0.001)).scheduled_for == pytest.approx(NOW + 0.001)
    assert create(scheduledFor="2030-01-01T00:00:00.000Z").scheduled_for == 1_893_456_000.0


def test_scheduled_for_accepts_offsets_and_takes_naive_times_as_utc() -> None:
    assert create(scheduledFor="2030-01-01T01:00:00+01:00").scheduled_for == 1_893_456_000.0
    assert create(scheduledFor="2030-01-01T00:00:00").scheduled_for == 1_893_456_000.0


@pytest.mark.parametrize("delta", [0, -0.001, -3600, -NOW])
def test_scheduled_for_now_or_in_the_past_is_refused(delta: float) -> None:
    error = refused(create, scheduledFor=iso(NOW + delta))
    assert error.field == "scheduledFor"
    assert "future" in error.message


@pytest.mark.parametrize(
    "value", ["tomorrow", "", "2030-13-01T00:00:00Z", "2030-01-01T25:00:00Z", 1893456000, True]
)
def test_scheduled_for_that_is_not_an_iso_time_is_refused(value: Any) -> None:
    error = refused(create, scheduledFor=value)
    assert error.field == "scheduledFor"
    assert "ISO 8601" in error.message


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/hook",
        "HTTPS://EXAMPLE.COM/a?b=c#d",
        "http://93.184.215.14:8080/x",
        "http://[2606:4700::1111]/x",
        "http://localhost.example.com/x",  # a name: judged when it is resolved
    ],
)
def test_an_http_or_https_callback_url_is_accepted(url: str) -> None:
    assert create(callbackUrl=url).callback_url == url


PRIVATE_URLS = [
    "http://10.0.0.1:8080/x",
    "http://127.0.0.1/x",
    "http://127.1/x",
    "http://2130706433/x",
    "http://0x7f.0.0.1/x",
    "http://localhost/x",
    "http://LocalHost:80/x",
    "http://localhost./x",
    "http://db.localhost/x",
    "http://[::1]:9/x",
    "http://[fe80::1]/x",
    "http://[::ffff:10.0.0.1]/x",
    "http://169.254.169.254/latest",
    "http://172.16.0.1/x",
    "http://192.168.1.1/x",
    "http://100.64.0.1/x",
    "http://0.0.0.0/x",
    "http://224.0.0.1/x",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_a_callback_url_on_a_literal_private_address_is_refused(url: str) -> None:
    error = refused(create, callbackUrl=url)
    assert error.field == "callbackUrl" and error.message.startswith("callbackUrl")
    assert "emit serve --allow-private-callbacks" in error.message


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_a_private_callback_url_is_taken_where_private_callbacks_are_allowed(url: str) -> None:
    job = validate_new_job({"name": "n", "callbackUrl": url}, now=NOW, allow_private_callbacks=True)
    assert job.callback_url == url


@pytest.mark.parametrize(
    "url",
    ["http://[::1/x", "http://example.com:99999/x", "http://example.com:port/x", "http://@/x"],
)
def test_a_callback_url_without_a_valid_host_or_port_is_refused(url: str) -> None:
    assert refused(create, callbackUrl=url).field == "callbackUrl"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com",
        "example.com/hook",
        "http://",
        "https:///path",
        "http://exa mple.com",
        "http://example.com/a b",
        "",
        "http://example.com/" + "x" * 2048,
        5,
        ["http://example.com"],
    ],
)
def test_a_bad_callback_url_is_refused(url: Any) -> None:
    assert refused(create, callbackUrl=url).field == "callbackUrl"


@pytest.mark.parametrize(
    "url", ["http://example.com\n", "http://example.com/x\r\n"], ids=["lf", "crlf"]
)
def test_a_callback_url_with_a_trailing_line_break_is_refused(url: str) -> None:
    # Regression: a pattern ending in `$` also matches before a final "\n".
    assert refused(create, callbackUrl=url).field == "callbackUrl"


def test_callback_headers_must_be_an_object_of_strings() -> None:
    for bad in (["a"], "h: v", {"a": 1}, {"a": None}, {"a": ["v"]}):
        assert refused(create, callbackHeaders=bad).field == "callbackHeaders"


def test_empty_callback_headers_are_the_same_as_none() -> None:
    assert create(callbackHeaders={}).callback_headers is None


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"X-Note": "中"}, "outside Latin-1"),
        ({"X-Note": "\u2028"}, "outside Latin-1"),
        ({"X-Note": "a\r\nX-Injected: 1"}, "control character"),
        ({"X-Note": "a\nb"}, "control character"),
        ({"X-Note": "a\x00b"}, "control character"),
        ({"X-Note": "a\x7fb"}, "control character"),
        ({"X-Note": " padded"}, "whitespace"),
        ({"X-Note": "padded\t"}, "whitespace"),
        ({"Bad Name": "x"}, "not a header name"),
        ({"": "x"}, "not a header name"),
        ({"X-Ünïcode": "x"}, "not a header name"),
        ({"X:Colon": "x"}, "not a header name"),
        ({"Host": "elsewhere.example.com"}, "HTTP client"),
        ({"content-length": "1"}, "HTTP client"),
        ({"Transfer-Encoding": "chunked"}, "HTTP client"),
        ({"CONNECTION": "close"}, "HTTP client"),
        ({"Keep-Alive": "timeout=5"}, "HTTP client"),
        ({"Upgrade": "websocket"}, "HTTP client"),
        ({"TE": "trailers"}, "HTTP client"),
        ({"Trailer": "X-A"}, "HTTP client"),
        ({"Proxy-Connection": "keep-alive"}, "HTTP client"),
    ],
)
def test_callback_headers_no_http_client_can_send_are_refused(
    headers: dict[str, str], says: str
) -> None:
    error = refused(create, callbackHeaders=headers)
    assert error.field == "callbackHeaders" and error.message.startswith("callbackHeaders")
    assert says in error.message


def test_callback_headers_that_http_carries_are_taken() -> None:
    headers = {
        "Authorization": "Bearer whsec_0123456789abcdef",
        "X-Note": "café",  # Latin-1: sent as its byte
        "X-Spaced": "a  b\tc",
        "X-Empty": "",
        "x-weird!#$%&'*+-.^_`|~": "v",
        "Content-Type": "text/plain",  # replaces the default: allowed
    }
    assert create(callbackHeaders=headers).callback_headers == headers


def test_callback_headers_are_copied() -> None:
    headers = {"X-Token": "t"}
    job = create(callbackHeaders=headers)
    headers["X-Token"] = "changed"
    assert job.callback_headers == {"X-Token": "t"}


@pytest.mark.parametrize("key", ["", "k" * 201, 42, ["k"]])
def test_a_bad_idempotency_key_is_refused(key: Any) -> None:
    assert refused(create, idempotencyKey=key).field == "idempotencyKey"


def test_an_idempotency_key_of_200_characters_is_accepted() -> None:
    assert create(idempotencyKey="k" * 200).idempotency_key == "k" * 200


# ---------------------------------------------------------------------------- backoff


def test_backoff_missing_keys_take_defaults() -> None:
    assert validate_backoff({}, "retryBackoff") == RetryBackoff(1.0, 2.0, 3600.0)
    assert validate_backoff({"initialSeconds": 10}, "retryBackoff") == RetryBackoff(10, 2, 3600)


def test_backoff_accepts_its_bounds() -> None:
    low = validate_backoff({"initialSeconds": 0, "factor": 1, "maxSeconds": 0}, "b")
    high = validate_backoff({"initialSeconds": 86400, "factor": 100, "maxSeconds": 604800}, "b")
    assert low == RetryBackoff(0, 1, 0)
    assert high == RetryBackoff(86400, 100, 604800)


def test_backoff_accepts_fractional_numbers() -> None:
    backoff = validate_backoff({"initialSeconds": 0.5, "factor": 1.5, "maxSeconds": 2.5}, "b")
    assert backoff == RetryBackoff(0.5, 1.5, 2.5)


def test_backoff_none_means_no_backoff() -> None:
    assert validate_backoff(None, "retryBackoff") is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("initialSeconds", -1),
        ("initialSeconds", 86401),
        ("factor", 0.99),
        ("factor", 101),
        ("maxSeconds", -1),
        ("maxSeconds", 604801),
        ("initialSeconds", "1"),
        ("factor", True),
        ("maxSeconds", None),
        ("factor", float("nan")),
        ("maxSeconds", float("inf")),
    ],
)
def test_a_backoff_number_out_of_range_or_of_the_wrong_type_names_its_key(
    key: str, value: Any
) -> None:
    raw = {"initialSeconds": 1, "factor": 2, "maxSeconds": 604800, key: value}
    error = refused(validate_backoff, raw, "retryBackoff")
    assert error.field == f"retryBackoff.{key}"


@pytest.mark.parametrize("value", [[1, 2, 3], "fast", 5, {"initialSeconds": 1, "jitter": 0.1}])
def test_a_backoff_that_is_not_the_object_is_refused(value: Any) -> None:
    assert refused(validate_backoff, value, "retryBackoff").field == "retryBackoff"


def test_a_backoff_whose_max_is_below_its_initial_is_refused() -> None:
    error = refused(validate_backoff, {"initialSeconds": 10, "maxSeconds": 5}, "retryBackoff")
    assert (error.field or "").startswith("retryBackoff")
    assert "maxSeconds" in error.message


def test_create_names_the_backoff_key_under_retry_backoff() -> None:
    assert refused(create, retryBackoff={"factor": 0}).field == "retryBackoff.factor"


# ------------------------------------------------------------------------------- poll


def test_an_empty_poll_gets_the_defaults() -> None:
    poll = validate_poll({})
    assert (poll.count, poll.names, poll.wait, poll.ack) == (1, None, 0.0, False)


def test_explicit_nulls_in_a_poll_mean_the_defaults() -> None:
    poll = validate_poll({"count": None, "types": None, "type": None, "wait": None})
    assert (poll.count, poll.names, poll.wait) == (1, None, 0.0)


@pytest.mark.parametrize("count", [1, 25, 50])
def test_poll_count_from_1_to_50_is_accepted(count: int) -> None:
    assert validate_poll({"count": count}).count == count


@pytest.mark.parametrize("count", [0, 51, -1, 1.0, "5", True, pytest.param(HUGE_INT, id="huge")])
def test_poll_count_out_of_range_or_not_an_integer_is_refused(count: Any) -> None:
    assert refused(validate_poll, {"count": count}).field == "count"


@pytest.mark.parametrize("field", ["types", "type", "names", "name"])
def test_each_filter_field_takes_a_string_or_a_list(field: str) -> None:
    assert validate_poll({field: "a"}).names == frozenset({"a"})
    assert validate_poll({field: ["a", "b", "a"]}).names == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"types": ["t"], "type": "y", "names": ["n"], "name": "m"}, {"t"}),
        ({"type": "y", "names": ["n"], "name": "m"}, {"y"}),
        ({"names": ["n"], "name": "m"}, {"n"}),
        ({"name": "m"}, {"m"}),
        ({"name": "m", "names": ["n"], "type": "y"}, {"y"}),  # key order does not matter
        ({"types": None, "type": "y"}, {"y"}),  # null is absent
    ],
)
def test_the_first_present_filter_wins_in_order_types_type_names_name(
    raw: dict[str, Any], names: set[str]
) -> None:
    assert validate_poll(raw).names == frozenset(names)


@pytest.mark.parametrize("field", ["types", "type", "names", "name"])
@pytest.mark.parametrize("value", [[], "", [""], ["x" * 201], [1], ["a", 2], {"a": 1}, 5, True])
def test_a_bad_filter_is_refused_naming_its_field(field: str, value: Any) -> None:
    assert refused(validate_poll, {field: value}).field == field


def test_a_bad_first_filter_is_refused_even_when_a_later_one_is_good() -> None:
    assert refused(validate_poll, {"types": [], "name": "ok"}).field == "types"


def test_a_filter_name_of_200_characters_is_accepted() -> None:
    assert validate_poll({"type": "x" * 200}).names == frozenset({"x" * 200})


@pytest.mark.parametrize("wait", [0, 0.5, 30, 60, 60.0])
def test_wait_from_0_to_60_seconds_is_accepted(wait: float) -> None:
    poll = validate_poll({"wait": wait})
    assert poll.wait == wait
    assert isinstance(poll.wait, float)


@pytest.mark.parametrize("wait", [-0.001, 60.001, 61, "5", True, [1], float("nan"), float("inf")])
def test_wait_out_of_range_or_not_a_number_is_refused(wait: Any) -> None:
    assert refused(validate_poll, {"wait": wait}).field == "wait"


def test_ack_is_true_or_false() -> None:
    assert validate_poll({"ack": True}).ack is True
    assert validate_poll({"ack": False}).ack is False


@pytest.mark.parametrize("ack", ["true", 1, 0, "yes", [True]])
def test_ack_that_is_not_a_boolean_is_refused(ack: Any) -> None:
    assert refused(validate_poll, {"ack": ack}).field == "ack"


@pytest.mark.parametrize("field", ["limit", "lease", "Count", "filter"])
def test_an_unknown_poll_field_is_refused_by_name(field: str) -> None:
    assert refused(validate_poll, {field: 1}).field == field


# --------------------------------------------------------------------------- progress


def test_an_integer_percent_stays_an_integer() -> None:
    update = validate_progress(50, "half", None)
    assert update.percent == 50
    assert isinstance(update.percent, int)
    assert update.to_wire() == {"percent": 50, "message": "half", "subProgress": None}


def test_a_fractional_percent_is_kept() -> None:
    assert validate_progress(33.3, "", None).percent == 33.3


@pytest.mark.parametrize("percent", [0, 100, 0.0, 100.0])
def test_percent_bounds_are_accepted(percent: float) -> None:
    assert validate_progress(percent, "m", None).percent == percent


@pytest.mark.parametrize("percent", [-0.1, 100.1, -1, 101, "50", True, float("nan"), [50]])
def test_percent_out_of_range_or_not_a_number_is_refused(percent: Any) -> None:
    assert refused(validate_progress, percent, "m", None).field == "percent"


def test_percent_is_required() -> None:
    error = refused(validate_progress, None, "m", None)
    assert error.field == "percent"
    assert "required" in error.message


@pytest.mark.parametrize("message", [None, 5, ["m"], {"m": 1}])
def test_message_is_a_required_string(message: Any) -> None:
    assert refused(validate_progress, 10, message, None).field == "message"


def test_sub_progress_of_stages_is_kept_as_given() -> None:
    sub = {"download": {"percent": 100, "message": "done"}, "parse": {"percent": 12.5}}
    update = validate_progress(60, "m", sub)
    assert update.sub_progress == sub
    assert update.to_wire() == {"percent": 60, "message": "m", "subProgress": sub}


def test_an_empty_sub_progress_object_is_accepted() -> None:
    assert validate_progress(1, "m", {}).sub_progress == {}


@pytest.mark.parametrize("sub", [[{"percent": 1}], "stage", 5, True])
def test_sub_progress_that_is_not_an_object_is_refused(sub: Any) -> None:
    assert refused(validate_progress, 10, "m", sub).field == "subProgress"


@pytest.mark.parametrize("entry", [50, "half", [50], None, {"percent": 5, "eta": 3}])
def test_a_stage_that_is_not_percent_and_message_is_refused_naming_the_stage(
    entry: Any,
) -> None:
    assert refused(validate_progress, 10, "m", {"io": entry}).field == "subProgress.io"


@pytest.mark.parametrize("percent", [None, -1, 100.5, "5", True, float("inf")])
def test_a_stage_percent_is_required_and_from_0_to_100(percent: Any) -> None:
    entry = {} if percent is None else {"percent": percent}
    error = refused(validate_progress, 10, "m", {"io": entry})
    assert error.field == "subProgress.io.percent"


@pytest.mark.parametrize("message", [5, ["m"], {"m": 1}])
def test_a_stage_message_must_be_a_string(message: Any) -> None:
    error = refused(validate_progress, 10, "m", {"io": {"percent": 1, "message": message}})
    assert (error.field or "").startswith("subProgress.io")
    assert "subProgress.io.message" in error.message


def test_a_stage_message_may_be_null() -> None:
    sub = {"io": {"percent": 1, "message": None}}
    assert validate_progress(10, "m", sub).sub_progress == sub


# ---------------------------------------------------- numbers too large for a float


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: validate_poll({"wait": HUGE_INT}), "wait"),
        (lambda: validate_progress(HUGE_INT, "m", None), "percent"),
        (
            lambda: validate_progress(1, "m", {"io": {"percent": HUGE_INT}}),
            "subProgress.io.percent",
        ),
        (lambda: validate_backoff({"factor": HUGE_INT}, "retryBackoff"), "retryBackoff.factor"),
        (lambda: create(retryBackoff={"maxSeconds": -HUGE_INT}), "retryBackoff.maxSeconds"),
    ],
    ids=["wait", "percent", "sub-percent", "backoff-factor", "create-backoff-max"],
)
def test_an_integer_too_large_for_a_float_is_refused_not_crashed(call: Any, field: str) -> None:
    # Regression: math.isfinite() on such an int raises OverflowError (a 500), and the
    # JSON parser does produce integers beyond float range.
    assert refused(call).field == field


# -------------------------------------------------------------------------- log level


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("trace", LogLevel.TRACE),
        ("debug", LogLevel.DEBUG),
        ("info", LogLevel.INFO),
        ("warn", LogLevel.WARN),
        ("error", LogLevel.ERROR),
        ("fatal", LogLevel.FATAL),
        ("INFO", LogLevel.INFO),
        ("Warn", LogLevel.WARN),
    ],
)
def test_log_levels_are_the_six_names_in_any_case(text: str, level: LogLevel) -> None:
    assert validate_log_level(text) is level


def test_log_levels_are_ordered_by_severity() -> None:
    assert [int(level) for level in LogLevel] == [0, 1, 2, 3, 4, 5]
    assert LogLevel.TRACE < LogLevel.INFO < LogLevel.FATAL


@pytest.mark.parametrize("value", ["warning", "critical", "", " info", None, 2, ["info"]])
def test_an_unknown_log_level_is_refused(value: Any) -> None:
    assert refused(validate_log_level, value).field == "level"


def test_the_log_level_field_name_can_be_given() -> None:
    assert refused(validate_log_level, "loud", "lines[3].level").field == "lines[3].level"


# ---------------------------------------------------------------------------- settings


def test_push_headers_follow_the_same_rules_as_callback_headers() -> None:
    for headers in ({"X-Key": "中"}, {"Content-Length": "1"}, {"X": "a\r\nb"}, {"A B": "x"}):
        error = refused(validate_settings, {"pushHeaders": headers})
        assert error.field == "pushHeaders" and error.message.startswith("pushHeaders")
    taken = validate_settings({"pushHeaders": {"Authorization": "Bearer t", "X-Note": "café"}})
    assert taken.push_headers == {"Authorization": "Bearer t", "X-Note": "café"}


def test_a_push_url_on_a_literal_private_address_is_refused_unless_allowed() -> None:
    error = refused(validate_settings, {"pushUrl": "http://localhost:9/wake"})
    assert error.field == "pushUrl" and "emit serve --allow-private-callbacks" in error.message
    allowed = validate_settings({"pushUrl": "http://localhost:9/wake"}, allow_private=True)
    assert allowed.push_url == "http://localhost:9/wake"


def test_settings_stored_before_the_header_and_target_rules_still_load() -> None:
    """A space whose stored settings predate these rules must load (its actor, every
    request's rate limit): the sender refuses such a push when it would send it."""
    stored = {"pushUrl": "http://127.0.0.1:9/wake", "pushHeaders": {"X-Key": "中"}}
    settings = read_settings(stored)
    assert settings.push_url == "http://127.0.0.1:9/wake"
    assert settings.push_headers == {"X-Key": "中"}
