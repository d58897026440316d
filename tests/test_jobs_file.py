"""The jobs file, the command line and the environment, through the `run` command.

Bad input must exit 2 with one line on stderr that says where the problem is, and nothing may
run: no ledger row, no MCP server started. Good input must layer as the contract says.

Many positive checks here need a run that is recorded but does not start the agent (the agent
takes seconds to import and run): a `--scheduled` invocation long after its slot is such a run,
a "stale" skip whose ledger row still carries the resolved job's name, model and trading mode.
"""

import json
import os
import re
import subprocess

import pytest

# 2026-11-30 (a Monday) 18:00 UTC is 13:00 NYC: hours after a 9:30am slot, so `--scheduled` is
# a stale skip, recorded without starting the agent.
STALE = "2026-11-30 18:00:00"

GOOD_JOB = 'jobs:\n  check:\n    instructions: Check my positions\n    schedule: "9:30am"\n'


def jobs_file(ws, body: str, *, model: str | None = "test", name="tasty-oneshot.yaml"):
    """Write a jobs file that uses the fake MCP server; `body` holds the rest of its keys."""
    head = f"model: {model}\n" if model else ""
    return ws.write(name, head + ws.fake_mcp_yaml() + body)


def assert_nothing_ran(ws) -> None:
    assert ws.server_starts() == []
    if ws.state.is_dir():  # the ledger may exist, but must hold no row
        assert ws.history() == []


