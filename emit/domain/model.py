"""The job, its status and events, and the validation of everything a caller sends.

Field names in error messages are the wire's (camelCase), because that is what the
caller wrote; the embedding API uses the same validators.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..callbacks.policy import refused_without_lookup
from ..codec import JSON, dumps
from ..errors import InvalidRequest
from ..isotime import iso, parse_iso


class JobStatus(enum.StrEnum):
    """A job's status; compares equal to the wire string."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    DELIVERED = "delivered"
    RUNNING = "running"
    COMPLETED = "completed"
    DEAD = "dead"
    KILLED = "killed"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.KILLED})
LIVE = frozenset(JobStatus) - FINAL


class EventType(enum.StrEnum):
    CREATED = "created"
    DELIVERED = "delivered"
    STARTED = "started"
    PROGRESS = "progress"
    CHECKPOINT = "checkpoint"
    EVENT = "event"
    RETRIED = "retried"
    DELIVERY_TIMEOUT = "delivery_timeout"
    COMPLETED = "completed"
    DEAD = "dead"
    KILLED = "killed"
    CALLBACK_SENT = "callback_sent"
    CALLBACK_FAILED = "callback_failed"


class LogLevel(enum.IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    FATAL = 5


@dataclass(frozen=True, slots=True)
class RetryBackoff:
    """Wait before retry n (n >= 1): ``initial * factor ** (n - 1)``, at most ``maximum``."""

    initial_seconds: float
    factor: float
    max_seconds: float

    def delay(self, retry: int) -> float:
        return min(self.max_seconds, self.initial_seconds * self.factor ** (retry - 1))

    def to_wire(self) -> dict[str, JSON]:
        return {
            "initialSeconds": self.initial_seconds,
            "factor": self.factor,
            "maxSeconds": self.max_seconds,
        }


class Event(NamedTuple):
    """One entry of a job's history. A named tuple: a job makes several per lifecycle,
    and a tuple is the cheapest immutable record Python builds."""

    seq: int
    type: EventType
    attempt_number: int
    data: JSON
    created_at: float


class Job:
    """One job's live state. The space actor owns it; the store keeps its log."""

    __slots__ = (
        "attempt_number",
        "callback_headers",
        "callback_url",
        "checkpoint",
        "completed_at",
        "created_at",
        "deadline",
        "delivered_at",
        "event_seq",
        "id",
        "idempotency_key",
        "in_queue",
        "lease_id",
        "log_seq",
        "max_retries",
        "name",
        "payload",
        "priority",
        "progress",
        "queue_token",
        "result",
        "retry_backoff",
        "scheduled_for",
        "seq",
        "space_id",
        "started_at",
        "status",
        "timeout_seconds",
        "timer_at",
        "updated_at",
    )

    def __init__(
        self,
        *,
        id: str,
        space_id: str,
        seq: int,
        name: str,
        payload: str,
        status: JobStatus,
        priority: int,
        max_retries: int,
        timeout_seconds: int,
        created_at: float,
        attempt_number: int = 0,
        scheduled_for: float | None = None,
        callback_url: str | None = None,
        callback_headers: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        retry_backoff: RetryBackoff | None = None,
        progress: JSON = None,
        result: str | None = None,
        checkpoint: str | None = None,
        lease_id: str | None = None,
        deadline: float | None = None,
        updated_at: float | None = None,
        delivered_at: float | None = None,
        started_at: float | None = None,
        completed_at: float | None = None,
        event_seq: int = 0,
        log_seq: int = 0,
    ) -> None:
        self.id = id
        self.space_id = space_id
        self.seq = seq
        """Creation order within the space: ties in priority go to the oldest."""
        self.name = name
        self.payload = payload
        """Encoded JSON text."""
        self.status = status
        self.priority = priority
        self.max_retries = max_retries
        self.attempt_number = attempt_number
        self.timeout_seconds = timeout_seconds
        self.scheduled_for = scheduled_for
        self.callback_url = callback_url
        self.callback_headers = callback_headers
        self.idempotency_key = idempotency_key
        self.retry_backoff = retry_backoff
        self.progress = progress
        self.result = result
        """Encoded JSON text, set when the job ends."""
        self.checkpoint = checkpoint
        """Encoded JSON text handed to later attempts."""
        self.lease_id = lease_id
        self.deadline = deadline
        """When the job must next move: scheduled → due; delivered → ack deadline;
        running → run deadline. None in other states."""
        self.created_at = created_at
        self.updated_at = created_at if updated_at is None else updated_at
        self.delivered_at = delivered_at
        self.started_at = started_at
        self.completed_at = completed_at
        self.event_seq = event_seq
        self.log_seq = log_seq
        self.queue_token = 0
        """Bumped whenever the job is queued, so stale queue entries can be told apart."""
        self.in_queue = False
        self.timer_at: float | None = None
        """The time of this job's live entry in the timer heap, if any."""

    @classmethod
    def created(cls, job_id: str, space_id: str, seq: int, new: NewJob, now: float) -> Job:
        """A job just made from a validated request: what ``Job(...)`` with the request's
        fields gives, for a third of the cost (assigning the slots directly skips the
        keyword call of some twenty arguments, once per job created)."""
        job = cls.__new__(cls)
        job.id = job_id
        job.space_id = space_id
        job.seq = seq
        job.name = new.name
        job.payload = new.payload
        job.status = JobStatus.SCHEDULED if new.scheduled_for else JobStatus.PENDING
        job.priority = new.priority
        job.max_retries = new.max_retries
        job.attempt_number = 0
        job.timeout_seconds = new.timeout_seconds
        job.scheduled_for = new.scheduled_for
        job.callback_url = new.callback_url
        job.callback_headers = new.callback_headers
        job.idempotency_key = new.idempotency_key
        job.retry_backoff = new.retry_backoff
        job.progress = None
        job.result = None
        job.checkpoint = None
        job.lease_id = None
        job.deadline = new.scheduled_for
        job.created_at = now
        job.updated_at = now
        job.delivered_at = None
        job.started_at = None
        job.completed_at = None
        job.event_seq = 0
        job.log_seq = 0
        job.queue_token = 0
        job.in_queue = False
        job.timer_at = None
        return job

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} {self.status}>"


