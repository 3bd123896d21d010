"""Signing in with the admin key, and out."""

from __future__ import annotations

import hmac
from typing import Any

from quart import redirect, request, session

from .common import admin_page, csrf_ok, csrf_token, dashboard, page, pages, url_for


@pages.route("/signin", methods=["GET", "POST"])
async def signin() -> Any:
    admin_key = dashboard().admin_key
    error = None
    status = 200
    if request.method == "POST":
        form = await request.form
        if not await csrf_ok():
            error, status = "This form has expired: try again.", 403
        elif admin_key is None:
            error, status = "This server has no admin key: nobody can sign in.", 403
        elif not hmac.compare_digest(form.get("key", "").encode(), admin_key.encode()):
            error, status = "That is not the admin key.", 403
        else:
            session.clear()
            session.permanent = True
            session["admin"] = True
            csrf_token()  # a fresh one for the session
            target = request.args.get("next", "")
            safe = target.startswith("/") and not target.startswith("//")
            return redirect(target if safe else url_for("dashboard.home"))
    return await page("signin.html", status, error=error, configured=admin_key is not None)


@pages.route("/signout", methods=["POST"])
@admin_page
async def signout() -> Any:
    session.clear()
    return redirect(url_for("dashboard.signin"))