def usage_error(ws, result: subprocess.CompletedProcess) -> str:
    """Check exit 2, nothing on stdout, one log line on stderr, nothing run; return the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - ERROR - ", lines[0]), lines[0]
    assert_nothing_ran(ws)
    return lines[0]


def latest(ws) -> dict:
    return ws.history("--limit", "1")[0]


# --- a bad jobs file: exit 2, naming the file, the job and the key -------------------------

BAD_JOBS = {
    "unknown job key": (
        'jobs:\n  check:\n    instructions: Check\n    shedule: "9:30am"\n',
        "check",
        ["shedule"],
        "unknown",
    ),
    "wrong type: period a string": (
        "jobs:\n  check:\n    instructions: Check\n    period: abc\n",
        "check",
        ["period"],
        "",
    ),
    "wrong type: period zero": (
        "jobs:\n  check:\n    instructions: Check\n    period: 0\n",
        "check",
        ["period"],
        "",
    ),
    "wrong type: period fractional": (
        "jobs:\n  check:\n    instructions: Check\n    period: 1800.5\n",
        "check",
        ["period"],
        "",
    ),
    "wrong type: daily a string": (
        'jobs:\n  check:\n    instructions: Check\n    daily: "yes"\n',
        "check",
        ["daily"],
        "",
    ),
    "wrong type: timeout negative": (
        "jobs:\n  check:\n    instructions: Check\n    timeout: -5\n",
        "check",
        ["timeout"],
        "",
    ),
    "wrong value: max_delay zero": (
        # 0 s late would be stale already: no slot could ever run
        "jobs:\n  check:\n    instructions: Check\n    max_delay: 0\n",
        "check",
        ["max_delay"],
        "from 1 to",
    ),
    "wrong value: trading": (
        "jobs:\n  check:\n    instructions: Check\n    trading: yolo\n",
        "check",
        ["trading"],
        "read-only",
    ),
    "bad time": (
        'jobs:\n  check:\n    instructions: Check\n    schedule: "25:99"\n',
        "check",
        ["schedule"],
        "25:99",
    ),
    "unquoted time, read by YAML as a number": (
        "jobs:\n  check:\n    instructions: Check\n    schedule: 9:30\n",
        "check",
        ["schedule"],
        "quote",
    ),
    "two period keys": (
        "jobs:\n  check:\n    instructions: Check\n    hourly: true\n    daily: true\n",
        "check",
        ["hourly", "daily"],
        "",
    ),
    "cron with a schedule time": (
        'jobs:\n  check:\n    instructions: Check\n    cron: "0 10 * * *"\n    hourly: true\n',
        "check",
        ["cron", "hourly"],
        "",
    ),
    "bad cron": (
        'jobs:\n  check:\n    instructions: Check\n    cron: "61 * * * *"\n',
        "check",
        ["cron"],
        "",
    ),
    "market_open with another time": (
        'jobs:\n  check:\n    instructions: Check\n    market_open: true\n    schedule: "10am"\n',
        "check",
        ["market_open", "schedule"],
        "",
    ),
    "no instructions": (
        'jobs:\n  check:\n    schedule: "9:30am"\n',
        "check",
        ["instructions"],
        "",
    ),
    "mcp with command and url in a job": (
        "jobs:\n  check:\n    instructions: Check\n"
        "    mcp: {command: tasty-agent, url: 'https://example.org/mcp'}\n",
        "check",
        ["mcp"],
        "",
    ),
    "a flaw in another job than the one run": (
        GOOD_JOB + "  other:\n    instructions: Other\n    hourly: maybe\n",
        "other",
        ["hourly"],
        "",
    ),
}


@pytest.mark.parametrize(("body", "job", "keys", "hint"), BAD_JOBS.values(), ids=list(BAD_JOBS))
def test_a_bad_job_is_a_one_line_usage_error_naming_file_job_and_key(ws, body, job, keys, hint):
    path = jobs_file(ws, body)
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert str(path) in line
    assert f"'{job}'" in line
    assert any(f"'{key}'" in line for key in keys), line
    assert hint in line


BAD_TOP_LEVEL = {
    "unknown top-level key": ("modle: test\n" + GOOD_JOB, "modle", "unknown"),
    "wrong top-level type": ("max_requests: many\n" + GOOD_JOB, "max_requests", ""),
    "jobs not a mapping": ("jobs:\n  - check\n", "jobs", ""),
    "a self-referring alias": ("extra: &loop [*loop]\n" + GOOD_JOB, "extra", "nested"),
}


@pytest.mark.parametrize(("body", "key", "hint"), BAD_TOP_LEVEL.values(), ids=list(BAD_TOP_LEVEL))
def test_a_bad_top_level_key_is_a_one_line_usage_error_naming_file_and_key(ws, body, key, hint):
    path = jobs_file(ws, body)
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert str(path) in line and f"'{key}'" in line and hint in line


DUPLICATES = {
    "a job defined twice": (GOOD_JOB + "  check:\n    instructions: Other\n", "'check'"),
    "a key given twice in a job": (GOOD_JOB + '    schedule: "4pm"\n', "'schedule'"),
    "a top-level key given twice": ("model: test\n" + GOOD_JOB, "'model'"),
}


@pytest.mark.parametrize(("body", "named"), DUPLICATES.values(), ids=list(DUPLICATES))
def test_a_key_given_twice_is_a_usage_error_not_silently_the_last(ws, body, named):
    # YAML parsers commonly keep the last of two equal keys: a job would silently vanish.
    path = jobs_file(ws, body)
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert str(path) in line and named in line
    assert "twice" in line


def test_mcp_with_both_command_and_url_is_a_usage_error(ws):
    path = ws.write(
        "tasty-oneshot.yaml",
        "model: test\nmcp:\n  command: tasty-agent\n  url: https://example.org/mcp\n" + GOOD_JOB,
    )
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert str(path) in line and "'mcp'" in line


def test_an_ad_hoc_run_is_refused_too_when_the_jobs_file_it_would_use_is_bad(ws):
    path = jobs_file(ws, "modle: test\n" + GOOD_JOB)
    line = usage_error(ws, ws.call("run", "Check my positions", "--ignore-market-hours"))
    assert str(path) in line and "'modle'" in line


def test_a_bad_job_name_is_a_usage_error(ws):
    path = jobs_file(ws, "jobs:\n  Morning_Check:\n    instructions: Check\n")
    line = usage_error(ws, ws.call("run", "--job", "Morning_Check", "--ignore-market-hours"))
    assert str(path) in line and "Morning_Check" in line


# --- finding and reading the jobs file -----------------------------------------------------


def test_unknown_job_is_a_usage_error_naming_the_file_and_the_job(ws):
    path = jobs_file(ws, GOOD_JOB)
    line = usage_error(ws, ws.call("run", "--job", "nope", "--ignore-market-hours"))
    assert str(path) in line and "'nope'" in line


def test_config_that_does_not_exist_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)  # a good ./tasty-oneshot.yaml must not be used instead
    line = usage_error(ws, ws.call("run", "--job", "check", "--config", "missing.yaml"))
    assert "missing.yaml" in line


def test_config_variable_naming_a_missing_file_is_a_usage_error_not_a_fallback(ws):
    jobs_file(ws, GOOD_JOB)
    ws.env["TASTY_ONESHOT_CONFIG"] = str(ws.root / "missing.yaml")
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert "missing.yaml" in line


def test_config_that_is_a_directory_is_a_usage_error(ws):
    (ws.root / "jobs.d").mkdir()
    line = usage_error(ws, ws.call("run", "--job", "check", "--config", "jobs.d"))
    assert "jobs.d" in line


def test_config_that_is_not_valid_yaml_is_a_usage_error(ws):
    path = ws.write("broken.yaml", "jobs:\n  check: [unclosed\n")
    line = usage_error(ws, ws.call("run", "--job", "check", "--config", str(path)))
    assert str(path) in line and "YAML" in line


def test_config_that_cannot_be_read_is_a_usage_error(ws):
    path = jobs_file(ws, GOOD_JOB)
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: a mode-000 file is still readable")
    line = usage_error(ws, ws.call("run", "--job", "check", "--config", str(path)))
    assert str(path) in line


def test_unwritable_state_dir_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    blocker = ws.write("not-a-dir", "")
    ws.env["TASTY_ONESHOT_STATE_DIR"] = str(blocker / "state")
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert str(blocker / "state") in line
    assert blocker.read_text() == ""


def test_no_model_anywhere_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB, model=None)
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert "model" in line.lower()


def test_env_file_that_does_not_exist_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    args = ("run", "--job", "check", "--ignore-market-hours", "--env-file", "missing.env")
    assert "missing.env" in usage_error(ws, ws.call(*args))


# --- a bad command line ---------------------------------------------------------------------


def test_instructions_and_job_together_are_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    line = usage_error(ws, ws.call("run", "Check", "--job", "check", "--ignore-market-hours"))
    assert "--job" in line and "INSTRUCTIONS" in line


def test_neither_instructions_nor_job_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    line = usage_error(ws, ws.call("run", "--ignore-market-hours"))
    assert "--job" in line and "INSTRUCTIONS" in line


def test_two_period_flags_are_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    args = ("run", "--job", "check", "--hourly", "--daily", "--scheduled")
    line = usage_error(ws, ws.call(*args, at=STALE))
    assert "--daily: at most one of --hourly, --daily, --period" in line
    assert "key '" not in line  # flags are named as flags, not as jobs-file keys


def test_cron_with_a_period_flag_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    args = ("run", "--job", "check", "--cron", "0 10 * * *", "--hourly", "--scheduled")
    assert "cron" in usage_error(ws, ws.call(*args, at=STALE))


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--schedule", "25:99"], "25:99"),
        (["--schedule", "16"], "16"),
        (["--period", "0"], "--period"),
        (["--period", "abc"], "--period"),
        (["--cron", "0 10 * *"], "cron"),
        (["--max-delay", "-1"], "--max-delay"),
        (["--max-delay", "0"], "--max-delay"),
    ],
)
def test_a_bad_schedule_flag_is_a_usage_error(ws, flags, named):
    jobs_file(ws, GOOD_JOB)
    line = usage_error(ws, ws.call("run", "--job", "check", *flags, "--scheduled", at=STALE))
    assert named in line


def test_schedule_flags_without_scheduled_are_a_usage_error_showing_generate_units(ws):
    jobs_file(ws, GOOD_JOB)
    line = usage_error(ws, ws.call("run", "--job", "check", "--hourly"))
    assert "generate-units" in line and "--job check" in line and "--hourly" in line
    line = usage_error(ws, ws.call("run", "Check my positions", "--schedule", "4pm", "--daily"))
    assert "generate-units" in line and "--schedule" in line and "--daily" in line


def test_name_with_job_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    line = usage_error(ws, ws.call("run", "--job", "check", "--name", "other"))
    assert "--name" in line


def test_scheduled_run_of_a_job_without_a_schedule_is_a_usage_error(ws):
    jobs_file(ws, "jobs:\n  adhoc:\n    instructions: Check my positions\n")
    line = usage_error(ws, ws.call("run", "--job", "adhoc", "--scheduled"))
    assert "--scheduled" in line and "no schedule" in line


def test_unknown_trading_mode_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    line = usage_error(ws, ws.call("run", "--job", "check", "--trading", "bogus"))
    assert "bogus" in line


def test_a_bad_ad_hoc_name_is_a_usage_error(ws):
    jobs_file(ws, GOOD_JOB)
    args = ("run", "Check", "--name", "Not A Name", "--ignore-market-hours")
    assert "Not A Name" in usage_error(ws, ws.call(*args))


# --- layering: command line over job over top-level defaults -------------------------------

LAYERS = """\
model: ollama:from-top-level
trading: live
{mcp}jobs:
  bare:
    instructions: Check my positions
    schedule: "9:30am"
  own:
    instructions: Check my positions
    schedule: "9:30am"
    model: ollama:from-job
    trading: dry-run
