"""The dashboard: server-rendered pages (Jinja2) at ``/`` for the admin, served by the
same Quart-Trio app as the API (see docs/dashboard.md).

Signing in takes the admin key; the session is Quart's signed cookie (HttpOnly,
SameSite=Strict), signed with a secret derived from the admin key, so changing the key
ends every session. Every form carries the session's CSRF token. The pages reach the
engine only through `Runtime`, as the API's routes do. Each group of pages is a module
adding its routes to `common.pages`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta

from quart_trio import QuartTrio

from ..runtime import Runtime
from . import access, jobs, spaces  # noqa: F401  (their routes, on the blueprint)
from . import settings as _settings  # noqa: F401  (a space's settings page)
from .common import EXTENSION, Dashboard, pages, session_secret

SESSION_HOURS = 12
COOKIE = "emit_session"


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
    app.extensions[EXTENSION] = Dashboard(runtime, admin_key, forget_token, forget_space)
    app.register_blueprint(pages)
