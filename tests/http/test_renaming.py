"""Renaming a space: ``PATCH /api/v1/spaces/{id}`` with ``name`` (alone or with
settings), validated as on create; a bad name or setting changes nothing."""

from __future__ import annotations

import trio

import emit

from .conftest import Server


async def test_a_space_is_renamed_and_a_bad_name_refused(server: Server) -> None:
    with trio.fail_after(30):
        http, admin = server.client, server.headers("admin")
        base = f"/api/v1/spaces/{server.space}"
        renamed = await http.patch(base, json={"name": "emails"}, headers=admin)
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "emails" and renamed.json()["id"] == server.space
        assert (await http.get(base, headers=admin)).json()["name"] == "emails"
        both = await http.patch(
            base, json={"name": "mail", "rateLimit": 50}, headers=admin
        )  # fmt: skip
        assert both.json()["name"] == "mail" and both.json()["settings"]["rateLimit"] == 50
        for bad in ("", "x" * 201, None, 5):
            refused = await http.patch(base, json={"name": bad}, headers=admin)
            assert refused.status_code == 400, bad
            assert "name must be a string of 1 to 200" in refused.json()["error"]["message"]
        # A bad setting beside a good name: neither is applied
        refused = await http.patch(base, json={"name": "new", "colour": "red"}, headers=admin)
        assert refused.status_code == 400
        assert (await server.rt.get_space(server.space)).name == "mail"
        worker = await http.patch(base, json={"name": "x"}, headers=server.headers("worker"))
        assert worker.status_code == 403  # only the admin renames


async def test_the_runtime_renames(server: Server) -> None:
    with trio.fail_after(30):
        space = await server.rt.rename_space(server.other_space, "  spaced  ")
        assert space.name == "  spaced  "  # as given: the dashboard strips its field
        try:
            await server.rt.rename_space(server.other_space, "")
        except emit.InvalidRequest as exc:
            assert exc.field == "name"
        else:
            raise AssertionError("an empty name was taken")
        listed = {s.id: s.name for s in await server.rt.list_spaces()}
        assert listed[server.other_space] == "  spaced  "
