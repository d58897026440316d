"""Operating many jobs: `status` (missed slots), dead-man's-switch pings against a real HTTP
server, live progress in the log, journald priorities, and the first-run traps, all through
the CLI: in this process (`ws.call`, the clock moved with time-machine), but for journald's
priorities, which the real CLI writes to a real stream (faketime fakes its clock). Times are
read as UTC (New York is UTC-5 here).
"""

import argparse
import fcntl
import json
import os
import re
import subprocess

import pytest

JOBS = """\
model: test
{mcp}jobs:
  check:
    instructions: Check my positions
    schedule: "10:00am"
    daily: true
  late:
    instructions: Check again
    schedule: "2pm"
    daily: true
  idle:
    instructions: Never fired
    schedule: "11:00am"
    daily: true
  by-hand:
    instructions: Only when asked
"""


def jobs_file(ws, extra: str = "") -> None:
    ws.write("tasty-oneshot.yaml", JOBS.format(mcp=ws.fake_mcp_yaml()) + extra)


def scheduled(ws, job: str, at: str) -> None:
    result = ws.call("run", "--job", job, "--scheduled", at=at)
    assert result.returncode == 0, result.stderr
    assert ws.history("--limit", "1")[0]["status"] == "ok"


def no_timers(ws) -> None:
    """This host as status asks it: no crontab (a fake `crontab` says so, whatever the real
    host has) and no user units (XDG_CONFIG_HOME is the test's own)."""
    fake = ws.root.parent / "bin"
    if not fake.exists():
        fake.mkdir()
        crontab = fake / "crontab"
        crontab.write_text('#!/bin/sh\necho "no crontab for $(id -un)" >&2\nexit 1\n')
        crontab.chmod(0o755)
        ws.env["PATH"] = f"{fake}{os.pathsep}{ws.env['PATH']}"


def status(ws, *args: str, at: str) -> tuple[int, list[dict]]:
    no_timers(ws)
    result = ws.call("status", "--json", *args, at=at)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


# --- status -------------------------------------------------------------------------------------


@pytest.fixture
def ran_some_slots(ws):
    """check ran at three of its five open slots (Tue, Wed, Tue; not Fri or Mon); late ran at
    three of its four (not the last); Thanksgiving and the early close's afternoon are no
    slots at all; idle never ran."""
    jobs_file(ws)
    for day in ("2026-11-24", "2026-11-25", "2026-12-01"):
        scheduled(ws, "check", f"{day} 15:00:30")  # 10:00 NYC
    for day in ("2026-11-24", "2026-11-25", "2026-11-30"):
        scheduled(ws, "late", f"{day} 19:00:30")  # 2pm NYC
    return ws


def test_status_lists_the_slots_that_should_have_run_and_did_not(ran_some_slots):
    ws = ran_some_slots
    code, reports = status(ws, "--days", "8", at="2026-12-01 19:30:00")  # 2:30pm NYC
    by_job = {item["job"]: item for item in reports}
    assert list(by_job) == ["by-hand", "check", "idle", "late"]  # every job of the file
    assert by_job["check"]["missed"] == ["2026-11-27T10:00:00-05:00", "2026-11-30T10:00:00-05:00"]
    # Thanksgiving (11-26) is closed all day, and 11-27 closes at 13:00: no 2pm slots then.
    assert by_job["late"]["missed"] == ["2026-12-01T14:00:00-05:00"]
    assert by_job["check"]["state"] == by_job["late"]["state"] == "missed"
    # Neither a timer here nor a scheduled run: not installed (no install time: none missed).
    assert by_job["idle"]["state"] == "not-installed" and by_job["idle"]["missed"] == []
    assert by_job["by-hand"]["next"] is None and by_job["by-hand"]["state"] == "never-run"
    check = by_job["check"]
    assert check["last"]["status"] == "ok" and check["last"]["slot"] == "2026-12-01T10:00:00-05:00"
    assert check["last_ok_at"] == check["last"]["finished_at"]
    assert check["failures_in_a_row"] == 0
    assert check["next"]["at"] == "2026-12-02T10:00:00-05:00" and check["next"]["will_run"]
    assert check["schedule"] == "daily NYC, anchored at 10am"
    assert {item["timer"] for item in reports} == {"absent"}  # the scheduled runs count
    assert code == 0  # without --check