# ---------------------------------------------------------------------------- validation

MAX_NAME = 200
_CREATE_FIELDS = frozenset(
    {
        "name",
        "payload",
        "priority",
        "maxRetries",
        "timeoutSeconds",
        "scheduledFor",
        "callbackUrl",
        "callbackHeaders",
        "idempotencyKey",
        "retryBackoff",
    }
)
_URL = re.compile(r"https?://[^\s/?#]+\S*", re.IGNORECASE)  # used with fullmatch


@dataclass(slots=True)
class NewJob:
    """A validated create request. Not ``frozen``: a frozen dataclass sets each field
    through ``object.__setattr__``, four times the cost, on every job created; nothing
    changes one after validation."""

    name: str
    payload: str
    priority: int
    max_retries: int
    timeout_seconds: int
    scheduled_for: float | None
    callback_url: str | None
    callback_headers: dict[str, str] | None
    idempotency_key: str | None
    retry_backoff: RetryBackoff | None


def unicode_text(value: str, field: str) -> str:
    """``value``, if it can be stored and sent: a Python str may hold a lone surrogate
    (``"\ud800"``), which is not Unicode text and which neither JSON nor SQLite takes.
    HTTP bodies cannot carry one (the JSON parser refuses it); the embedding API can."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{field} must be Unicode text (it holds a lone surrogate)", field=field
            ) from None
    return value


def _int(raw: Mapping[str, Any], field: str, low: int, high: int, default: int) -> int:
    value = raw.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"{field} must be an integer from {low} to {high}", field=field)
    return value


def _number(value: object, field: str, low: float, high: float) -> float:
    # Compare before converting: an integer too large for a float is out of range, not
    # an OverflowError.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or not low <= value <= high
    ):
        raise InvalidRequest(f"{field} must be a number from {low:g} to {high:g}", field=field)
    return float(value)


def _optional_str(raw: Mapping[str, Any], field: str, max_length: int) -> str | None:
    value = raw.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise InvalidRequest(
            f"{field} must be a string of 1 to {max_length} characters", field=field
        )
    return unicode_text(value, field)


def valid_url(text: str) -> bool:
    return len(text) <= 2048 and _URL.fullmatch(text) is not None


def encode_json(value: object, field: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{field} must be JSON: {exc}", field=field) from None


def validate_url(value: object, field: str, *, allow_private: bool) -> str | None:
    """An http(s) URL that emit may POST to (a callback, a push wake), or None.

    Unless ``allow_private``, a URL whose host is a refused target that needs no DNS to
    tell (a literal private address, ``localhost``) is refused here, since every try
    would be refused; a name that resolves to one is refused when it is tried."""
    if value is None:
        return None
    if not isinstance(value, str) or not valid_url(value):
        raise InvalidRequest(f"{field} must be an http(s) URL, or null", field=field)
    unicode_text(value, field)
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port  # a bad port or IPv6 literal: ValueError
    except ValueError:
        host = None
    if not host:
        raise InvalidRequest(f"{field} must be an http(s) URL with a valid host", field=field)
    if not allow_private and refused_without_lookup(host):
        raise InvalidRequest(
            f"{field} {value} is on a loopback, link-local or private address, which this "
            "server does not call (start it with `emit serve --allow-private-callbacks`, "
            "or embed with open_runtime(allow_private_callbacks=True), to allow it)",
            field=field,
        )
    return value


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token; fullmatch
_HEADER_VALUE = re.compile(
    r"[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?"
)  # fullmatch
"""RFC 9110 §5.5 field-value (when not empty): visible Latin-1 characters, with spaces and
tabs only between them."""
CONNECTION_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that frame the message or manage the connection: the HTTP client sets them
for each request, and one a caller chose would corrupt it (a wrong Content-Length)."""


