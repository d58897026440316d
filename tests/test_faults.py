"""An unlucky run: the ledger held locked or the disk full at the end, a server that prints
its secrets or breaks the protocol or ignores SIGTERM, stdout that cannot be written, a run
killed with SIGKILL. The outcome is never lost once the agent started.

Each fault is real: a second process holding SQLite's exclusive lock, a small tmpfs that
fills (where mounting is allowed), a fake MCP server misbehaving on purpose. A run the test
must reach while it runs, or whose standard streams or death are the point, is a CLI in a
process of its own; the others run the CLI in this process (`ws.call`).
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import call_cli
from test_run_lifecycle import LOG_LINE, alive, assert_gone, jobs_file, wait_for

RUN = ("run", "--job", "check", "--ignore-market-hours")
SECRET = "tt-refresh-token-s3cr3t-value"
CLIENT_SECRET = "tt-client-secret-s3cr3t-value"


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and "Traceback" not in result.stderr, result.stderr
    return lines[-1]


# --- the ledger cannot take the outcome ---------------------------------------------------------

HOLD_LEDGER = textwrap.dedent(
    """
    import sqlite3, sys, time
    from pathlib import Path

    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    Path(sys.argv[2]).write_text("held")
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
    db.execute("ROLLBACK")
    """
)


def test_a_ledger_held_locked_at_the_end_keeps_the_outcome_for_the_next_run(ws, tmp_path):
    go, held, release = tmp_path / "go", tmp_path / "held", tmp_path / "release"
    jobs_file(ws, "--wait-for", str(go))
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "1"  # seconds to wait for a locked ledger
    run = subprocess.Popen(
        ws.command(*RUN), cwd=ws.root, env=ws.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: ws.calls(), "the first tool call", proc=run)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LEDGER, str(ws.state / "ledger.sqlite3"), held, release]
    )
    try:
        wait_for(held.exists, "the ledger to be held")
        go.write_text("go")  # the agent finishes while the ledger is held
        out, err = run.communicate(timeout=60)
        # The outcome reaches stdout and the exit code, and is kept for later.
        assert run.returncode == 0, err
        assert "account_overview" in out
        assert "Traceback" not in err and all(LOG_LINE.match(line) for line in err.splitlines())
        kept = list((ws.state / "spool").glob("*.json"))
        assert len(kept) == 1, err
        assert f"kept in {kept[0]}" in err
        assert oct(kept[0].stat().st_mode & 0o777) == oct(0o600)
    finally:
        release.write_text("release")
        holder.wait(timeout=30)
    # The next invocation that can writes it in; the row is ok, not `running` forever.
    [row] = ws.history()
    assert row["status"] == "ok" and row["exit_code"] == 0, row
    assert "account_overview" in row["output"]
    assert list((ws.state / "spool").glob("*.json")) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs for the state directory; skipped where mounting is not allowed."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_during_the_run_loses_no_outcome(ws, tmp_path, small_disk):
    go = tmp_path / "go"
    jobs_file(ws, "--wait-for", str(go))
    ws.env["TASTY_ONESHOT_STATE_DIR"] = str(small_disk / "state")
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "1"
    run = subprocess.Popen(
        ws.command(*RUN), cwd=ws.root, env=ws.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: ws.calls(), "the first tool call", proc=run)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    go.write_text("go")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "account_overview" in out
    assert "Traceback" not in err
    assert re.search(r"WARNING - .*kept in .*spool", err), err
    filler.unlink()  # space again: the next invocation writes the outcome in
    [row] = ws.history()
    assert row["status"] == "ok" and "account_overview" in row["output"], row


# --- the MCP server misbehaves ------------------------------------------------------------------


def test_the_servers_log_is_private_masked_headed_and_bounded(ws):
    jobs_file(ws, "--print-env")
    ws.env.update(TASTYTRADE_REFRESH_TOKEN=SECRET, TASTYTRADE_CLIENT_SECRET=CLIENT_SECRET)
    for _ in range(2):
        assert ws.call(*RUN).returncode == 0
    log = ws.state / "logs" / "check.mcp.log"
    text = log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert SECRET not in text and CLIENT_SECRET not in text
    assert "TASTYTRADE_REFRESH_TOKEN=***" in text  # the line is kept, the value masked
    ids = [row["id"] for row in reversed(ws.history())]
    header = r"^=== check: run (\d+), (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d E[SD]T) ===$"
    headers = re.findall(header, text, re.M)
    assert [int(run_id) for run_id, _ in headers] == ids


def test_a_log_that_grew_too_large_is_cut_to_its_newest_part(ws):
    from tasty_oneshot.server_log import LOG_LIMIT

    jobs_file(ws)
    log = ws.state / "logs" / "check.mcp.log"
    log.parent.mkdir(parents=True, mode=0o700)
    log.write_text("old line\n" * (LOG_LIMIT // 9 + 1000))
    log.chmod(0o600)
    assert ws.call(*RUN).returncode == 0
    text = log.read_text()
    assert log.stat().st_size <= LOG_LIMIT
    assert text.startswith("[... older runs cut]\nold line\n")
    assert "=== check: run 1," in text


def log_a_run(log_path: Path, lines: int) -> bytes:
    """One run's server log as a run keeps it: the server writes `lines` lines of 100 bytes to
    its stderr pipe; the log's own thread copies them. The run's part of the log."""
    from tasty_oneshot.server_log import ServerLog

    log = ServerLog(log_path)
    stderr = log.stderr()
    log.begin(7)
    for number in range(lines):
        stderr.write(f"{number:09d} " + "y" * 89 + "\n")
    log.close()
    assert log._thread is not None
    log._thread.join(60)  # all copied (close waits only a bounded time)
    assert not log._thread.is_alive()
    text = log_path.read_bytes()
    return text[text.rindex(b"=== check: run 7,") :]


@pytest.mark.parametrize("over", [0, 1], ids=["at-the-bound", "over-it"])
def test_a_log_never_grows_past_its_limit_with_a_runs_whole_share(tmp_path, over):
    from tasty_oneshot.server_log import LOG_LIMIT, RUN_LIMIT

    # Older runs fill all but a run's share (plus `over` bytes); this run writes twice its share.
    log_path = tmp_path / "check.mcp.log"
    old = b"old line\n" * ((LOG_LIMIT - RUN_LIMIT) // 9) + b"\n" * ((LOG_LIMIT - RUN_LIMIT) % 9)
    log_path.write_bytes(old + b"\n" * over)
    log_path.chmod(0o600)
    run = log_a_run(log_path, 2 * RUN_LIMIT // 100)
    assert log_path.stat().st_size <= LOG_LIMIT
    assert len(run) <= RUN_LIMIT
    kept = log_path.read_bytes()
    if over:
        assert kept.startswith(b"[... older runs cut]\nold line\n")
    else:  # the older runs are kept whole while they fit
        assert kept.startswith(old)


def test_a_runs_share_of_the_log_is_cut_once_and_nothing_follows(tmp_path):
    from tasty_oneshot.server_log import RUN_LIMIT

    run = log_a_run(tmp_path / "check.mcp.log", 3 * RUN_LIMIT // 100)
    assert RUN_LIMIT - 200 < len(run) <= RUN_LIMIT
    assert run.count(b"not kept") == 1
    assert run.endswith(b"\n[... the rest of this run's server output is not kept]\n")
    lines = run.splitlines()[1:-1]  # after the header, before the note: the first lines, in order
    assert [int(line[:9]) for line in lines[:-1]] == list(range(len(lines) - 1))


@pytest.mark.parametrize("kind", ["binary", "text"])
def test_a_server_that_breaks_the_protocol_fails_at_once(ws, kind):
    # Without the check, binary bytes left a request waiting until the timeout; text was
    # ignored. Both are a failure now, well before the timeout of 120 s.
    jobs_file(ws, "--bad-stdout", kind)
    result = ws.call(*RUN, "--timeout", "120")
    assert result.returncode == 1, result.stderr
    [row] = ws.history()
    assert row["status"] == "failed", row
    assert "broke the protocol" in row["reason"], row["reason"]
    assert "Traceback" not in result.stderr
    for start in ws.server_starts():
        assert_gone(start["pid"])


def test_a_result_over_64_kib_and_blank_lines_between_messages_are_no_broken_protocol(ws):
    # asyncio reads lines of at most 64 KiB unless told otherwise; the transport reads them up
    # to LINE_LIMIT (64 MiB), and passes over a blank line between messages.
    jobs_file(ws, "--big-results", "300000", "--blank-lines")
    result = ws.call(*RUN)
    assert result.returncode == 0, result.stderr
    [row] = ws.history()
    assert row["status"] == "ok", row["reason"]
    assert len(ws.calls()) > 1  # blank lines after each call, the next call still answered
    big = "ok" + "0123456789" * 30_000  # account_overview's result, whole, in the output
    assert big in result.stdout


def test_a_server_that_ignores_sigterm_is_killed_when_the_run_ends(ws):
    jobs_file(ws, "--ignore-sigterm", "--hang", "account_overview")
    result = ws.call(*RUN, "--timeout", "6")
    assert result.returncode == 124, result.stderr
    [start] = ws.server_starts()
    assert_gone(start["pid"], within=10)


def test_a_model_error_does_not_point_at_the_server_log_but_a_server_error_does(ws, stub):
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n" + ws.fake_mcp_yaml() + "jobs:\n  check:\n"
        "    instructions: Check\n",
    )
    stub.mode("status", "429")
    result = ws.call(*RUN)
    assert result.returncode == 1, result.stderr
    [row] = ws.history()
    assert "429" in row["reason"] and "MCP server log" not in row["reason"], row["reason"]
    crash = ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml("--crash") + "jobs:\n  check:\n"
        "    instructions: Check\n",
    )
    assert crash.exists()
    assert ws.call(*RUN).returncode == 1
    assert "MCP server log" in ws.history()[0]["reason"]


# --- stdout that cannot take the output ---------------------------------------------------------


def test_stdout_on_a_full_device_still_exits_as_the_ledger_says(ws):
    jobs_file(ws)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            ws.command(*RUN), cwd=ws.root, env=ws.env, stdout=full, stderr=subprocess.PIPE,
            text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert re.search(r"WARNING - could not write the output to stdout", result.stderr)
    [row] = ws.history()
    assert row["status"] == "ok" and row["exit_code"] == 0


def into_a_pipe_nobody_reads(ws, *args: str) -> subprocess.CompletedProcess:
    """The CLI with its stdout a pipe whose reader is gone (`| true`, `| head` once done)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            ws.command(*args), cwd=ws.root, env=ws.env, stdout=write_end, stderr=subprocess.PIPE,
            text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)