def test_status_check_exits_1_when_a_job_missed_a_slot_and_0_when_none_did(ran_some_slots):
    ws = ran_some_slots
    code, _ = status(ws, "--days", "8", "--check", at="2026-12-01 19:30:00")
    assert code == 1
    # Only the slots of the last day: check ran at 10:00, late's 2pm window has not ended.
    code, reports = status(ws, "--days", "1", "--check", "--job", "check", at="2026-12-01 19:02:00")
    assert code == 0 and reports[0]["missed"] == [] and reports[0]["state"] == "ok"


def test_status_with_no_timer_and_no_runs_is_not_installed_and_the_table_has_a_line_per_job(ws):
    jobs_file(ws)
    code, reports = status(ws, at="2026-12-01 19:30:00")
    states = {item["job"]: item["state"] for item in reports}
    assert states == {"by-hand": "never-run", "check": "not-installed", "idle": "not-installed",
                      "late": "not-installed"}  # fmt: skip
    assert code == 0  # without --check
    assert status(ws, "--check", at="2026-12-01 19:30:00")[0] == 1
    assert status(ws, "--check", "--job", "by-hand", at="2026-12-01 19:30:00")[0] == 0
    table = ws.call("status", at="2026-12-01 19:30:00")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["job", "state", "timer"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["by-hand", "never-run", "absent"],
        ["check", "not-installed", "absent"],
        ["idle", "not-installed", "absent"],
        ["late", "not-installed", "absent"],
    ]


def test_status_shows_a_failing_job_and_counts_its_failures_in_a_row(ws):
    jobs_file(ws, '  broken:\n    instructions: Fails\n    schedule: "10:00am"\n    daily: true\n'
                  f"    mcp:\n      command: {os.sys.executable}\n"
                  f"      args: [{json.dumps(str(ws.root / 'missing-server.py'))}]\n")  # fmt: skip
    for day in ("2026-11-30", "2026-12-01"):
        result = ws.call("run", "--job", "broken", "--scheduled", at=f"{day} 15:00:30")
        assert result.returncode == 1, result.stderr
    code, [report] = status(ws, "--job", "broken", "--check", at="2026-12-01 16:00:00")
    assert report["state"] == "failing" and report["failures_in_a_row"] == 2
    assert report["last_ok_at"] is None and code == 1


# --- pings --------------------------------------------------------------------------------------


def pinged(rx) -> list[str]:
    return [post["path"] for post in rx.posts]


def test_a_run_pings_start_and_its_exit_code_with_one_rid(ws, receiver):
    rx = receiver()
    jobs_file(ws)
    url = f"http://127.0.0.1:{rx.port}/ping/abc123def456"
    result = ws.call("run", "--job", "check", "--ignore-market-hours", "--ping", url)
    assert result.returncode == 0, result.stderr
    start, end = pinged(rx)
    rid = re.fullmatch(r"/ping/abc123def456/start\?rid=([0-9a-f-]{36})", start)[1]
    assert end == f"/ping/abc123def456/0?rid={rid}"
    assert "account_overview" in rx.posts[1]["body"]  # the output's tail
    assert "abc123def456" not in result.stderr  # the URL is a secret


def test_a_failed_run_pings_its_exit_code_with_the_reason(ws, receiver):
    rx = receiver()
    jobs_file(ws, "ping: http://127.0.0.1:{port}/p\n".replace("{port}", str(rx.port)))
    result = ws.call("run", "--job", "check", "--ignore-market-hours", "--max-tool-calls", "1")
    assert result.returncode == 1, result.stderr
    assert [p.split("?")[0] for p in pinged(rx)] == ["/p/start", "/p/1"]
    assert "tool_calls_limit" in rx.posts[1]["body"]


