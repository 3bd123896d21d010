"""The CLI takes a space's name wherever it takes its id, refuses a name two spaces
share (listing their ids), and points an unknown space to ``emit spaces list``; the
listings show each space's public token and mark it among the keys. In process."""

import json
from pathlib import Path

import pytest

from emit.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_space_is_named_by_its_id_or_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    _, out, _ = run(capsys, "spaces", "create", "billing", "--json", "--data", data)
    space = json.loads(out)
    code, out, _ = run(capsys, "tokens", "create", "billing", "--name", "w", "--preset",
                       "worker", "--json", "--data", data)  # fmt: skip
    assert code == 0
    token = json.loads(out)
    code, out, _ = run(capsys, "tokens", "list", space["id"], "--json", "--data", data)
    assert token["id"] in {t["id"] for t in json.loads(out)["tokens"]}
    code, out, _ = run(capsys, "tokens", "revoke", "billing", token["id"], "--data", data)
    assert code == 0 and out == f"revoked {token['id']}\n"


def test_a_name_two_spaces_share_is_refused_with_their_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    ids = []
    for _ in range(2):
        _, out, _ = run(capsys, "spaces", "create", "twin", "--json", "--data", data)
        ids.append(json.loads(out)["id"])
    code, out, err = run(capsys, "tokens", "list", "twin", "--data", data)
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert "2 spaces are named 'twin'" in line and all(i in line for i in ids)
    assert run(capsys, "tokens", "list", ids[1], "--data", data)[0] == 0  # the id works


def test_an_unknown_space_points_to_the_listing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    run(capsys, "spaces", "create", "billing", "--data", data)
    code, _, err = run(capsys, "tokens", "create", "biling", "--name", "x", "--preset",
                       "worker", "--data", data)  # fmt: skip
    [line] = err.splitlines()
    assert code == 2 and "no space 'biling'" in line and "emit spaces list" in line


def test_the_listings_show_and_mark_the_public_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    _, out, _ = run(capsys, "spaces", "create", "billing", "--json", "--data", data)
    space = json.loads(out)
    run(capsys, "tokens", "create", "billing", "--name", "w", "--preset", "worker", "--data", data)
    _, out, _ = run(capsys, "spaces", "list", "--data", data)
    assert out.split() == [space["id"], space["publicToken"], "billing"]
    _, out, _ = run(capsys, "tokens", "list", "billing", "--data", data)
    marked = [line for line in out.splitlines() if "(the public token)" in line]
    assert len(marked) == 1 and space["publicToken"][:15] in marked[0]
    assert len(out.splitlines()) == 2
