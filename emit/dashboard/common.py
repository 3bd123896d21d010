"""What every dashboard page shares: the blueprint, the runtime it speaks to, the session
and its CSRF token, and the way a page is rendered, refused or reports a problem."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec

from quart import Blueprint, Response, current_app, redirect, render_template, request, session
from quart import url_for as url_for

from ..domain.model import JobStatus
from ..errors import EmitError
from ..http.access import seen
from ..isotime import iso
from ..runtime import Runtime

P = ParamSpec("P")

CSRF_FIELD = "csrf"
STATUSES = [status.value for status in JobStatus]
EXTENSION = "emit.dashboard"

pages = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What the pages of one app speak to: its runtime, its admin key, and the API's
    key cache, told when a key is revoked or a space deleted."""

    runtime: Runtime
    admin_key: str | None
    forget_token: Callable[[str], None]
    forget_space: Callable[[str], None]


def dashboard() -> Dashboard:
    found: Dashboard = current_app.extensions[EXTENSION]
    return found


def runtime() -> Runtime:
    return dashboard().runtime


def session_secret(admin_key: str) -> bytes:
    """The cookie-signing secret: derived from the admin key (a new key, new sessions)."""
    return hashlib.sha256(b"emit dashboard session\0" + admin_key.encode()).digest()


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


async def csrf_ok() -> bool:
    form = await request.form
    given = form.get(CSRF_FIELD, "")
    expected = session.get(CSRF_FIELD)
    return isinstance(expected, str) and hmac.compare_digest(given, expected)


def signed_in() -> bool:
    return session.get("admin") is True


@pages.app_template_filter("time")
def _time(seconds: float | None) -> str:
    text = None if seconds is None else iso(seconds)
    return "" if text is None else text.replace("T", " ")[:19]


@pages.before_request
async def _route() -> None:
    # The access log and the metrics name a request by its route's template.
    if request.url_rule is not None:
        seen(request.scope).route = request.url_rule.rule


@pages.context_processor
async def _context() -> dict[str, Any]:
    return {"csrf_token": csrf_token(), "signed_in": signed_in()}


async def page(template: str, status: int = 200, **values: Any) -> Response:
    response = Response(await render_template(template, **values), status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def refused(message: str) -> Response:
    return await page("refused.html", 403, message=message)


async def problem(error: EmitError, back: str) -> Response:
    """A refusal of the runtime's, as a page with a way back."""
    return await page("problem.html", error.status, message=error.message, back=back)


def admin_page(view: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
    """Only for a signed-in admin; a form's post only with the session's CSRF token.
    Anything else gets the sign-in page (a GET) or 403 (a post)."""

    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
        if not signed_in():
            if request.method == "GET":
                return redirect(url_for("dashboard.signin", next=request.path))
            return await refused("Sign in first.")
        if request.method == "POST" and not await csrf_ok():
            return await refused("This form has expired: reload the page and try again.")
        response = await view(*args, **kwargs)
        if isinstance(response, Response):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return guarded
