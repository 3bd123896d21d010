"""``emit serve``'s flags from the environment (``EMIT_`` + the flag's name), refused as
the flags are; ``--help`` gives every option a help line and its default; docs/cli.md
lists every flag with its variable. In process, through the parser and ``main``."""

import argparse
import re
from pathlib import Path

import pytest

from emit.cli import _parser, env_name, main

ROOT = Path(__file__).resolve().parents[2]


def serve_parser() -> argparse.ArgumentParser:
    [commands] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    serve: argparse.ArgumentParser = commands.choices["serve"]
    return serve


def serve_options() -> list[argparse.Action]:
    return [a for a in serve_parser()._actions if a.option_strings and a.dest != "help"]


def test_every_serve_flag_has_a_variable_named_after_it() -> None:
    names = {action.option_strings[-1]: env_name(action) for action in serve_options()}
    assert names["--port"] == "EMIT_PORT" and names["--data"] == "EMIT_DATA"
    assert names["--callback-first-delay"] == "EMIT_CALLBACK_FIRST_DELAY"
    for flag, name in names.items():
        assert name == "EMIT_" + flag.removeprefix("--").upper().replace("-", "_")


def test_a_variable_sets_its_flag_and_a_flag_given_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMIT_PORT", "9000")
    monkeypatch.setenv("EMIT_HOST", "0.0.0.0")
    monkeypatch.setenv("EMIT_RATE_LIMIT", "50")
    monkeypatch.setenv("EMIT_SYNCHRONOUS", "NORMAL")
    monkeypatch.setenv("EMIT_ALLOW_PRIVATE_CALLBACKS", "yes")
    monkeypatch.setenv("EMIT_LOG_FORMAT", "json")
    monkeypatch.setenv("EMIT_CALLBACK_TRIES", "")  # empty: as if unset
    args = _parser().parse_args(["serve"])
    assert (args.port, args.host, args.rate_limit, args.synchronous) == (
        9000,
        "0.0.0.0",
        50.0,
        "NORMAL",
    )
    assert args.allow_private_callbacks is True and args.log_format == "json"
    assert args.callback_tries == 8
    args = _parser().parse_args(["serve", "--port", "9001", "--log-format", "text"])
    assert args.port == 9001 and args.log_format == "text"
    monkeypatch.setenv("EMIT_ALLOW_PRIVATE_CALLBACKS", "0")
    assert _parser().parse_args(["serve"]).allow_private_callbacks is False


def test_every_flag_can_be_set_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    given = {"--data": "d", "--host": "::1", "--synchronous": "EXTRA", "--log-level": "debug",
             "--log-format": "json", "--allow-private-callbacks": "true",
             "--store": "postgresql://emit@db.internal/emit",
             "--cluster-secret": "s" * 16}  # fmt: skip
    for action in serve_options():
        flag = action.option_strings[-1]
        value = given.get(flag, "7")
        monkeypatch.setenv(env_name(action), value)
    args = vars(_parser().parse_args(["serve"]))
    for action in serve_options():
        assert args[action.dest] != action.default, action.dest


BAD = [
    ("EMIT_PORT", "99999"),
    ("EMIT_PORT", "http"),
    ("EMIT_MAX_BODY", "0"),
    ("EMIT_RATE_LIMIT", "nan"),
    ("EMIT_GRACE", "-1"),
    ("EMIT_CALLBACK_TRIES", "2.5"),
    ("EMIT_SYNCHRONOUS", "full"),
    ("EMIT_LOG_LEVEL", "loud"),
    ("EMIT_LOG_FORMAT", "xml"),
    ("EMIT_ALLOW_PRIVATE_CALLBACKS", "maybe"),
    ("EMIT_STORE", "mysql://emit@db/emit"),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_a_bad_variable_is_one_line_naming_it_and_status_2_and_makes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data", str(data)])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert out == "" and line.startswith(f"emit serve: environment variable {name}: ")
    assert repr(value) in line and not data.exists()


def test_a_bad_serve_variable_does_not_touch_the_other_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMIT_PORT", "nope")
    assert main(["spaces", "create", "x", "--data", str(tmp_path / "d")]) == 0


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += parsers(sub)
    return found


def test_help_gives_every_option_a_line_and_its_default() -> None:
    for parser in parsers(_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest in {"help", "version"}:
                continue
            assert action.help, f"{parser.prog} {action.dest}: no help"
            if action.option_strings:
                said = action.help
                assert "default" in said or "required" in said, f"{parser.prog} {action.dest}"
        if parser.prog == "emit serve":
            for action in serve_options():
                assert env_name(action) in " ".join(text.split())


def test_docs_list_every_serve_flag_with_its_variable_and_default() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    rows = {}
    for line in doc.splitlines():
        match = re.match(r"\| `(--[a-z-]+)[^`]*` \| `(EMIT_[A-Z_]+)` \| ([^|]+) \|", line)
        if match:
            rows[match[1]] = (match[2], match[3])
    for action in serve_options():
        flag = action.option_strings[-1]
        assert flag in rows, f"docs/cli.md has no row for {flag}"
        name, default = rows[flag]
        assert name == env_name(action)
        if action.default not in (None, False):
            shown = (
                f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
            )
            assert shown in default, f"{flag}: docs say {default.strip()}, the code {shown}"
