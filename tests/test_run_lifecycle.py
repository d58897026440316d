"""One invocation of `run` from start to exit code.

The lock, the timeout, signals, a broken MCP server, limits, the fail-early checks, what goes
to stdout and stderr, what the MCP server is given, and the ledger `history` reads back. The
lock, signals, a timeout while the agent is still being imported and the standard streams are
tested on the real CLI in a process of its own; the rest runs the CLI in this process
(`ws.call`).
`--model test` is pydantic-ai's TestModel: it calls every offered tool once (account_overview
first), then answers with a JSON object of the tools' results.
"""

import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

LOG_LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - \S.*$"
)
CONTRACT_FIELDS = {
    "id",
    "job",
    "status",
    "reason",
    "slot",
    "started_at",
    "finished_at",
    "exit_code",
    "output",
    "model",
    "usage",
}
USAGE_FIELDS = {"requests", "input_tokens", "output_tokens", "tool_calls"}
RUN = ("run", "--job", "check", "--ignore-market-hours")


def jobs_file(ws, *server_args: str, extra: str = "") -> None:
    """A jobs file with job `check` (and `extra` jobs) on the fake MCP server."""
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n"
        + ws.fake_mcp_yaml(*server_args)
        + "jobs:\n  check:\n    instructions: Check my positions\n"
        + extra,
    )