def header_problem(name: object, value: object) -> str | None:
    """Why the header ``name: value`` cannot be sent by emit's HTTP client, or None.

    The one rule for headers a caller gives emit to send (``callbackHeaders``,
    ``pushHeaders``): checked when they are given, and again before each send for
    those stored before the check existed."""
    if not isinstance(name, str) or not isinstance(value, str):
        return "must be an object of strings"
    if not _HEADER_NAME.fullmatch(name):
        return (
            f"{name!r} is not a header name (RFC 9110: letters, digits and "
            "!#$%&'*+-.^_`|~, at least one)"
        )
    if name.lower() in CONNECTION_HEADERS:
        return f"{name} is set by the HTTP client for each request, never by a caller"
    if value and not _HEADER_VALUE.fullmatch(value):
        if any(ord(char) > 0xFF for char in value):
            return (
                f"the value of {name} has a character outside Latin-1 (ISO 8859-1), which "
                "an HTTP header cannot carry: encode it (e.g. percent-encoding)"
            )
        if value != value.strip(" \t"):
            return f"the value of {name} starts or ends with whitespace"
        return f"the value of {name} has a control character (CR, LF, NUL, …)"
    return None


def validate_headers(value: object, field: str) -> dict[str, str] | None:
    """Headers for emit to send: an object of strings that `header_problem` finds
    nothing wrong with, as a plain dict (None when empty)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{field} must be an object of strings", field=field)
    for name, text in value.items():
        if isinstance(name, str) and isinstance(text, str):
            unicode_text(name, field)  # a lone surrogate: said as such
            unicode_text(text, field)
        problem = header_problem(name, text)
        if problem is not None:
            raise InvalidRequest(f"{field}: {problem}", field=field)
    return dict(value) if value else None


def past_schedule(now: float) -> InvalidRequest:
    return InvalidRequest(
        f"scheduledFor must be in the future (it is now {iso(now)})", field="scheduledFor"
    )


def validate_new_job(
    raw: Mapping[str, Any], *, now: float, allow_private_callbacks: bool = False
) -> NewJob:
    """A create request, checked. ``allow_private_callbacks``: as the server's flag, a
    ``callbackUrl`` on a literal private address or ``localhost`` is taken."""
    if not _CREATE_FIELDS.issuperset(raw):
        unknown = sorted(set(raw) - _CREATE_FIELDS)
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    name = raw.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise InvalidRequest(
            f"name is required: a string of 1 to {MAX_NAME} characters", field="name"
        )
    unicode_text(name, "name")
    if (len(raw) == 2 and "payload" in raw) or len(raw) == 1:
        # Only a name and perhaps a payload (most creates): the rest are defaults, and
        # eight lookups of absent fields would find nothing.
        return NewJob(
            name,
            encode_json(raw.get("payload"), "payload"),
            0,
            3,
            300,
            None,
            None,
            None,
            None,
            None,
        )
    scheduled_for = None
    if raw.get("scheduledFor") is not None:
        value = raw["scheduledFor"]
        try:
            if not isinstance(value, str):
                raise ValueError
            scheduled_for = parse_iso(value)
        except ValueError:
            raise InvalidRequest(
                "scheduledFor must be an ISO 8601 time", field="scheduledFor"
            ) from None
        if scheduled_for <= now and raw.get("idempotencyKey") is None:
            # With a key, the space judges it once it knows the key is new: a replay of a
            # create whose time has come answers the job it made (spec §4).
            raise past_schedule(now)
    callback_url = validate_url(
        raw.get("callbackUrl"), "callbackUrl", allow_private=allow_private_callbacks
    )
    headers = validate_headers(raw.get("callbackHeaders"), "callbackHeaders")
    return NewJob(
        name=name,
        payload=encode_json(raw.get("payload"), "payload"),
        priority=_int(raw, "priority", -1000, 1000, 0),
        max_retries=_int(raw, "maxRetries", 0, 25, 3),
        timeout_seconds=_int(raw, "timeoutSeconds", 1, 86400, 300),
        scheduled_for=scheduled_for,
        callback_url=callback_url,
        callback_headers=headers,
        idempotency_key=_optional_str(raw, "idempotencyKey", 200),
        retry_backoff=validate_backoff(raw.get("retryBackoff"), "retryBackoff"),
    )


def validate_backoff(value: object, field: str) -> RetryBackoff | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"initialSeconds", "factor", "maxSeconds"}:
        raise InvalidRequest(
            f"{field} must be an object with initialSeconds, factor, maxSeconds", field=field
        )
    initial = _number(value.get("initialSeconds", 1), f"{field}.initialSeconds", 0, 86400)
    factor = _number(value.get("factor", 2), f"{field}.factor", 1, 100)
    maximum = _number(value.get("maxSeconds", 3600), f"{field}.maxSeconds", 0, 86400 * 7)
    if maximum < initial:
        raise InvalidRequest(f"{field}.maxSeconds must be >= initialSeconds", field=field)
    return RetryBackoff(initial, factor, maximum)


@dataclass(frozen=True, slots=True)
class PollRequest:
    count: int
    names: frozenset[str] | None
    wait: float
    ack: bool


_POLL_FIELDS = frozenset({"count", "types", "type", "names", "name", "wait", "ack"})


def validate_poll(raw: Mapping[str, Any]) -> PollRequest:
    unknown = sorted(set(raw) - _POLL_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field=unknown[0])
    count = _int(raw, "count", 1, 50, 1)
    names: frozenset[str] | None = None
    for field in ("types", "type", "names", "name"):  # the first present wins
        if raw.get(field) is None:
            continue
        value = raw[field]
        items = [value] if isinstance(value, str) else value
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(item, str) and 1 <= len(item) <= MAX_NAME for item in items)
        ):
            raise InvalidRequest(
                f"{field} must be a job name or a non-empty list of job names", field=field
            )
        names = frozenset(items)
        break
    wait = raw.get("wait", 0)
    wait = 0.0 if wait is None else _number(wait, "wait", 0, 60)
    ack = raw.get("ack", False)
    if not isinstance(ack, bool):
        raise InvalidRequest("ack must be true or false", field="ack")
    return PollRequest(count=count, names=names, wait=wait, ack=ack)


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float
    message: str
    sub_progress: JSON

    def to_wire(self) -> JSON:
        return {"percent": self.percent, "message": self.message, "subProgress": self.sub_progress}


def validate_progress(percent: object, message: object, sub_progress: object) -> Progress:
    value = _number(percent, "percent", 0, 100) if percent is not None else None
    if value is None:
        raise InvalidRequest("percent is required: a number from 0 to 100", field="percent")
    if not isinstance(message, str):
        raise InvalidRequest("message is required: a string", field="message")
    unicode_text(message, "message")
    stages: dict[str, JSON] | None = None
    if sub_progress is not None:
        if not isinstance(sub_progress, Mapping):
            raise InvalidRequest(
                "subProgress must be an object of {stage: {percent, message?}}",
                field="subProgress",
            )
        stages = {}
        for stage, entry in sub_progress.items():
            if not isinstance(stage, str):
                raise InvalidRequest("subProgress keys must be strings", field="subProgress")
            where = unicode_text(f"subProgress.{stage}", "subProgress")
            if not isinstance(entry, Mapping) or set(entry) - {"percent", "message"}:
                raise InvalidRequest(f"{where} must be {{percent, message?}}", field=where)
            _number(entry.get("percent"), f"{where}.percent", 0, 100)
            note = entry.get("message")
            if note is not None:
                if not isinstance(note, str):
                    raise InvalidRequest(f"{where}.message must be a string", field=where)
                unicode_text(note, f"{where}.message")
            stages[stage] = dict(entry)  # plain: what the caller holds may change
    # Keep an integer an integer, so 50 is echoed as 50, not 50.0.
    return Progress(percent if isinstance(percent, int) else value, message, stages)


def validate_log_level(value: object, field: str = "level") -> LogLevel:
    if isinstance(value, str):
        try:
            return LogLevel[value.upper()]
        except KeyError:
            pass
    raise InvalidRequest(f"{field} must be one of trace debug info warn error fatal", field=field)
