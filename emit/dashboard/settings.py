"""A space's settings page: the form of every space setting (docs/api.md's PATCH), read
from the space and saved through `Runtime.update_space`, which checks them all at once:
a refused form changes nothing and says why next to the field it names.

Two settings are secrets, and never shown back: the signing secret (only whether one is
set) and the push headers' values (a header is shown as ``Name: ••••••``, and a line
left so keeps its value)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from quart import redirect, request

from ..domain.slack import DEFAULT_SLACK_EVENTS, SLACK_EVENTS
from ..errors import EmitError, InvalidRequest
from .common import admin_page, dashboard, page, pages, problem, runtime, url_for

HIDDEN = "••••••"
"""A push header's value, as the page shows it; a line left with it keeps the value."""
BACKOFF = ("initialSeconds", "factor", "maxSeconds")
FINAL = ("completed", "dead", "killed")
Values = dict[str, Any]
"""The form's fields by name, as the page shows them (text, or a list for checkboxes)."""


@pages.route("/spaces/<space_id>/settings", methods=["GET", "POST"])
@admin_page
async def settings(space_id: str) -> Any:
    try:
        space = await runtime().get_space(space_id)
    except EmitError as error:
        return await problem(error, url_for("dashboard.home"))
    current = dict(space.settings)
    if request.method == "GET":
        return await _form(space, current, _shown(current), saved="saved" in request.args)
    form = await request.form
    try:
        await runtime().update_space(space_id, _changes(form, current))
        dashboard().forget_space(space_id)  # its keys read afresh: a new rateLimit holds
    except EmitError as error:
        typed = {name: form.getlist(name) if name == "slackEvents" else form.get(name, "")
                 for name in _FIELDS}  # fmt: skip
        typed["signingSecret"] = ""  # never sent back, even refused
        return await _form(space, current, typed, error=error)
    return redirect(url_for("dashboard.settings", space_id=space_id, saved=1))


async def _form(
    space: Any,
    current: Mapping[str, Any],
    values: Values,
    *,
    saved: bool = False,
    error: EmitError | None = None,
) -> Any:
    defaults = runtime().retention
    return await page(
        "settings.html",
        400 if error else 200,
        space=space,
        values=values,
        secret_set=isinstance(current.get("signingSecret"), str),
        retention_defaults={status: getattr(defaults, status) for status in FINAL},
        slack_events=SLACK_EVENTS,
        hidden=HIDDEN,
        saved=saved,
        error=error,
        error_field=_where(error),
    )


_GROUPS = ("retryBackoff", "retention")
_FIELDS = (
    *(f"retryBackoff.{part}" for part in BACKOFF),
    *(f"retention.{status}" for status in FINAL),
    "signingSecret",
    "rateLimit",
    "pushUrl",
    "pushHeaders",
    "pushNames",
    "slackUrl",
    "slackEvents",
)


def _where(error: EmitError | None) -> str | None:
    """The form field an error belongs next to: the one it names, or the group of it
    (``retention`` for a bad status name); None for an error of no field."""
    field = None if error is None else error.field
    if field is None:
        return None
    if field in _FIELDS or field in _GROUPS:
        return field
    group = field.split(".")[0]
    return group if group in _GROUPS else None


def _shown(settings: Mapping[str, Any]) -> Values:
    """The form's fields for the settings as they are (secrets hidden)."""
    backoff = settings.get("retryBackoff") or {}
    retention = settings.get("retention") or {}
    headers = settings.get("pushHeaders") or {}
    values: Values = {f"retryBackoff.{part}": _text(backoff.get(part)) for part in BACKOFF}
    # A status kept forever is stored as null: shown as 0, which says the same.
    values |= {f"retention.{s}": _text(retention[s] or 0) for s in FINAL if s in retention}
    values |= {
        "signingSecret": "",
        "rateLimit": _text(settings.get("rateLimit")),
        "pushUrl": settings.get("pushUrl") or "",
        "pushHeaders": "\n".join(f"{name}: {HIDDEN}" for name in headers),
        "pushNames": ", ".join(settings.get("pushNames") or ()),
        "slackUrl": settings.get("slackUrl") or "",
        "slackEvents": list(settings.get("slackEvents") or sorted(DEFAULT_SLACK_EVENTS)),
    }
    return values


def _changes(form: Any, current: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH the form asks for: every setting it shows, a blank one removed (the
    signing secret only when asked to). What cannot be read as a number is passed on as
    text, for the runtime to refuse with its own message."""
    backoff = {part: _number(form.get(f"retryBackoff.{part}", "")) for part in BACKOFF}
    retention = {s: _number(form.get(f"retention.{s}", "")) for s in FINAL}
    slack_url = form.get("slackUrl", "").strip() or None
    changes: dict[str, Any] = {
        "retryBackoff": {k: v for k, v in backoff.items() if v is not None} or None,
        "retention": {k: v for k, v in retention.items() if v is not None} or None,
        "rateLimit": _number(form.get("rateLimit", "")),
        "pushUrl": form.get("pushUrl", "").strip() or None,
        "pushHeaders": _headers(form.get("pushHeaders", ""), current.get("pushHeaders") or {}),
        "pushNames": [n for n in re.split(r"[,\s]+", form.get("pushNames", "")) if n] or None,
        "slackUrl": slack_url,
        "slackEvents": form.getlist("slackEvents") if slack_url else None,
    }
    secret = form.get("signingSecret", "")
    if form.get("clearSigningSecret"):
        changes["signingSecret"] = None
    elif secret:
        changes["signingSecret"] = secret
    return changes


def _headers(text: str, current: Mapping[str, str]) -> dict[str, str] | None:
    """``Name: value`` lines; a value left hidden keeps the header's current value."""
    known = {name.lower(): value for name, value in current.items()}
    headers = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name:
            raise InvalidRequest(
                f"pushHeaders: write one header a line, as Name: value (not {line.strip()!r})",
                field="pushHeaders",
            )
        if value == HIDDEN:
            if name.lower() not in known:
                raise InvalidRequest(
                    f"pushHeaders: {name} is new: give its value", field="pushHeaders"
                )
            value = known[name.lower()]
        headers[name] = value
    return headers or None


def _number(text: str) -> int | float | str | None:
    """A field's number: None when blank, the text itself when it is not a number."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _text(number: object) -> str:
    """A stored number as the form shows it: ``5`` rather than ``5.0``."""
    if number is None:
        return ""
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)