def wait_for(condition, what: str, timeout: float = 30, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"exited {proc.returncode} while waiting for {what}:\n{err}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def wait_until_hanging(ws, proc: subprocess.Popen, tool: str = "account_overview") -> int:
    """Wait until the fake server is inside `tool` (which hangs); its pid."""
    wait_for(lambda: any(c["tool"] == tool for c in ws.calls()), f"a {tool} call", proc=proc)
    [start] = ws.server_starts()
    return start["pid"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie nobody has reaped yet is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_gone(pid: int, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # do not leave it behind
            pytest.fail(f"the MCP server (pid {pid}) outlived the run")
        time.sleep(0.1)


@pytest.fixture
def start(ws):
    """Start the CLI in the background; whatever a test leaves running is stopped after it."""
    started: list[subprocess.Popen] = []

    def start(*args: str, session: bool = False) -> subprocess.Popen:
        proc = subprocess.Popen(
            ws.command(*args),
            cwd=ws.root,
            env=ws.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=session,  # its own process group, to signal the group
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()  # lets the run stop its MCP server
    for proc in started:
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture(autouse=True)
def no_server_left_behind(ws):
    """Never leave a hung fake server running, whatever happened in the test."""
    yield
    for event in ws.server_starts():
        pid = event["pid"]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ours = b"fake_tasty_agent" in f.read()
        except OSError:
            continue
        if ours and alive(pid):
            os.kill(pid, signal.SIGKILL)


def offset_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None, text
    return moment


def assert_contract_row(row: dict) -> None:
    """A `history --json` object has every field the contract names, well typed."""
    assert not CONTRACT_FIELDS - row.keys(), row
    assert not USAGE_FIELDS - row["usage"].keys(), row
    assert isinstance(row["id"], int) and isinstance(row["exit_code"], int)
    assert all(isinstance(row["usage"][k], int) for k in USAGE_FIELDS)
    assert offset_time(row["started_at"]) <= offset_time(row["finished_at"])
    assert row["slot"] is None or offset_time(row["slot"])


# --- the lock --------------------------------------------------------------------------------


def test_eight_simultaneous_invocations_are_refused_while_one_runs(ws, start):
    jobs_file(ws, "--hang", "account_overview")
    first = start(*RUN)
    server_pid = wait_until_hanging(ws, first)

    began = time.monotonic()
    others = [start(*RUN) for _ in range(8)]
    results = []
    for proc in others:
        try:
            out, err = proc.communicate(timeout=max(0.1, began + 30 - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail("an invocation waited for the lock instead of exiting 75 at once")
        results.append((out, err, proc.returncode))
    elapsed = time.monotonic() - began

    host = os.uname().nodename
    for out, err, code in results:
        assert code == 75, err
        assert out == ""
        # the refusal names the lock and who holds it, not the ledger
        assert f"locks/check.lock, held by pid {first.pid} on {host})" in err, err
    # "at once": eight light processes on a small host, none waiting for the lock
    assert elapsed < 20, elapsed
    assert len(ws.server_starts()) == 1  # no refused invocation started a server
    assert first.poll() is None  # and none disturbed the run that holds the lock

    rows = ws.history("--job", "check")
    locked = [r for r in rows if r["status"] == "locked"]
    assert len(locked) == 8
    for row in locked:
        assert_contract_row(row)
        assert row["exit_code"] == 75 and row["usage"]["tool_calls"] == 0
    assert [r["status"] for r in rows if r["status"] != "locked"] == ["running"]

    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    assert first.returncode == 143
    assert_gone(server_pid)
    [held] = [r for r in ws.history() if r["status"] != "locked"]
    assert held["status"] == "interrupted" and held["exit_code"] == 143


def test_two_different_jobs_do_not_block_each_other(ws, start):
    quick = ws.fake_mcp_yaml().replace("\n  ", "\n      ").replace("mcp:", "    mcp:", 1)
    jobs_file(ws, "--hang", "account_overview", extra="  quick:\n    instructions: Hi\n" + quick)
    first = start(*RUN)
    wait_until_hanging(ws, first)
    result = ws.call("run", "--job", "quick", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    assert first.poll() is None  # `check` still holds its own lock
    assert {r["job"]: r["status"] for r in ws.history()} == {"quick": "ok", "check": "running"}


# --- timeout and signals -----------------------------------------------------------------------


def test_timeout_stops_a_hanging_tool_and_the_mcp_server(ws):
    # The timeout must strike while the run is inside the hung tool: when the fake server has
    # recorded the call. How long the server and the agent take to get there depends on the
    # host's load, so pydantic-ai is imported first (this process's time, not the run's), and
    # a run that timed out before the call was recorded is run again with twice the timeout.
    # Every one of them must stop on time: at its timeout, give or take the little a stop
    # takes (not the seconds a late timer would add).
    from tasty_oneshot import agent

    agent.import_pydantic_ai()
    jobs_file(ws, "--hang", "account_overview")
    for timeout in (6, 12, 24, 48):
        ws.env["TASTY_ONESHOT_STATE_DIR"] = str(ws.root / f"state-{timeout}")
        ws.record.unlink(missing_ok=True)
        started = time.monotonic()
        result = ws.call(*RUN, "--timeout", str(timeout))
        elapsed = time.monotonic() - started

        assert result.returncode == 124, result.stderr
        assert timeout <= elapsed < timeout + 2.5, (timeout, elapsed)
        [start] = ws.server_starts()
        assert_gone(start["pid"])
        [row] = ws.history()
        assert row["status"] == "timeout" and row["exit_code"] == 124
        assert "timeout" in row["reason"]
        took = offset_time(row["finished_at"]) - offset_time(row["started_at"])
        assert timeout - 1 <= took.total_seconds() <= timeout + 2, took  # whole seconds
        assert result.stdout == ""
        if ws.calls():
            break
    assert [c["tool"] for c in ws.calls()] == ["account_overview"]  # it did hang there


def test_timeout_bounds_the_whole_invocation(ws):
    # 1 s is shorter than starting the agent takes here: stopped on time all the same.
    jobs_file(ws, "--hang", "account_overview")
    started = time.monotonic()
    result = ws.cli(*RUN, "--timeout", "1")
    assert result.returncode == 124, result.stderr
    # Not a timing test: without the timeout the hung tool would hold the run until the
    # subprocess limit; the bound is loose because a loaded 2-core host imports slowly.
    assert time.monotonic() - started < 30
    for start in ws.server_starts():
        assert_gone(start["pid"])
    [row] = ws.history()
    assert row["status"] == "timeout"


@pytest.mark.parametrize(
    ("signum", "code", "group"),
    [
        (signal.SIGTERM, 143, False),  # kill PID
        (signal.SIGINT, 130, False),
        # systemd stopping the service signals the whole control group, the MCP server too
        (signal.SIGTERM, 143, True),
        # an ssh session that closes on a run started by hand
        (signal.SIGHUP, 129, False),
    ],
    ids=["SIGTERM", "SIGINT", "SIGTERM-to-group", "SIGHUP"],
)
def test_signal_stops_the_run_and_the_mcp_server(ws, start, signum, code, group):
    jobs_file(ws, "--hang", "account_overview")
    proc = start(*RUN, session=True)
    server_pid = wait_until_hanging(ws, proc)
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == code, err
    assert out == ""
    assert_gone(server_pid)
    [row] = ws.history()
    assert row["status"] == "interrupted" and row["exit_code"] == code
    assert signum.name in row["reason"]
    assert_contract_row(row)
    assert LOG_LINE.match(err.splitlines()[-1]) and "interrupted" in err.splitlines()[-1]


# --- failures --------------------------------------------------------------------------------


def test_mcp_server_that_crashes_at_start_fails_the_run(ws):
    jobs_file(ws, "--crash")
    result = ws.call(*RUN)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    [row] = ws.history()
    assert row["status"] == "failed" and row["exit_code"] == 1
    # the reason names the error, and where the server's own stderr went
    assert re.match(r"error: \w+", row["reason"]), row["reason"]
    log_file = re.search(r"MCP server log: (\S+?)\)", row["reason"])
    assert log_file and Path(log_file[1]).is_file(), row["reason"]
    assert row["reason"] in result.stderr  # and the log says the same
    assert ws.calls() == []


def test_usage_limit_fails_the_run_and_names_the_limit(ws):
    jobs_file(ws)
    result = ws.call(*RUN, "--max-tool-calls", "2")
    assert result.returncode == 1, result.stderr
    [row] = ws.history()
    assert row["status"] == "failed" and row["exit_code"] == 1
    assert "tool_calls_limit of 2" in row["reason"]
    assert len(ws.calls()) <= 2  # stopped before the calls over the limit were made


# --- fail early: exit 2, nothing runs, nothing recorded --------------------------------------


@pytest.mark.parametrize(
    "env",
    [{}, {"TASTYTRADE_CLIENT_SECRET": "s3cret-client"}, {"TASTYTRADE_REFRESH_TOKEN": "s3cret-rt"}],
)
def test_default_server_without_tastytrade_credentials_is_a_usage_error(ws, env):
    ws.env.update(env)
    ws.write("tasty-oneshot.yaml", "model: test\njobs:\n  check:\n    instructions: Hi\n")
    result = ws.call(*RUN)
    assert result.returncode == 2, result.stderr
    assert "TASTYTRADE_" in result.stderr
    for value in env.values():
        assert value not in result.stderr
    assert not (ws.state / "locks").exists()
    assert ws.history() == []


def test_openai_model_without_its_key_is_a_usage_error(ws):
    jobs_file(ws)
    result = ws.call(*RUN, "--model", "openai:gpt-5-mini")
    assert result.returncode == 2, result.stderr
    assert "OPENAI_API_KEY" in result.stderr
    assert ws.server_starts() == []
    assert ws.history() == []


# --- a run that works: streams, environment, ledger -------------------------------------------


def test_output_on_stdout_logs_on_stderr_and_only_tastytrade_variables_for_the_server(ws):
    secrets = {
        "TASTYTRADE_CLIENT_SECRET": "tt-client-secret-123",
        "TASTYTRADE_REFRESH_TOKEN": "tt-refresh-token-456",
        "TASTYTRADE_ACCOUNT_ID": "5WX01234",
        "OPENAI_API_KEY": "sk-openai-789",
        "SOME_OTHER_SECRET": "other-secret-000",
    }
    ws.env.update(secrets)
    jobs_file(ws)
    result = ws.cli(*RUN)
    assert result.returncode == 0, result.stderr

    # stdout: the agent's final output and nothing else
    output = json.loads(result.stdout)
    assert output["account_overview"] == "<account_overview>ok</account_overview>"
    # stderr: only log lines, in the contract's format
    lines = result.stderr.splitlines()
    assert lines
    for line in lines:
        assert LOG_LINE.match(line), line

    # the MCP server got the TastyTrade variables and none of the others
    [start] = ws.server_starts()
    given = set(start["env"])
    tastytrade = {name for name in secrets if name.startswith("TASTYTRADE_")}
    assert len(tastytrade) == 3 and given >= tastytrade
    assert "OPENAI_API_KEY" not in given and "SOME_OTHER_SECRET" not in given
    harmless = {"PATH", "HOME", "LANG", "LC_ALL"}
    leaked = {name for name in ws.env if not name.startswith("TASTYTRADE_")} & given - harmless
    assert leaked == set()

    history = ws.call("history", "--json")
    for text in (result.stdout, result.stderr, history.stdout):
        for value in secrets.values():
            assert value not in text

    [row] = json.loads(history.stdout)
    assert_contract_row(row)
    assert row["job"] == "check" and row["status"] == "ok" and row["exit_code"] == 0
    assert isinstance(row["reason"], str) and row["slot"] is None
    assert row["output"] == result.stdout.rstrip("\n")
    assert row["model"] == "test"
    usage = row["usage"]
    assert usage["requests"] >= 2 and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    # read-only: TestModel called each of the 6 tools that are not order tools, once
    assert usage["tool_calls"] == len(ws.calls()) == 6


# --- history ---------------------------------------------------------------------------------

THANKSGIVING = "2026-11-26 14:3{}:00"  # 9:3x NYC on a market holiday: cheap skipped runs


def test_history_filters_by_job_and_limits_newest_first(ws):
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n"
        "  alpha:\n    instructions: A\n    schedule: 9:30am\n    daily: true\n"
        "  beta:\n    instructions: B\n    market_open: true\n    daily: true\n",
    )
    for minute, job in enumerate(["alpha", "beta", "alpha", "alpha"], start=1):
        result = ws.call("run", "--job", job, "--scheduled", at=THANKSGIVING.format(minute))
        assert result.returncode == 0, result.stderr

    rows = ws.history()
    assert [r["job"] for r in rows] == ["alpha", "alpha", "beta", "alpha"]  # newest first
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids, reverse=True)
    for row in rows:
        assert_contract_row(row)
        assert row["status"] == "skipped" and row["exit_code"] == 0
        assert row["output"] is None and row["model"] == "test"
    # a scheduled run of a wall-clock schedule records its slot
    assert {r["slot"] for r in rows} == {"2026-11-26T09:30:00-05:00"}

    latest_alpha = ws.history("--job", "alpha", "--limit", "2")
    assert [r["id"] for r in latest_alpha] == [r["id"] for r in rows if r["job"] == "alpha"][:2]
    assert [r["job"] for r in ws.history("--job", "beta")] == ["beta"]
    assert [r["id"] for r in ws.history("--limit", "1")] == ids[:1]
    assert ws.history("--job", "gamma") == []
