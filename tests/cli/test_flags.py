"""``emit serve``'s numeric flags: a bad value is refused in one line naming the flag, with
exit status 2, before anything is made. In process through ``main`` (quick), and the
real entry point in a subprocess for the port."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from emit.callbacks.policy import CallbackPolicy
from emit.cli import main

BAD = [
    ("--port", "99999"),
    ("--port", "-5"),
    ("--port", "65536"),
    ("--port", "http"),
    ("--max-body", "0"),
    ("--max-body", "-1"),
    ("--max-body", "1.5"),
    ("--rate-limit", "0"),
    ("--rate-limit", "nan"),
    ("--rate-limit", "inf"),
    ("--key-cache-seconds", "-1"),
    ("--key-cache-seconds", "nan"),
    ("--key-cache-seconds", "inf"),
    ("--grace", "-1"),
    ("--grace", "nan"),
    ("--grace", "inf"),
    ("--send-timeout", "0"),
    ("--send-timeout", "-1"),
    ("--send-timeout", "nan"),
    ("--callback-tries", "0"),
    ("--callback-tries", "5000"),
    ("--callback-tries", "2.5"),
    ("--callback-first-delay", "-1"),
    ("--callback-first-delay", "nan"),
    ("--callback-first-delay", "inf"),
    ("--callback-factor", "0.5"),
    ("--callback-factor", "nan"),
    ("--callback-factor", "inf"),
    ("--callback-timeout", "0"),
    ("--callback-timeout", "nan"),
    ("--callback-timeout", "inf"),
]


@pytest.mark.parametrize(("flag", "value"), BAD)
def test_a_bad_numeric_flag_is_one_line_and_status_2_and_makes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data", str(data), flag, value])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert flag in line and "Traceback" not in err
    assert not data.exists()


def test_retries_whose_longest_wait_overflows_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    flags = ["--callback-tries", "100", "--callback-factor", "1e300"]
    assert main(["serve", "--data", str(data), *flags]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "wait" in line and not data.exists()


@pytest.mark.parametrize(
    "policy",
    [
        {"tries": 100, "factor": 1e300},
        {"first_delay": float("nan")},
        {"first_delay": float("inf")},
        {"factor": float("nan")},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
    ],
)
def test_a_callback_policy_whose_waits_are_not_finite_numbers_is_refused(
    policy: dict[str, float],
) -> None:
    with pytest.raises(ValueError):
        CallbackPolicy(**policy)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", ["99999", "-5"])
def test_the_real_entry_point_refuses_a_bad_port_before_making_anything(
    tmp_path: Path, port: str
) -> None:
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "emit", "serve", "--data", str(data), "--port", port],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert "--port" in line and "0 to 65535" in line
    assert done.stdout == "" and not data.exists()


def test_the_send_timeout_reaches_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--send-timeout`` is the HTTP settings' (the time limit on every write)."""
    import trio

    from emit.http import server
    from emit.http.settings import HttpSettings

    seen: list[HttpSettings] = []

    async def serve(*args: object, settings: HttpSettings, task_status: Any, **kw: object) -> None:
        seen.append(settings)
        task_status.started(["http://127.0.0.1:1"])
        await trio.lowlevel.checkpoint()  # served out at once: the CLI stops

    monkeypatch.setattr(server, "serve", serve)
    main(["serve", "--data", str(tmp_path / "data"), "--send-timeout", "2.5"])
    [settings] = seen
    assert settings.send_timeout == 2.5


@pytest.mark.parametrize(
    ("flag", "env", "token"),
    [
        (None, None, None),
        (None, "from-env", "from-env"),
        ("from-flag", "from-env", "from-flag"),
        ("", "from-env", None),  # an empty flag turns the variable's token off
    ],
)
def test_the_metrics_token_comes_from_the_flag_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str | None, env: str | None,
    token: str | None,
) -> None:  # fmt: skip
    import trio

    from emit.http import server
    from emit.http.settings import HttpSettings

    seen: list[HttpSettings] = []

    async def serve(*args: object, settings: HttpSettings, task_status: Any, **kw: object) -> None:
        seen.append(settings)
        task_status.started(["http://127.0.0.1:1"])
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr(server, "serve", serve)
    if env is None:
        monkeypatch.delenv("EMIT_METRICS_TOKEN", raising=False)
    else:
        monkeypatch.setenv("EMIT_METRICS_TOKEN", env)
    extra = [] if flag is None else ["--metrics-token", flag]
    main(["serve", "--data", str(tmp_path / "data"), *extra])
    [settings] = seen
    assert settings.metrics_token == token
