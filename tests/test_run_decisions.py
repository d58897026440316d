"""Decisions of one run that the README promises: which time the market is judged at, what a
market check that cannot answer does, a timeout used up before the agent, where state lives,
what a skip imports, and Ctrl-C at any moment.

Most run the CLI in this process (`ws.call`); two call `runner.run`, where a step can be
replaced by one that blocks or fails on purpose. What a skip imports and Ctrl-C while the
arguments are parsed need a process of their own.
"""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FAKETIME, faketime

from tasty_oneshot import agent_phase, market, runner, secrets
from tasty_oneshot.ledger.sqlite import SqliteLedger
from tasty_oneshot.schedule import NYC

HEAVY = ("pydantic_ai", "pydantic", "mcp", "fastmcp", "tastytrade", "pandas", "asyncio", "httpx")


def jobs_file(ws, job: str, top: str = "") -> Path:
    return ws.write(
        "tasty-oneshot.yaml",
        "model: test\n"
        + ws.fake_mcp_yaml()
        + top
        + "jobs:\n  check:\n    instructions: Check\n"
        + "".join(f"    {line}\n" for line in job.splitlines()),
    )


def test_the_market_is_judged_at_the_slot_not_when_the_run_starts(ws):
    # A 3:58pm slot whose run starts at 4:01pm, after the close: the slot was in the session.
    jobs_file(ws, 'schedule: "3:58pm"\ndaily: true\nmax_delay: 600')
    result = ws.call("run", "--job", "check", "--scheduled", at="2026-11-30 21:01:00")
    assert result.returncode == 0, result.stderr
    [row] = ws.history()
    assert row["status"] == "ok", row
    assert row["slot"] == "2026-11-30T15:58:00-05:00"
    assert len(ws.server_starts()) == 1


def test_a_slot_before_the_open_is_a_skip_even_when_the_run_starts_after_it(ws):
    # The mirror case: a 9:28am slot run at 9:31 is judged at 9:28, when the market was shut.
    jobs_file(ws, 'schedule: "9:28am"\ndaily: true\nmax_delay: 600')
    result = ws.call("run", "--job", "check", "--scheduled", at="2026-11-30 14:31:00")
    assert result.returncode == 0, result.stderr
    [row] = ws.history()
    assert row["status"] == "skipped" and "market closed" in row["reason"], row
    assert ws.server_starts() == []


def test_a_market_check_that_cannot_answer_fails_the_run_and_never_proceeds(ws, monkeypatch):
    # The offline calendar is broken (its package raises on use) and there are no credentials:
    # nobody can say whether the market is open. That is a failure, never a skip or a run.
    import exchange_calendars

    def broken(name):
        raise RuntimeError("calendar data missing")

    monkeypatch.setattr(exchange_calendars, "get_calendar", broken)
    market._xnys.cache_clear()  # the calendar this process built before: asked again
    jobs_file(ws, "")
    result = ws.call("run", "--job", "check", at="2026-11-30 15:00:00")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [row] = ws.history()
    assert row["status"] == "failed" and row["exit_code"] == 1, row
    assert "market check failed" in row["reason"] and "calendar data missing" in row["reason"]
    assert ws.server_starts() == [], "the agent ran although the market check failed"