def test_a_market_closed_skip_pings_success_and_a_lock_refusal_pings_log(ws, receiver):
    rx = receiver()
    jobs_file(ws, f"ping: http://127.0.0.1:{rx.port}/p\n")
    skip = ws.call("run", "--job", "check", at="2026-11-26 15:00:30")  # Thanksgiving
    assert skip.returncode == 0, skip.stderr
    assert [p.split("?")[0] for p in pinged(rx)] == ["/p"]
    lock = ws.state / "locks" / "check.lock"
    lock.parent.mkdir(mode=0o700, exist_ok=True)
    with open(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another run of the job would
        locked = ws.call("run", "--job", "check", "--ignore-market-hours")
    assert locked.returncode == 75, locked.stderr
    assert [p.split("?")[0] for p in pinged(rx)] == ["/p", "/p/log"]


def test_a_slot_guard_skip_pings_nothing(ws, receiver):
    rx = receiver()
    jobs_file(ws, f"ping: http://127.0.0.1:{rx.port}/p\n")
    result = ws.call("run", "--job", "check", "--scheduled", at="2026-11-30 18:00:00")
    assert result.returncode == 0, result.stderr
    assert "off schedule" in ws.history()[0]["reason"] or "stale" in ws.history()[0]["reason"]
    assert rx.posts == []


def test_the_exit_pings_body_is_the_masked_outputs_last_10_kb(ws, receiver, stub):
    """A long answer holding a TastyTrade secret: the exit ping carries its tail, masked,
    at most 10 kB (the model answers through tests/openai_stub.py)."""
    rx = receiver()
    secret = "tt-client-secret-0815-in-the-answer"
    ws.env["TASTYTRADE_CLIENT_SECRET"] = secret
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n" + ws.fake_mcp_yaml()
        + f"ping: http://127.0.0.1:{rx.port}/p\njobs:\n  check:\n    instructions: Check\n",
    )  # fmt: skip
    answer = "HEAD-MARK " + "x" * 6000 + f" {secret} " + "y" * 6000 + " TAIL-MARK"
    stub.mode("answer", answer)
    result = ws.call("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    assert [p.split("?")[0] for p in pinged(rx)] == ["/p/start", "/p/0"]
    body = rx.posts[1]["body"]
    assert secret not in body and len(body.encode()) <= 10_000
    assert body == answer.replace(secret, "***")[-10_000:]
    assert body.endswith("y TAIL-MARK") and "HEAD-MARK" not in body


def test_a_ping_to_a_server_that_never_answers_gives_up_and_changes_nothing(ws, receiver):
    rx = receiver(hang=True)
    jobs_file(ws, f"ping: http://127.0.0.1:{rx.port}/p\n")
    result = ws.call("run", "--job", "check", at="2026-11-26 15:00:30")
    assert result.returncode == 0, result.stderr
    # Given up by the 5 s bound: the thread's, or the socket's own timeout, whichever first.
    assert re.search(
        r"WARNING - ping success: (gave up after 5s|failed: .*timed out)", result.stderr
    )
    assert ws.history()[0]["status"] == "skipped"


# --- the log ------------------------------------------------------------------------------------


def test_the_log_shows_each_request_and_tool_call_and_a_closing_line(ws):
    jobs_file(ws)
    result = ws.call("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert re.search(r"INFO - model request 1 sent", log)
    assert re.search(r"INFO - tool account_overview done in \d+\.\ds", log)
    assert re.search(
        r"INFO - agent finished in \d+\.\ds: 2 requests, \d+ tokens .*6 tool calls", log
    )
    assert (
        log.index("model request 1 sent")
        < log.index("tool account_overview")
        < log.index("agent finished")
    )


def test_under_journald_each_line_starts_with_its_priority(ws, tmp_path):
    jobs_file(ws)
    with open(tmp_path / "journal", "w+") as stream:
        info = os.fstat(stream.fileno())
        env = {**ws.env, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        subprocess.run(
            ws.command("run", "--job", "nope"), cwd=ws.root, env=env, stderr=stream,
            stdout=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip
        subprocess.run(
            ws.command("run", "--job", "check", at="2026-11-26 15:00:30"), cwd=ws.root,
            env=env, stderr=stream, stdout=subprocess.DEVNULL, timeout=60, check=False,
        )  # fmt: skip
        stream.seek(0)
        lines = stream.read().splitlines()
    assert lines and all(re.match(r"<[2-7]>\d{4}-", line) for line in lines), lines
    assert any(line.startswith("<3>") and " - ERROR - " in line for line in lines)
    assert any(line.startswith("<6>") and " - INFO - " in line for line in lines)
    # Elsewhere (a terminal, cron's mail) no prefix.
    plain = ws.call("run", "--job", "nope")
    assert plain.stderr.startswith("20")


def test_generated_services_name_their_job_for_the_journal(ws):
    jobs_file(ws)
    result = ws.call("generate-units", "--job", "check", "--target", "systemd", "--no-env-file")
    assert result.returncode == 0, result.stderr
    assert "SyslogIdentifier=tasty-oneshot-check\n" in result.stdout
    assert "LogExtraFields=TASTY_ONESHOT_JOB=check\n" in result.stdout


# --- the first-run traps ------------------------------------------------------------------------


def test_units_whose_runs_would_miss_their_credentials_are_refused(ws, tmp_path):
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai:gpt-5-mini\njobs:\n  check:\n    instructions: Hi\n"
        '    schedule: "9:30am"\n    daily: true\n',
    )
    ws.write(".env", "OPENAI_API_KEY=sk-in-dot-env\nTASTYTRADE_CLIENT_SECRET=a\n"
                     "TASTYTRADE_REFRESH_TOKEN=b\n")  # fmt: skip
    out = tmp_path / "units"
    base = ("generate-units", "--job", "check", "--target", "systemd", "--output-dir", str(out))
    refused = ws.call(*base)
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "OPENAI_API_KEY" in line and "TASTYTRADE_CLIENT_SECRET" in line
    assert "--env-file" in line and "--no-env-file" in line
    assert not out.exists()
    cron = ws.call("generate-units", "--job", "check", "--target", "crontab", "--cron-tz", "UTC")
    assert cron.returncode == 2 and cron.stdout == ""
    env_file = ws.write(  # every credential the job's runs need: the key and TastyTrade's
        "creds.env", "OPENAI_API_KEY=x\nTASTYTRADE_CLIENT_SECRET=a\nTASTYTRADE_REFRESH_TOKEN=b\n"
    )
    env_file.chmod(0o600)
    written = ws.call(*base, "--env-file", str(env_file))
    assert written.returncode == 0, written.stderr
    commands = written.stdout.splitlines()
    assert "systemctl --user daemon-reload" in commands
    assert "systemctl --user enable --now tasty-oneshot-check.timer" in commands
    assert 'loginctl enable-linger "$USER"' in commands
    # and ends by suggesting doctor, with the files the units use
    assert re.fullmatch(
        rf"\S*tasty-oneshot doctor --config \S+ --env-file {re.escape(str(env_file))} --job check",
        commands[-1],
    ), commands
    assert ws.call(*base, "--no-env-file").returncode == 0


def test_a_skip_by_hand_says_why_at_warning_and_how_to_run_anyway(ws):
    jobs_file(ws)
    result = ws.call("run", "--job", "check", at="2026-11-26 15:00:30")
    assert result.returncode == 0
    assert re.search(r"WARNING - skipped: market closed.*--ignore-market-hours", result.stderr)
    timer = ws.call("run", "--job", "check", "--scheduled", at="2026-11-26 15:00:30")
    assert re.search(r"INFO - skipped: market closed", timer.stderr), timer.stderr


def test_a_surplus_cron_firing_is_off_schedule_with_the_next_fire_time_not_stale(ws):
    jobs_file(ws)
    # The line for the other offset fires an hour off: 9:00 and 11:00 NYC for a 10:00 job.
    for at, upcoming in (
        ("2026-11-30 14:00:00", "the next is 2026-11-30T10:00"),
        ("2026-11-30 16:00:00", "the next is 2026-12-01T10:00"),
    ):
        assert ws.call("run", "--job", "check", "--scheduled", at=at).returncode == 0
        reason = ws.history()[0]["reason"]
        assert reason.startswith("off schedule:") and upcoming in reason, reason
    # A real late catch-up (the host was off) is still stale.
    ws.call("run", "--job", "check", "--scheduled", at="2026-11-30 17:23:00")
    assert ws.history()[0]["reason"].startswith("stale:")


def test_the_dst_warning_only_where_it_matters(ws):
    base = ("generate-units", "--no-env-file", "Hi", "--name", "n", "--hourly", "--target")
    quiet = ws.call(*base, "systemd")
    assert quiet.returncode == 0 and "1am and 3am" not in quiet.stderr  # skips anyway
    loud = ws.call(*base, "systemd", "--ignore-market-hours")
    assert "1am and 3am" in loud.stderr


# --- a friendlier command line ------------------------------------------------------------------


def test_help_shows_defaults_choices_and_exit_codes(ws):
    bare = ws.call()
    assert bare.returncode == 2 and "usage: tasty-oneshot" in bare.stdout
    for command, shown in {
        "run": ("default 300", "default 30", "{output,failure,skip}", "INSTRUCTIONS",
                "every SECONDS", "exit status", "124"),
        "next": ("default 10",),
        "history": ("default 20", "only this job's runs", "--status"),
        "status": ("default 7", "--check"),
    }.items():  # fmt: skip
        text = " ".join(ws.call(command, "--help").stdout.split())
        for word in shown:
            assert word in text, f"{command} --help lacks {word!r}"


def test_run_without_a_job_lists_the_jobs_and_no_file_says_where_it_looked(ws):
    jobs_file(ws)
    result = ws.call("run")
    assert result.returncode == 2
    assert "by-hand, check, idle, late" in result.stderr
    (ws.root / "tasty-oneshot.yaml").unlink()
    missing = ws.call("run", "--job", "check")
    assert "looked for" in missing.stderr and "tasty-oneshot.yaml" in missing.stderr


def test_next_previews_every_scheduled_job_or_each_one_named(ws):
    jobs_file(ws)
    every = ws.call("next", "--count", "1", "--json", at="2026-11-30 12:00:00")
    assert every.returncode == 0, every.stderr
    assert sorted(row["job"] for row in json.loads(every.stdout)) == ["check", "idle", "late"]
    two = ws.call(
        "next", "--job", "check", "--job", "late", "--count", "2", at="2026-11-30 12:00:00"
    )
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("check: ") == 1 and two.stdout.count("late: ") == 1
    one = json.loads(ws.call("next", "--job", "check", "--count", "1", "--json").stdout)
    assert set(one[0]) == {"at", "utc", "market_open", "will_run"}  # the contract's shape


def test_history_duration_status_filter_and_the_ledger_it_read(ws):
    jobs_file(ws)
    empty = ws.call("history")
    assert re.search(r"WARNING - no runs in .*ledger\.sqlite3", empty.stderr)
    ws.call("run", "--job", "check", "--ignore-market-hours")
    ws.call("run", "--job", "check", at="2026-11-26 15:00:30")
    table = ws.call("history").stdout.splitlines()
    assert table[0].split()[:5] == ["id", "job", "status", "started_at", "took"]
    assert re.search(r"\s\d+s\s", table[1]) or re.search(r"\s\d+s\s", table[2])
    only = ws.history("--status", "skipped")
    assert [row["status"] for row in only] == ["skipped"]
    totals = ws.call("history").stdout.split("totals")[1].splitlines()
    assert totals[2].split()[:3] == ["check", "1", "1"]  # one run, one skip


def test_each_commands_help_gives_its_own_exit_status_and_every_option_a_word():
    """`history --help` does not repeat run's table (no 75, no 124); `status --help` says
    what --check's exit 1 means; no option is left without a help text."""
    from tasty_oneshot.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        epilog = sub.epilog or ""
        if name == "run":
            assert "124" in epilog and "75" in epilog
        elif name != "ledger":
            assert "exit status" in epilog and "124" not in epilog and "75 " not in epilog, name
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help text"
    assert "not installed" in commands.choices["status"].epilog
    assert "a check failed" in commands.choices["doctor"].epilog
