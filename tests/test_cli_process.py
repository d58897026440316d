"""The CLI as a process of its own: what it builds to parse a command, and how it ends.

A short invocation (a skip, a preview) skips the interpreter's teardown and runs without the
cycle collector; nothing it wrote may be lost for that, and a run that starts the agent gets
the collector back."""

import argparse
import gc
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tasty_oneshot import stdio
from tasty_oneshot.cli import COMMANDS, build_parser

SCRIPT = Path(sys.executable).parent / "tasty-oneshot"  # what a timer's unit runs

COMMAND_LINES = [
    ["run", "--job", "check", "--scheduled", "--config", "jobs.yaml", "--env-file", "e"],
    ["run", "Check my positions", "--name", "a-b", "--timeout", "30", "--trading", "dry-run"],
    ["run", "x", "--schedule", "9:30am", "--hourly", "--notify", "json://h", "--notify-on", "skip"],
    ["generate-units", "--all", "--target", "systemd", "--output-dir", "units", "--system"],
    ["generate-units", "x", "--cron", "*/5 * * * *", "--target", "crontab", "--no-env-file"],
    ["next", "--job", "a", "--job", "b", "--count", "3", "--json"],
    ["history", "--job", "a", "--limit", "5", "--status", "ok", "--json"],
    ["ledger", "import", "old.sqlite3", "--config", "jobs.yaml"],
    ["status", "--days", "3", "--check", "--json"],
    ["doctor", "--job", "a", "--env-file", "e", "--json"],
]


@pytest.mark.parametrize("words", COMMAND_LINES, ids=lambda words: " ".join(words[:2]))
def test_a_command_builds_only_its_own_parser_and_parses_as_the_whole_one_does(words):
    alone = build_parser(words[0])
    subparsers = alone._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert list(subparsers.choices) == [words[0]]
    assert vars(alone.parse_args(words)) == vars(build_parser().parse_args(words))
    whole = build_parser()._subparsers._group_actions[0].choices[words[0]]  # type: ignore[union-attr]
    assert subparsers.choices[words[0]].format_help() == whole.format_help()


def test_the_help_still_lists_every_command(ws):
    result = ws.call("--help")
    assert result.returncode == 0
    assert all(name in result.stdout for name in COMMANDS)
    assert ws.call("nonsense").returncode == 2  # an unknown command: the whole parser says so


@pytest.mark.parametrize("columns", ["60", "200", ""])
def test_the_help_is_sized_as_argparse_would_size_it(monkeypatch, columns):
    """The formatter is sized without importing shutil, by asking what shutil asks ($COLUMNS,
    then the terminal, else 80): the help comes out as argparse's own formatter makes it."""
    monkeypatch.setenv("COLUMNS", columns)
    run = build_parser("run")._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    ours = run.format_help()
    run.formatter_class = argparse.RawDescriptionHelpFormatter
    assert ours == run.format_help()
    assert len(ours.splitlines()) > 20


def test_a_short_process_ends_with_all_it_wrote_delivered(ws):
    """More than a pipe holds on stdout, and less than its buffer holds, through the console
    script a timer runs: every byte arrives, and the skip's row and log lines are whole,
    though the teardown was skipped."""
    jobs = "jobs:\n  check:\n    instructions: Check my positions\n"
    ws.write("jobs.yaml", "model: test\n" + ws.fake_mcp_yaml() + jobs)
    flags = ["--schedule", "9:30am", "--period", "60", "--count", "1000", "--json"]
    preview = subprocess.run(
        [str(SCRIPT), "next", *flags], cwd=ws.root, env=ws.env, capture_output=True, timeout=60
    )
    assert preview.returncode == 0, preview.stderr
    assert len(preview.stdout) > 65536  # more than a pipe's buffer
    assert len(json.loads(preview.stdout)) == 1000
    flags[flags.index("1000")] = "2"  # and less than its buffer holds, left for the exit
    preview = subprocess.run(
        [str(SCRIPT), "next", *flags], cwd=ws.root, env=ws.env, capture_output=True, timeout=60
    )
    assert len(json.loads(preview.stdout)) == 2, preview
    command = ws.command("run", "--job", "check", "--config", "jobs.yaml", at="2026-11-26 15:00:00")
    skip = subprocess.run(
        command, cwd=ws.root, env=ws.env, capture_output=True, text=True, timeout=60
    )
    assert skip.returncode == 0, skip.stderr
    assert skip.stderr.endswith("--ignore-market-hours\n")  # the last log line, whole
    [row] = ws.history("--config", "jobs.yaml")
    assert row["status"] == "skipped" and "market closed" in row["reason"]


def test_ending_at_once_waits_for_a_thread_still_at_work():
    """A thread left running (an alert still going out) is waited for, as a normal exit
    would: exit_now takes the ordinary way out then."""
    release = threading.Event()
    worker = threading.Thread(target=release.wait, args=(30,))
    worker.start()
    try:
        with pytest.raises(SystemExit) as exit_:
            stdio.exit_now(3)
        assert exit_.value.code == 3
    finally:
        release.set()
        worker.join()


def test_a_run_that_starts_the_agent_turns_the_collector_back_on(ws):
    jobs = "jobs:\n  check:\n    instructions: Check my positions\n"
    ws.write("tasty-oneshot.yaml", "model: test\n" + ws.fake_mcp_yaml() + jobs)
    gc.disable()  # as __main__ leaves it for the CLI's own process
    try:
        result = ws.call("run", "--job", "check", "--ignore-market-hours")
        assert result.returncode == 0, result.stderr
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()  # this process goes on to run other tests