@pytest.fixture
def in_process(ws, monkeypatch):
    """runner.run in this process, in the workspace; fresh secrets; signal handlers restored."""
    monkeypatch.chdir(ws.root)
    for key in list(os.environ):
        if key.startswith(("TASTY", "OPENAI", "MODEL_", "STATE_DIRECTORY")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TASTY_ONESHOT_STATE_DIR", ws.env["TASTY_ONESHOT_STATE_DIR"])
    monkeypatch.setattr(secrets, "_values", set())
    return ws


def test_a_timeout_used_up_before_the_agent_ends_124_and_leaves_the_slot_free(
    in_process, monkeypatch
):
    ws = in_process
    jobs_file(ws, 'schedule: "9:30am"\ndaily: true\ntimeout: 0.3')

    async def blocking_check(at, cache_dir, credentials):
        # Like importing the offline calendar's pandas: blocks the event loop, so the timeout
        # cannot fire until it returns.
        time.sleep(0.8)
        day = at.astimezone(NYC).date()
        session = market.MarketDay(
            day,
            datetime(2026, 11, 30, 14, 30, tzinfo=UTC),
            datetime(2026, 11, 30, 21, 0, tzinfo=UTC),
            market.CALENDAR,
        )
        return market.Verdict(True, market.CALENDAR, session)

    monkeypatch.setattr(market, "check_market", blocking_check)
    monkeypatch.setattr(runner, "now_nyc", lambda: datetime(2026, 11, 30, 9, 31, tzinfo=NYC))
    spawned: list[object] = []  # the server is never spawned (its spawn is seen, not raced)
    monkeypatch.setattr(agent_phase, "_start_server", lambda run: spawned.append(run))
    code = runner.run(runner.RunRequest(job="check", scheduled=True))
    assert code == 124
    assert spawned == []
    ledger = SqliteLedger(ws.state)
    try:
        [row] = ledger.runs()
        assert row["status"] == "timeout" and row["exit_code"] == 124, row
        assert not ledger.slot_used("check", datetime(2026, 11, 30, 9, 30, tzinfo=NYC))
    finally:
        ledger.close()
    assert ws.server_starts() == []


def test_a_remote_mcp_url_is_registered_as_a_secret(in_process):
    ws = in_process
    token = "tok-a1b2c3d4e5f6"
    url = f"http://127.0.0.1:9/mcp/{token}"  # port 9 (discard): nothing answers
    ws.write(
        "tasty-oneshot.yaml",
        f"model: test\nmcp:\n  url: {url}\njobs:\n  check:\n    instructions: Check\n",
    )
    code = runner.run(
        runner.RunRequest(job="check", options={"ignore_market_hours": True, "timeout": 30.0})
    )
    assert code == 1
    assert secrets.redact(f"connecting to {url}") == "connecting to ***"
    assert secrets.redact(f"path /mcp/{token}") == "path /mcp/***"


# --- where state lives -----------------------------------------------------------------------


def test_systemds_state_directory_holds_the_ledger(ws, tmp_path):
    # What every generated unit relies on: StateDirectory= sets $STATE_DIRECTORY (a list
    # separated by ':' when a unit names several); the first is ours.
    ours, other = tmp_path / "var-lib" / "tasty-oneshot", tmp_path / "var-lib" / "other"
    del ws.env["TASTY_ONESHOT_STATE_DIR"]
    ws.env["STATE_DIRECTORY"] = f"{ours}:{other}"
    ws.env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    jobs_file(ws, "")
    result = ws.call("run", "--job", "check", at="2026-11-26 15:00:00")  # Thanksgiving: a skip
    assert result.returncode == 0, result.stderr
    assert (ours / "ledger.sqlite3").is_file()
    assert not other.exists() and not (tmp_path / "xdg-state").exists()
    assert (ours.stat().st_mode & 0o777) == 0o700
    [row] = ws.history()
    assert row["status"] == "skipped"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"TASTY_ONESHOT_STATE_DIR": "a", "STATE_DIRECTORY": "b", "XDG_STATE_HOME": "c"}, "a"),
        ({"STATE_DIRECTORY": "b:b2", "XDG_STATE_HOME": "c"}, "b"),
        ({"XDG_STATE_HOME": "c"}, "c/tasty-oneshot"),
        ({}, "home/.local/state/tasty-oneshot"),
    ],
)
def test_the_state_directory_is_chosen_in_the_documented_order(
    tmp_path, monkeypatch, variables, expected
):
    from tasty_oneshot import paths

    for key in ("TASTY_ONESHOT_STATE_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key, value in variables.items():
        monkeypatch.setenv(key, ":".join(str(tmp_path / v) for v in value.split(":")))
    assert paths.state_dir() == tmp_path / expected


# --- a skip stays light ----------------------------------------------------------------------


def test_a_skip_from_the_cached_market_day_imports_nothing_heavy(ws):
    if FAKETIME is None:
        pytest.skip("faketime is not installed")
    jobs_file(ws, "")
    at = "2026-11-26 15:00:00"  # Thanksgiving
    first = ws.call("run", "--job", "check", at=at)  # warms the market cache
    assert first.returncode == 0, first.stderr
    command = [*faketime(at), sys.executable, "-X", "importtime", "-m", "tasty_oneshot"]
    second = subprocess.run(
        [*command, "run", "--job", "check"],
        cwd=ws.root,
        env=ws.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in second.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "tasty_oneshot.runner" in imported, "importtime listed nothing: the check is blind"
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], f"a skip imported {heavy}"
    assert "shutil" not in imported, "argparse's own formatter is back: it imports shutil, lzma"
    assert [r["status"] for r in ws.history()] == ["skipped", "skipped"]


# --- Ctrl-C ----------------------------------------------------------------------------------

CTRL_C_WHILE_PARSING = """
import argparse, sys
import tasty_oneshot.cli as cli

def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
argparse.ArgumentParser.parse_args = interrupted
cli.main(sys.argv[1:])
"""


def test_ctrl_c_while_the_arguments_are_parsed_exits_130_without_a_traceback(ws):
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_PARSING, "run", "Check my positions"],
        cwd=ws.root,
        env=ws.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(ws.call("history", "--json").stdout) == []


def test_in_process_runs_give_their_place_back(in_process):
    # The CLI keeps its place until its process ends; a caller in this process must not
    # find its own earlier run's place still taken (that would be `busy` after its wait).
    ws = in_process
    jobs_file(ws, "ignore_market_hours: true\ntimeout: 60", top="max_parallel: 1\n")
    assert runner.run(runner.RunRequest(job="check")) == 0
    assert runner.run(runner.RunRequest(job="check")) == 0
    assert [row["status"] for row in ws.history()] == ["ok", "ok"]
