"""The dashboard: server-rendered pages (Jinja2) at ``/`` for the admin, served by the
same Quart-Trio app as the API (see docs/dashboard.md).

Signing in takes the admin key; the session is Quart's signed cookie (HttpOnly,
SameSite=Strict), signed with a secret derived from the admin key, so changing the key
ends every session. Every form carries the session's CSRF token. The pages reach the
engine only through `Runtime`, as the API's routes do.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import wraps
from typing import Any, ParamSpec

from quart import Blueprint, Response, redirect, render_template, request, session, url_for
from quart_trio import QuartTrio

from ..domain.model import JobStatus
from ..domain.scopes import PRESETS, SCOPES, SHORTHANDS
from ..errors import EmitError
from ..http.access import seen
from ..isotime import iso
from ..runtime import Runtime

P = ParamSpec("P")

SESSION_HOURS = 12
CSRF_FIELD = "csrf"
COOKIE = "emit_session"
STATUSES = [status.value for status in JobStatus]


def session_secret(admin_key: str) -> bytes:
    """The cookie-signing secret: derived from the admin key (a new key, new sessions)."""
    return hashlib.sha256(b"emit dashboard session\0" + admin_key.encode()).digest()


def _csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def _signed_in() -> bool:
    return session.get("admin") is True


def add_dashboard(
    app: QuartTrio,
    runtime: Runtime,
    admin_key: str | None,
    forget_token: Callable[[str], None],
    forget_space: Callable[[str], None],
) -> None:
    """Serve the dashboard from ``app``. Without an admin key nobody can sign in: the
    sign-in page says so."""
    app.secret_key = session_secret(admin_key or secrets.token_hex(32))
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    pages = Blueprint(
        "dashboard",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/dashboard/static",
    )

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
        return {"csrf_token": _csrf_token(), "signed_in": _signed_in()}

    def admin_page(
        view: Callable[P, Awaitable[Any]],
    ) -> Callable[P, Awaitable[Any]]:
        """Only for a signed-in admin; a form's post only with the session's CSRF
        token. Anything else gets the sign-in page (a GET) or 403 (a post)."""

        @wraps(view)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            if not _signed_in():
                if request.method == "GET":
                    return redirect(url_for("dashboard.signin", next=request.path))
                return await _refused("Sign in first.")
            if request.method == "POST" and not await _csrf_ok():
                return await _refused("This form has expired: reload the page and try again.")
            response = await view(*args, **kwargs)
            if isinstance(response, Response):
                response.headers.setdefault("Cache-Control", "no-store")
            return response

        return guarded

    async def _csrf_ok() -> bool:
        form = await request.form
        given = form.get(CSRF_FIELD, "")
        expected = session.get(CSRF_FIELD)
        return isinstance(expected, str) and hmac.compare_digest(given, expected)

    async def _refused(message: str) -> Response:
        page = await render_template("refused.html", message=message)
        return Response(page, status=403)

    async def _page(template: str, status: int = 200, **values: Any) -> Response:
        response = Response(await render_template(template, **values), status=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    # ------------------------------------------------------------------ signing in

    @pages.route("/signin", methods=["GET", "POST"])
    async def signin() -> Any:
        error = None
        status = 200
        if request.method == "POST":
            form = await request.form
            if not await _csrf_ok():
                error, status = "This form has expired: try again.", 403
            elif admin_key is None:
                error, status = "This server has no admin key: nobody can sign in.", 403
            elif not hmac.compare_digest(form.get("key", "").encode(), admin_key.encode()):
                error, status = "That is not the admin key.", 403
            else:
                session.clear()
                session.permanent = True
                session["admin"] = True
                _csrf_token()  # a fresh one for the session
                target = request.args.get("next", "")
                safe = target.startswith("/") and not target.startswith("//")
                return redirect(target if safe else url_for("dashboard.home"))
        return await _page("signin.html", status, error=error, configured=admin_key is not None)

    @pages.route("/signout", methods=["POST"])
    @admin_page
    async def signout() -> Any:
        session.clear()
        return redirect(url_for("dashboard.signin"))

    # ------------------------------------------------------------------------ home

    @pages.route("/")
    @admin_page
    async def home() -> Any:
        spaces = []
        for space in await runtime.list_spaces():
            counts = await runtime.space(space.id).counts()
            spaces.append((space, {status.value: n for status, n in counts.items()}))
        return await _page("home.html", spaces=spaces, statuses=STATUSES)

    # ---------------------------------------------------------------------- spaces

    @pages.route("/spaces", methods=["POST"])
    @admin_page
    async def create_space() -> Any:
        name = (await request.form).get("name", "").strip()
        try:
            space = await runtime.create_space(name)
        except EmitError as error:
            return await _problem(error, url_for("dashboard.home"))
        return redirect(url_for("dashboard.space", space_id=space.id))

    async def _problem(error: EmitError, back: str) -> Response:
        return await _page("problem.html", error.status, message=error.message, back=back)

    @pages.route("/spaces/<space_id>")
    @admin_page
    async def space(space_id: str) -> Any:
        try:
            found = await runtime.get_space(space_id)
            tokens = await runtime.list_tokens(space_id)
            counts = await runtime.space(space_id).counts()
        except EmitError as error:
            return await _problem(error, url_for("dashboard.home"))
        origin = request.host_url.rstrip("/")
        snippet = await render_template(
            "snippet.txt", origin=origin, public_token=found.public_token
        )
        return await _page(
            "space.html",
            space=found,
            snippet=snippet,
            tokens=[token for token in tokens if not token.public],
            counts={status.value: n for status, n in counts.items()},
            statuses=STATUSES,
            scopes=sorted(SCOPES),
            shorthands={name: sorted(s) for name, s in SHORTHANDS.items()},
            presets={name: sorted(s) for name, s in PRESETS.items()},
        )

    @pages.route("/spaces/<space_id>/delete", methods=["POST"])
    @admin_page
    async def delete_space(space_id: str) -> Any:
        back = url_for("dashboard.space", space_id=space_id)
        try:
            found = await runtime.get_space(space_id)
            if (await request.form).get("confirm", "") != found.name:
                return await _page(
                    "problem.html",
                    400,
                    message=f"Type the space's name, {found.name}, to delete it.",
                    back=back,
                )
            await runtime.delete_space(space_id)
        except EmitError as error:
            return await _problem(error, back)
        forget_space(space_id)
        return redirect(url_for("dashboard.home"))

    # ---------------------------------------------------------------------- tokens

    @pages.route("/spaces/<space_id>/tokens", methods=["POST"])
    @admin_page
    async def create_token(space_id: str) -> Any:
        form = await request.form
        back = url_for("dashboard.space", space_id=space_id)
        name = form.get("name", "").strip()
        preset = form.get("preset") or None
        chosen = form.getlist("scopes")
        try:
            made = await runtime.create_token(
                space_id,
                name=name,
                scopes=None if preset else chosen,
                preset=preset,
            )
        except EmitError as error:
            return await _problem(error, back)
        # Shown once, by a GET after this post (a reload must not make another key):
        # the session carries it to that page, which takes it out.
        session["new_key"] = {"id": made.id, "name": made.name, "key": made.key,
                              "scopes": sorted(made.scopes)}  # fmt: skip
        return redirect(url_for("dashboard.token_made", space_id=space_id))

    @pages.route("/spaces/<space_id>/tokens/new")
    @admin_page
    async def token_made(space_id: str) -> Any:
        made = session.pop("new_key", None)
        if not isinstance(made, dict):
            return redirect(url_for("dashboard.space", space_id=space_id) + "#tokens")
        try:
            found = await runtime.get_space(space_id)
        except EmitError as error:
            return await _problem(error, url_for("dashboard.home"))
        return await _page("token_made.html", space=found, token=made, scopes=made["scopes"])

    @pages.route("/spaces/<space_id>/tokens/<token_id>/revoke", methods=["POST"])
    @admin_page
    async def revoke_token(space_id: str, token_id: str) -> Any:
        back = url_for("dashboard.space", space_id=space_id)
        try:
            await runtime.revoke_token(space_id, token_id)
        except EmitError as error:
            return await _problem(error, back)
        forget_token(token_id)
        return redirect(back + "#tokens")

    app.register_blueprint(pages)
