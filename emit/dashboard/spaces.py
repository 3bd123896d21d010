"""The spaces: the home page's list with counts, a space's page, its tokens and its
public token, creating and deleting spaces (the quick start's steps 1 and 2)."""

from __future__ import annotations

from typing import Any

from quart import redirect, render_template, request, session

from ..domain.scopes import PRESETS, SCOPES, SHORTHANDS
from ..errors import EmitError
from .charts import finish_chart
from .common import STATUSES, admin_page, dashboard, page, pages, problem, runtime, url_for

# ------------------------------------------------------------------------ home


@pages.route("/")
@admin_page
async def home() -> Any:
    spaces = []
    for space in await runtime().list_spaces():
        counts = await runtime().space(space.id).counts()
        spaces.append((space, {status.value: n for status, n in counts.items()}))
    charts = {s.id: finish_chart(runtime().finished_per_minute(s.id)) for s, _ in spaces}
    return await page("home.html", spaces=spaces, statuses=STATUSES, charts=charts)


# ---------------------------------------------------------------------- spaces


@pages.route("/spaces", methods=["POST"])
@admin_page
async def create_space() -> Any:
    name = (await request.form).get("name", "").strip()
    try:
        space = await runtime().create_space(name)
    except EmitError as error:
        return await problem(error, url_for("dashboard.home"))
    return redirect(url_for("dashboard.space", space_id=space.id))


@pages.route("/spaces/<space_id>")
@admin_page
async def space(space_id: str) -> Any:
    try:
        found = await runtime().get_space(space_id)
        tokens = await runtime().list_tokens(space_id)
        counts = await runtime().space(space_id).counts()
    except EmitError as error:
        return await problem(error, url_for("dashboard.home"))
    origin = request.host_url.rstrip("/")
    snippet = await render_template("snippet.txt", origin=origin, public_token=found.public_token)
    return await page(
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
        found = await runtime().get_space(space_id)
        if (await request.form).get("confirm", "") != found.name:
            return await page(
                "problem.html",
                400,
                message=f"Type the space's name, {found.name}, to delete it.",
                back=back,
            )
        await runtime().delete_space(space_id)
    except EmitError as error:
        return await problem(error, back)
    dashboard().forget_space(space_id)
    return redirect(url_for("dashboard.home"))


@pages.route("/spaces/<space_id>/rename", methods=["POST"])
@admin_page
async def rename_space(space_id: str) -> Any:
    back = url_for("dashboard.space", space_id=space_id)
    try:
        await runtime().rename_space(space_id, (await request.form).get("name", "").strip())
    except EmitError as error:
        return await problem(error, back)
    return redirect(back)


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
        made = await runtime().create_token(
            space_id,
            name=name,
            scopes=None if preset else chosen,
            preset=preset,
        )
    except EmitError as error:
        return await problem(error, back)
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
        found = await runtime().get_space(space_id)
    except EmitError as error:
        return await problem(error, url_for("dashboard.home"))
    return await page("token_made.html", space=found, token=made, scopes=made["scopes"])


@pages.route("/spaces/<space_id>/tokens/<token_id>/revoke", methods=["POST"])
@admin_page
async def revoke_token(space_id: str, token_id: str) -> Any:
    back = url_for("dashboard.space", space_id=space_id)
    try:
        await runtime().revoke_token(space_id, token_id)
    except EmitError as error:
        return await problem(error, back)
    dashboard().forget_token(token_id)
    return redirect(back + "#tokens")