def test_stdout_a_closed_pipe_still_exits_as_the_ledger_says(ws):
    jobs_file(ws)
    result = into_a_pipe_nobody_reads(ws, *RUN)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "could not write the output to stdout" in result.stderr
    assert ws.history()[0]["exit_code"] == 0


def test_a_closed_stdout_still_exits_records_pings_and_alerts_as_the_ledger_says(ws, receiver):
    """`>&-`: Python starts without sys.stdout, and the next file opened would take fd 1."""
    rx = receiver()
    jobs_file(ws, extra=f"    ping: http://127.0.0.1:{rx.port}/p\n    notify: [{rx.url()}]\n"
                        "    notify_on: [output]\n")  # fmt: skip
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *ws.command(*RUN)], cwd=ws.root, env=ws.env,
        stderr=subprocess.PIPE, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "could not write the output to stdout (stdout is closed)" in result.stderr
    [row] = ws.history()
    assert row["status"] == "ok" and row["exit_code"] == 0
    paths = {post["path"].split("?")[0] for post in rx.posts}
    assert paths == {"/alerts", "/p/0", "/p/start"}  # the alerts and both pings went out


@pytest.mark.parametrize(
    "args", [("history",), ("history", "--json"), ("next", "--job", "check", "--count", "1000"),
             ("status",), ("status", "--json", "--check")],
)  # fmt: skip
def test_a_reader_that_went_away_ends_no_command_in_an_error(ws, args):
    """`| head -1`, made certain: nobody reads the pipe when the command writes. The command
    ends quietly, with the exit code it has when its output is read."""
    jobs_file(ws, extra='    schedule: "9:30am"\n    hourly: true\n')
    assert ws.call(*RUN).returncode == 0
    result = into_a_pipe_nobody_reads(ws, *args)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "Exception ignored" not in result.stderr and "Error" not in result.stderr
    assert result.returncode == ws.call(*args).returncode


