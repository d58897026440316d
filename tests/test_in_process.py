"""The in-process form of the CLI (`ws.call`) that most tests use: it must give what the real
CLI in a subprocess (`ws.cli`) gives, and leave this process as it found it."""

import json
import logging
import os
import warnings

from tasty_oneshot import secrets


def test_call_gives_what_the_real_cli_gives(ws):
    at = "2026-11-25 15:00:00"  # Thanksgiving, its early close, then a Saturday
    args = ("next", "--schedule", "9:30am", "--daily", "--count", "3", "--json")
    called, spawned = ws.call(*args, at=at), ws.cli(*args, at=at)
    assert (called.returncode, called.stdout) == (spawned.returncode, spawned.stdout)
    assert [row["market_open"] for row in json.loads(called.stdout)] == [False, True, False]

    ws.write("tasty-oneshot.yaml", "jobs:\n  morning:\n    instructions: x\n    schedule: 25pm\n")
    called, spawned = ws.call("next", "--job", "morning"), ws.cli("next", "--job", "morning")
    assert called.returncode == spawned.returncode == 2
    assert called.stdout == spawned.stdout == ""
    # The same one line, but for its time stamp.
    assert called.stderr.split(" - ", 1)[1] == spawned.stderr.split(" - ", 1)[1]
    assert "schedule" in called.stderr and called.stderr.count("\n") == 1


def test_call_leaves_the_process_as_it_found_it(ws, monkeypatch):
    # What the CLI changes is first set to what it does not set it to, so that a change left
    # behind shows: the levels setup_logging sets, library warnings (a run's agent phase
    # logs them), the umask (doctor narrows it to 0077).
    loggers = [logging.getLogger(name) for name in ("", "tasty_oneshot", "apprise")]
    levels = [logger.level for logger in loggers]
    umask = os.umask(0o022)

    def showwarning(*args, **kwargs) -> None:
        pass

    monkeypatch.setattr(warnings, "showwarning", showwarning)
    try:
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
        state = _process_state()
        ws.env["OPENAI_API_KEY"] = "sk-a-secret-of-this-call"
        ws.write(".env", "EXTRA_FROM_DOTENV=1\n")
        result = ws.call("next", "--schedule", "9:30am", "--daily", at="2026-03-08 06:00:00")
        assert result.returncode == 0 and "2026-03-09 09:30" in result.stdout
        assert _process_state() == state
        ws.write(
            "tasty-oneshot.yaml",
            "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n  check:\n    instructions: x\n",
        )
        result = ws.call("run", "--job", "check", "--ignore-market-hours")
        assert result.returncode == 0, result.stderr
        assert _process_state() == state
        result = ws.call("doctor", "--job", "check")
        assert "ledger" in result.stdout, result.stderr
        assert _process_state() == state
    finally:
        os.umask(umask)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _process_state() -> dict:
    """What a CLI invocation may change in this process."""
    umask = os.umask(0o022)
    os.umask(umask)
    return {
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "handlers": logging.getLogger().handlers[:],
        "secrets": secrets._values,
        "levels": {
            name: logging.getLogger(name).level for name in ("", "tasty_oneshot", "apprise")
        },
        "showwarning": warnings.showwarning,
        "umask": umask,
    }