"""


@pytest.mark.parametrize(
    ("args", "model", "trading"),
    [
        (["--job", "bare"], "ollama:from-top-level", "live"),
        (["--job", "own"], "ollama:from-job", "dry-run"),
        (["--job", "own", "--model", "ollama:from-cli"], "ollama:from-cli", "dry-run"),
        (["--job", "own", "--trading", "read-only"], "ollama:from-job", "read-only"),
        (["--job", "bare", "--model", "ollama:from-cli"], "ollama:from-cli", "live"),
        (["Check my positions", "--schedule", "9:30am"], "ollama:from-top-level", "live"),
    ],
)
def test_command_line_overrides_job_keys_which_override_top_level_defaults(
    ws, args, model, trading
):
    ws.write("tasty-oneshot.yaml", LAYERS.format(mcp=ws.fake_mcp_yaml()))
    ws.env["MODEL_IDENTIFIER"] = "ollama:from-environment"  # the lowest layer of all
    result = ws.call("run", *args, "--scheduled", at=STALE)
    assert result.returncode == 0, result.stderr
    row = latest(ws)
    assert (row["status"], row["model"], row["trading"]) == ("skipped", model, trading)
    assert "stale" in row["reason"]
    assert ws.server_starts() == []


def test_the_overridden_model_and_trading_mode_are_what_the_agent_runs_with(ws):
    # The job's own model would need OPENAI_API_KEY (unset: exit 2), and it would trade live.
    jobs_file(
        ws,
        "jobs:\n  check:\n    instructions: Check my positions\n"
        "    model: openai:gpt-5-mini\n    trading: live\n",
        model=None,
    )
    args = ("--job", "check", "--model", "test", "--trading", "read-only")
    result = ws.call("run", *args, "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    [row] = ws.history()
    assert (row["status"], row["model"], row["trading"]) == ("ok", "test", "read-only")
    called = {c["tool"] for c in ws.calls()}
    assert "account_overview" in called
    assert not called & {"place_order", "replace_order", "cancel_order"}


@pytest.mark.parametrize(
    "own",
    [
        '    schedule: "9:30am"\n    daily: true\n',  # merged: two periods, refused
        '    schedule: "9:30am"\n',  # merged: hourly at :30, silently
        '    cron: "0 10 * * 1-5"\n',  # merged: cron with a period, refused
    ],
    ids=["time-and-daily", "time", "cron"],
)
def test_a_schedule_on_the_command_line_replaces_the_jobs_schedule_as_a_whole(ws, own):
    jobs_file(ws, "jobs:\n  check:\n    instructions: Check\n" + own)

    def next_hours(*args: str) -> str:
        result = ws.call("next", *args, "--hourly", "--count", "3", at="2026-11-30 18:00:00")
        assert result.returncode == 0, result.stderr
        return result.stdout

    shown = next_hours("--job", "check")  # Monday 1pm NYC
    assert shown.startswith("check: hourly NYC, from midnight\n"), shown
    assert shown.replace("check:", "preview:", 1) == next_hours()  # as the flag alone says
    assert re.findall(r"2026-11-30 (\d\d:\d\d):00-05:00", shown) == ["14:00", "15:00", "16:00"]


NO_MODEL = 'jobs:\n  probe:\n    instructions: Probe\n    schedule: "9:30am"\n'


# --- finding the jobs file -----------------------------------------------------------------

PROBE = "model: ollama:from-{where}\n{mcp}" + NO_MODEL


def test_jobs_file_is_found_by_flag_then_variable_then_working_directory_then_xdg(ws):
    flag = ws.write("flag.yaml", PROBE.format(where="flag", mcp=ws.fake_mcp_yaml()))
    variable = ws.write("variable.yaml", PROBE.format(where="variable", mcp=ws.fake_mcp_yaml()))
    cwd = ws.write("tasty-oneshot.yaml", PROBE.format(where="cwd", mcp=ws.fake_mcp_yaml()))
    xdg = ws.root.parent / "home" / ".config" / "tasty-oneshot" / "jobs.yaml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text(PROBE.format(where="xdg", mcp=ws.fake_mcp_yaml()))
    assert ws.env["XDG_CONFIG_HOME"] == str(xdg.parent.parent)
    ws.env["TASTY_ONESHOT_CONFIG"] = str(variable)

    def found(*args: str) -> str:
        result = ws.call("run", "--job", "probe", "--scheduled", *args, at=STALE)
        assert result.returncode == 0, result.stderr
        row = latest(ws)
        assert row["status"] == "skipped" and "stale" in row["reason"]
        return row["model"]

    assert found("--config", str(flag)) == "ollama:from-flag"
    assert found() == "ollama:from-variable"
    del ws.env["TASTY_ONESHOT_CONFIG"]
    assert found() == "ollama:from-cwd"
    cwd.unlink()
    assert found() == "ollama:from-xdg"
    xdg.unlink()
    result = ws.call("run", "--job", "probe", "--scheduled", at=STALE)
    assert result.returncode == 2 and "probe" in result.stderr


# $TASTY_ONESHOT_CONFIG naming a file that does not exist (the image's, with no jobs file
# mounted): an ad hoc command needs no jobs file and goes on with the built-in defaults,
# saying so in one warning; what needs the jobs file is still refused.


def missing_config_variable(ws):
    """$TASTY_ONESHOT_CONFIG naming a file that does not exist; a ./tasty-oneshot.yaml that
    must not be read in its place (the built-in defaults are used, not the next place)."""
    missing = ws.root / "mounted" / "jobs.yaml"
    ws.env["TASTY_ONESHOT_CONFIG"] = str(missing)
    ws.write("tasty-oneshot.yaml", "model: ollama:from-cwd\ntrading: live\n" + GOOD_JOB)
    return missing


def assert_one_warning_about(missing, result) -> None:
    [warning] = [line for line in result.stderr.splitlines() if " - WARNING - " in line]
    assert "$TASTY_ONESHOT_CONFIG" in warning and str(missing) in warning
    assert "built-in defaults" in warning
    assert " - ERROR - " not in result.stderr


def test_next_ad_hoc_needs_no_jobs_file_when_the_variable_names_a_missing_one(ws):
    missing = missing_config_variable(ws)
    args = ("next", "--schedule", "9:30am", "--daily", "--count", "3", "--json")
    result = ws.call(*args, at=STALE)
    assert result.returncode == 0, result.stderr
    fires = json.loads(result.stdout)  # stdout stays clean JSON: the warning is on stderr
    assert [f["at"] for f in fires] == [
        "2026-12-01T09:30:00-05:00",
        "2026-12-02T09:30:00-05:00",
        "2026-12-03T09:30:00-05:00",
    ]
    assert all(f["will_run"] for f in fires)
    assert_one_warning_about(missing, result)


def test_generate_units_ad_hoc_needs_no_jobs_file_when_the_variable_names_a_missing_one(ws):
    missing = missing_config_variable(ws)
    args = ("generate-units", "Check my positions", "--schedule", "9:30am", "--daily")
    flags = ("--target", "crontab", "--cron-tz", "America/New_York", "--no-env-file")
    result = ws.call(*args, *flags, at=STALE)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert line.startswith("30 9 * * * ")
    assert "run 'Check my positions' --name " in line
    assert line.endswith(" --schedule 9:30am --daily --scheduled")
    assert "--config" not in line  # the run will find no jobs file either
    assert_one_warning_about(missing, result)


def test_run_ad_hoc_needs_no_jobs_file_when_the_variable_names_a_missing_one(ws):
    missing = missing_config_variable(ws)
    # The built-in MCP server, tasty-agent, needs these; a stale slot is skipped before it
    # would start, or the broker be asked.
    ws.env.update(TASTYTRADE_CLIENT_SECRET="not-used", TASTYTRADE_REFRESH_TOKEN="not-used")
    flags = ("--schedule", "9:30am", "--daily", "--model", "test", "--scheduled")
    result = ws.call("run", "Check my positions", *flags, at=STALE)
    assert result.returncode == 0, result.stderr
    assert_one_warning_about(missing, result)
    del ws.env["TASTY_ONESHOT_CONFIG"]  # `history` still needs the file it names
    (ws.root / "tasty-oneshot.yaml").unlink()
    row = latest(ws)
    assert (row["status"], row["model"], row["trading"]) == ("skipped", "test", "read-only")
    assert "stale" in row["reason"]


def assert_ad_hoc_goes_on(ws, *args: str) -> None:
    """The ad hoc command goes on without a jobs file (the contrast to a refusal)."""
    result = ws.call(*args, at=STALE)
    assert result.returncode == 0, result.stderr
    assert " - ERROR - " not in result.stderr


NEXT_AD_HOC = ("next", "--schedule", "9:30am", "--daily")


@pytest.mark.parametrize(
    "args",
    [
        ("next", "--job", "check"),
        ("next", "--all"),
        ("run", "--job", "check", "--ignore-market-hours"),
        ("generate-units", "--job", "check", "--target", "crontab", "--no-env-file"),
        ("generate-units", "--all", "--target", "crontab", "--no-env-file"),
        ("status", "--json"),
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_what_needs_the_jobs_file_is_refused_when_the_variable_names_a_missing_one(ws, args):
    missing = missing_config_variable(ws)
    assert_ad_hoc_goes_on(ws, *NEXT_AD_HOC)
    line = usage_error(ws, ws.call(*args))
    assert "$TASTY_ONESHOT_CONFIG" in line and str(missing) in line


@pytest.mark.parametrize(
    "args",
    [
        NEXT_AD_HOC,
        ("run", "Check", "--schedule", "9:30am", "--daily", "--model", "test", "--scheduled"),
        ("generate-units", "Check", "--schedule", "9:30am", "--daily", "--target", "crontab"),
    ],
    ids=lambda args: args[0],
)
def test_a_missing_config_flag_is_refused_even_for_an_ad_hoc_command(ws, args):
    missing_config_variable(ws)
    ws.env.update(TASTYTRADE_CLIENT_SECRET="not-used", TASTYTRADE_REFRESH_TOKEN="not-used")
    no_env_file = ("--no-env-file",) if args[0] == "generate-units" else ()
    line = usage_error(ws, ws.call(*args, *no_env_file, "--config", "missing.yaml", at=STALE))
    assert "missing.yaml" in line and "--config" in line
    assert_ad_hoc_goes_on(ws, *args, *no_env_file)  # without the flag, it would


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda path: path.mkdir(), id="a directory"),
        pytest.param(lambda path: path.symlink_to(path.parent / "nowhere"), id="a dangling link"),
        pytest.param(lambda path: path.write_text("jobs: [unclosed\n"), id="bad YAML"),
    ],
)
def test_a_variable_naming_something_that_is_no_jobs_file_is_refused_for_ad_hoc_too(ws, make):
    missing = missing_config_variable(ws)
    assert_ad_hoc_goes_on(ws, *NEXT_AD_HOC)  # nothing there: the built-in defaults
    missing.parent.mkdir()
    make(missing)
    line = usage_error(ws, ws.call(*NEXT_AD_HOC))
    assert str(missing) in line


# --- .env and --env-file -------------------------------------------------------------------


def test_dotenv_in_the_working_directory_supplies_the_model(ws):
    jobs_file(ws, "jobs: {}\n", model=None)
    ws.write(".env", "MODEL_IDENTIFIER=test\n")
    result = ws.call("run", "Check my positions", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    [row] = ws.history()
    assert (row["status"], row["model"]) == ("ok", "test")
    assert len(ws.server_starts()) == 1


def test_dotenv_never_overrides_a_variable_already_set(ws):
    jobs_file(ws, NO_MODEL, model=None)
    ws.write(".env", "MODEL_IDENTIFIER=ollama:from-dotenv\n")
    result = ws.call("run", "--job", "probe", "--scheduled", at=STALE)
    assert result.returncode == 0, result.stderr
    assert latest(ws)["model"] == "ollama:from-dotenv"
    ws.env["MODEL_IDENTIFIER"] = "ollama:from-environment"
    result = ws.call("run", "--job", "probe", "--scheduled", at=STALE)
    assert result.returncode == 0, result.stderr
    assert latest(ws)["model"] == "ollama:from-environment"


def test_env_file_is_loaded_first_and_never_overrides_a_variable_already_set(ws):
    jobs_file(ws, NO_MODEL, model=None)
    ws.write(".env", "MODEL_IDENTIFIER=ollama:from-dotenv\n")
    creds = ws.root.parent / "creds.env"
    creds.write_text("MODEL_IDENTIFIER=ollama:from-env-file\n")
    args = ("run", "--job", "probe", "--scheduled", "--env-file", str(creds))
    result = ws.call(*args, at=STALE)
    assert result.returncode == 0, result.stderr
    assert latest(ws)["model"] == "ollama:from-env-file"
    ws.env["MODEL_IDENTIFIER"] = "ollama:from-environment"
    result = ws.call(*args, at=STALE)
    assert result.returncode == 0, result.stderr
    assert latest(ws)["model"] == "ollama:from-environment"


# --- the name of an ad hoc run -------------------------------------------------------------


def test_ad_hoc_run_is_named_from_its_instructions_stably_or_by_name(ws):
    jobs_file(ws, "jobs: {}\n")

    def name_of(*args: str) -> str:
        flags = ("--schedule", "9:30am", "--daily", "--scheduled")
        result = ws.call("run", *args, *flags, at=STALE)
        assert result.returncode == 0, result.stderr
        return latest(ws)["job"]

    first = name_of("Check my positions")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", first)
    assert name_of("Check my positions") == first
    other = name_of("Check my orders")
    assert other != first and re.fullmatch(r"[a-z0-9][a-z0-9-]*", other)
    odd = name_of('Alert if SPY < 5% ("now")')
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", odd) and odd not in (first, other)
    assert name_of("Check my positions", "--name", "morning") == "morning"


def test_the_jobs_file_is_read_every_time_and_never_kept_in_the_state_directory(ws):
    path = jobs_file(ws, GOOD_JOB)
    assert ws.call("run", "--job", "check", "--scheduled", at=STALE).returncode == 0
    # The fake server's command line is in the jobs file only; a cache of the file holds it.
    kept = [f for f in ws.state.rglob("*") if f.is_file() and b"fake_tasty_agent" in f.read_bytes()]
    assert kept == [], "a copy of the jobs file could decide what a later run does"
    # Same length, one key misspelt: only the file's own change can reveal it.
    path.write_text(path.read_text().replace("schedule:", "schedulx:"))
    line = usage_error_allowing_rows(ws, ws.call("run", "--job", "check", "--scheduled", at=STALE))
    assert "schedulx" in line and "unknown key" in line


def usage_error_allowing_rows(ws, result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    [line] = result.stderr.splitlines()
    return line


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('    cron: "0 0 31 2 *"\n', "never fires"),  # valid fields, impossible date
        ("    timeout: .inf\n", "finite"),
        ("    max_cost: .nan\n", "finite"),
    ],
)
def test_values_that_pass_a_naive_check_but_cannot_work_are_usage_errors(ws, body, named):
    jobs_file(ws, "jobs:\n  check:\n    instructions: Check\n" + body)
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert "job 'check'" in line and named in line


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_timeout_flag_is_a_usage_error(ws, value):
    jobs_file(ws, GOOD_JOB)
    assert "--timeout" in usage_error(ws, ws.call("run", "--job", "check", "--timeout", value))


def test_the_contracts_own_mcp_block_is_the_default_server_and_needs_credentials(ws):
    # `command: tasty-agent` is found beside tasty-oneshot (not on cron's bare PATH) and, being
    # tasty-agent, needs the TastyTrade credentials: exit 2 before anything starts.
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\nmcp:\n  command: tasty-agent\n  args: [stdio]\n"
        "jobs:\n  check:\n    instructions: Check\n",
    )
    ws.env["PATH"] = "/usr/bin:/bin"
    line = usage_error(ws, ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert "TASTYTRADE_CLIENT_SECRET" in line


def test_a_local_openai_compatible_server_needs_no_key(ws):
    # With OPENAI_BASE_URL set, a missing OPENAI_API_KEY is not a configuration error: the run
    # gets as far as its (stale) slot check and is recorded.
    jobs_file(ws, GOOD_JOB, model="openai-chat:local")
    ws.env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    assert ws.call("run", "--job", "check", "--scheduled", at=STALE).returncode == 0
    assert latest(ws)["status"] == "skipped"
    del ws.env["OPENAI_BASE_URL"]
    assert "OPENAI_API_KEY" in usage_error_allowing_rows(
        ws, ws.call("run", "--job", "check", "--scheduled", at=STALE)
    )
