"""Slack notifications, a space's ``slackUrl`` and ``slackEvents`` settings: which of a
job's events the space's Slack channel is told of, and the message it gets. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidRequest
from .model import Event, EventType

SLACK_EVENTS = ("created", "started", "completed", "failed", "dead", "killed")
"""What a space may be told of, in a job's order. ``failed`` is any failed attempt, the
ones that will be retried too; a last one is ``dead`` (``failed`` if only that is chosen)."""
DEFAULT_SLACK_EVENTS = frozenset({"completed", "dead", "killed"})
"""Without ``slackEvents``: a job's outcomes, as job callbacks have."""
MAX_DETAIL = 500
"""Characters of an error or a kill reason quoted in a message."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A job event a space's Slack channel is to hear of."""

    job_id: str
    name: str
    event: str
    """One of `SLACK_EVENTS`."""
    detail: str | None = None
    """The error of a failed attempt, or a kill's reason."""


def validate_slack_events(raw: object, field: str = "slackEvents") -> frozenset[str]:
    """A non-empty list of distinct names of `SLACK_EVENTS`."""
    known = ", ".join(SLACK_EVENTS)
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest(
            f"{field} must be a non-empty list of events ({known}), or null", field=field
        )
    for name in raw:
        if name not in SLACK_EVENTS:
            raise InvalidRequest(
                f"{field}: {name!r} is not an event a space is told of ({known})", field=field
            )
    if len(set(raw)) != len(raw):
        raise InvalidRequest(f"{field} names an event twice", field=field)
    return frozenset(raw)


def notices(job_id: str, name: str, events: list[Event], chosen: frozenset[str]) -> list[Notice]:
    """The notices ``events`` (new events of one job) make, for a space that chose
    ``chosen``."""
    found = []
    for event in events:
        kind = _KINDS.get(event.type)
        data = event.data if isinstance(event.data, Mapping) else {}
        if event.type is EventType.RETRIED and "error" not in data:
            continue  # a manual retry: no attempt failed
        if kind == "dead" and kind not in chosen:
            kind = "failed"  # the last failed attempt, for a space that chose only that
        if kind is None or kind not in chosen:
            continue
        detail = data.get("error") if kind in ("failed", "dead") else data.get("reason")
        found.append(Notice(job_id, name, kind, detail if isinstance(detail, str) else None))
    return found


_KINDS = {
    EventType.CREATED: "created",
    EventType.STARTED: "started",
    EventType.COMPLETED: "completed",
    EventType.RETRIED: "failed",
    EventType.DEAD: "dead",
    EventType.KILLED: "killed",
}

_SAYS = {
    "created": "was created",
    "started": "started",
    "completed": "completed",
    "failed": "failed",
    "dead": "is dead (no attempts left)",
    "killed": "was killed",
}


def slack_message(space_name: str, notice: Notice) -> dict[str, str]:
    """The body POSTed to an incoming webhook: Slack's ``{"text": ...}``.

    >>> slack_message("billing", Notice("01J", "email", "failed", "SMTP <down>"))
    {'text': '[billing] Job email (01J) failed: SMTP &lt;down&gt;'}
    """
    text = f"[{space_name}] Job {notice.name} ({notice.job_id}) {_SAYS[notice.event]}"
    if notice.detail:
        detail = notice.detail
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 1] + "…"
        text += f": {detail}"
    return {"text": _escape(text)}


def _escape(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup: these three are escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