# --- SIGKILL --------------------------------------------------------------------------------------


def test_a_run_killed_with_sigkill_is_abandoned_and_its_slot_stays_used(ws):
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml("--hang", "account_overview")
        + 'jobs:\n  check:\n    instructions: Check\n    schedule: "9:30am"\n    daily: true\n'
        "    ignore_market_hours: true\n",
    )  # fmt: skip
    at = "2026-11-30 14:31:00"
    run = subprocess.Popen(
        ws.command("run", "--job", "check", "--scheduled", at=at), cwd=ws.root, env=ws.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    wait_for(lambda: ws.calls(), "the hanging tool call", proc=run)
    assert ws.history()[0]["status"] == "running"  # alive: it holds the job's lock
    os.killpg(run.pid, signal.SIGKILL)  # the run (not its server): nothing can be recorded
    run.communicate(timeout=30)
    [start] = ws.server_starts()
    assert_gone(start["pid"])  # the kernel ends the server with its run, under cron too
    [row] = ws.history()
    assert row["status"] == "abandoned" and row["slot"] == "2026-11-30T09:30:00-05:00", row
    # The slot stays used: a second firing in the same window is a skip.
    again = ws.call("run", "--job", "check", "--scheduled", at="2026-11-30 14:32:00")
    assert again.returncode == 0, again.stderr
    newest, old = ws.history()
    assert newest["status"] == "skipped" and "already done" in newest["reason"]
    assert old["status"] == "abandoned"
    # The slot is claimed before the lock, so that skip never took the lock; the job's next
    # run that does (here one by hand) records the dead row so.
    by_hand = ws.call("run", "--job", "check", "--timeout", "3", at="2026-11-30 14:33:00")
    assert by_hand.returncode == 124, by_hand.stderr  # its server hangs in the tool
    db = sqlite3.connect(ws.state / "ledger.sqlite3")
    assert db.execute("SELECT status FROM runs WHERE id=?", (old["id"],)).fetchone() == (
        "abandoned",
    )
    db.close()


# --- modes, whatever the umask ---------------------------------------------------------------


def test_every_file_in_the_state_directory_is_0600_and_every_directory_0700(ws, tmp_path):
    jobs_file(ws)
    ws.env["TASTY_ONESHOT_STATE_DIR"] = str(tmp_path / "fresh-state")
    umask = os.umask(0o000)  # as `umask 000` in the shell that starts it
    try:
        result = ws.call(*RUN)
    finally:
        os.umask(umask)
    assert result.returncode == 0, result.stderr
    state = tmp_path / "fresh-state"
    found = [state, *state.rglob("*")]
    assert any(p.name == "ledger.sqlite3-wal" for p in found) or any(
        p.name == "ledger.sqlite3" for p in found
    )
    for path in found:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {mode:o}"


# --- relative paths --------------------------------------------------------------------------


def test_relative_mcp_paths_are_read_against_the_jobs_files_directory(ws, tmp_path):
    conf = tmp_path / "conf"
    (conf / "servers").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "fake_tasty_agent.py", conf / "servers" / "fake.py")
    (conf / "jobs.yaml").write_text(
        f"model: test\nmcp:\n  command: {sys.executable}\n"
        f"  args: [servers/fake.py, {ws.record}]\n"
        "jobs:\n  check:\n    instructions: Check\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = call_cli([*RUN, "--config", str(conf / "jobs.yaml")], cwd=elsewhere, env=ws.env)
    assert result.returncode == 0, result.stderr
    assert len(ws.server_starts()) == 1
    assert json.loads(ws.call("history", "--json").stdout)[0]["status"] == "ok"
    assert not alive(ws.server_starts()[0]["pid"])
