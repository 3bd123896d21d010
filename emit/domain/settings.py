"""A space's settings (spec §7): what each one means and how it is validated. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from .model import (
    FINAL,
    MAX_NAME,
    JobStatus,
    RetryBackoff,
    encode_json,
    valid_url,
    validate_backoff,
    validate_headers,
    validate_url,
)
from .slack import DEFAULT_SLACK_EVENTS, validate_slack_events

KNOWN = frozenset(
    {
        "retryBackoff",
        "signingSecret",
        "pushUrl",
        "pushHeaders",
        "pushNames",
        "rateLimit",
        "retention",
        "slackUrl",
        "slackEvents",
    }
)
MAX_RATE = 1_000_000.0
MAX_RETENTION = 100 * 365 * 86400
"""A century: past it, "keep forever" (0 or null) says it better."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a finished job is kept, in seconds, per final status (None: forever).
    The defaults are `emit serve`'s (``--retain-completed``, ``--retain-dead``,
    ``--retain-killed``); a space's ``retention`` setting overrides the statuses it
    names."""

    completed: int | None = 604_800
    dead: int | None = 2_592_000
    killed: int | None = 2_592_000

    def over(self, given: Mapping[str, int | None] | None) -> Retention:
        """These defaults with a space's setting on top (the statuses it names)."""
        if not given:
            return self
        return Retention(
            completed=given.get("completed", self.completed),
            dead=given.get("dead", self.dead),
            killed=given.get("killed", self.killed),
        )

    def cutoffs(self, now: float) -> dict[JobStatus, float]:
        """For each final status kept for a while: jobs that finished before this wall
        time are due to go. A status kept forever is left out."""
        return {
            JobStatus(status): now - seconds
            for status in _STATUSES
            if (seconds := getattr(self, status))
        }


_STATUSES = tuple(sorted(status.value for status in FINAL))


def validate_retention(raw: object, field: str = "retention") -> dict[str, int | None]:
    """An object of seconds per final status (``completed``, ``dead``, ``killed``): a
    whole number from 0 to `MAX_RETENTION`; 0 or null keeps that status forever."""
    if not isinstance(raw, Mapping):
        raise InvalidRequest(
            f"{field} must be an object of seconds per final status "
            f"({', '.join(_STATUSES)}), or null",
            field=field,
        )
    for status, seconds in raw.items():
        if status not in _STATUSES:
            raise InvalidRequest(
                f"{field}.{status} is not a final status: a retention is set for "
                f"{', '.join(_STATUSES)} only",
                field=f"{field}.{status}",
            )
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, int)
            or not 0 <= seconds <= MAX_RETENTION
        ):
            raise InvalidRequest(
                f"{field}.{status} must be a whole number of seconds from 0 to "
                f"{MAX_RETENTION:,} (0 or null: keep forever)",
                field=f"{field}.{status}",
            )
    return {status: seconds or None for status, seconds in raw.items()}


@dataclass(frozen=True, slots=True)
class SpaceSettings:
    retry_backoff: RetryBackoff | None = None
    signing_secret: str | None = None
    push_url: str | None = None
    """The worker wake: a best-effort POST when a job becomes pending."""
    push_headers: dict[str, str] | None = None
    push_names: frozenset[str] | None = None
    """Only jobs of these names wake the push URL (None: all)."""
    rate_limit: float | None = None
    """Requests a second for each key of the space (None: the server's limit)."""
    retention: Mapping[str, int | None] | None = None
    """Seconds a finished job is kept, for the final statuses named (None: forever);
    the others, or all without the setting, as the server's default `Retention`."""

    slack_url: str | None = None
    """A Slack incoming webhook, told of the jobs' `slack_events` (spec §7 extension)."""
    slack_events: frozenset[str] | None = None
    """The events Slack hears of (None: `DEFAULT_SLACK_EVENTS`)."""

    @property
    def slack(self) -> frozenset[str] | None:
        """The events Slack is told of, or None without a Slack URL."""
        if self.slack_url is None:
            return None
        return DEFAULT_SLACK_EVENTS if self.slack_events is None else self.slack_events

    def wakes(self, name: str) -> bool:
        return self.push_url is not None and (self.push_names is None or name in self.push_names)


def read_settings(stored: Mapping[str, Any]) -> SpaceSettings:
    """Settings as stored: validated when they were set, by the rules of that time. The
    rules that came later (a push URL's target, the push headers) are not applied again
    here, so that settings stored before them still load: the sender checks each push
    against them before sending it."""
    return _parse(stored, strict=False)


def validate_settings(raw: Mapping[str, Any], *, allow_private: bool = False) -> SpaceSettings:
    """Settings being set, checked. ``allow_private``: as the server's
    ``--allow-private-callbacks``, a push URL on a literal private address is taken."""
    return _parse(raw, strict=True, allow_private=allow_private)


def _parse(raw: Mapping[str, Any], *, strict: bool, allow_private: bool = False) -> SpaceSettings:
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise InvalidRequest(f"unknown setting {unknown[0]!r}", field=unknown[0])
    encode_json(dict(raw), "settings")  # what is stored: a lone surrogate is refused here
    secret = raw.get("signingSecret")
    if secret is not None and not (isinstance(secret, str) and 16 <= len(secret) <= 256):
        raise InvalidRequest(
            "signingSecret must be a string of 16 to 256 characters, or null",
            field="signingSecret",
        )
    url = raw.get("pushUrl")
    headers = raw.get("pushHeaders")
    if strict:
        validate_url(url, "pushUrl", allow_private=allow_private)
        validate_headers(headers, "pushHeaders")
    else:
        if url is not None and not (isinstance(url, str) and valid_url(url)):
            raise InvalidRequest("pushUrl must be an http(s) URL, or null", field="pushUrl")
        if headers is not None and (
            not isinstance(headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise InvalidRequest("pushHeaders must be an object of strings", field="pushHeaders")
    names = raw.get("pushNames")
    if names is not None and (
        not isinstance(names, list)
        or not all(isinstance(n, str) and 1 <= len(n) <= MAX_NAME for n in names)
    ):
        raise InvalidRequest("pushNames must be a list of job names, or null", field="pushNames")
    rate = raw.get("rateLimit")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE
    ):
        raise InvalidRequest(
            f"rateLimit must be a number of requests a second per key, above 0 and at most "
            f"{MAX_RATE:,.0f}, or null",
            field="rateLimit",
        )
    retention = raw.get("retention")
    slack_url = raw.get("slackUrl")
    if strict:
        validate_url(slack_url, "slackUrl", allow_private=allow_private)
    elif slack_url is not None and not (isinstance(slack_url, str) and valid_url(slack_url)):
        raise InvalidRequest("slackUrl must be an http(s) URL, or null", field="slackUrl")
    slack_events = raw.get("slackEvents")
    return SpaceSettings(
        retry_backoff=validate_backoff(raw.get("retryBackoff"), "retryBackoff"),
        signing_secret=secret,
        push_url=url,
        push_headers=dict(headers) if headers else None,
        push_names=None if names is None else frozenset(names),
        rate_limit=None if rate is None else float(rate),
        retention=None if retention is None else validate_retention(retention),
        slack_url=slack_url,
        slack_events=None if slack_events is None else validate_slack_events(slack_events),
    )
