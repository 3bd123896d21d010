"""A space's settings (spec §7): what each one means and how it is validated. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from .model import (
    MAX_NAME,
    RetryBackoff,
    encode_json,
    valid_url,
    validate_backoff,
    validate_headers,
    validate_url,
)

KNOWN = frozenset(
    {"retryBackoff", "signingSecret", "pushUrl", "pushHeaders", "pushNames", "rateLimit"}
)
MAX_RATE = 1_000_000.0


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
    return SpaceSettings(
        retry_backoff=validate_backoff(raw.get("retryBackoff"), "retryBackoff"),
        signing_secret=secret,
        push_url=url,
        push_headers=dict(headers) if headers else None,
        push_names=None if names is None else frozenset(names),
        rate_limit=None if rate is None else float(rate),
    )
