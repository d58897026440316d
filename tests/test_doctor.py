"""`tasty-oneshot doctor`: what a timer's run of each job will meet, in the timer's own
environment (its env file, not this shell), checked without running the agent.

Each test runs the CLI (in this process) against the fake MCP server
(tests/fake_tasty_agent.py), real state directories and real systemd unit files
(generate-units, then `systemctl --user enable`, which works without a running manager). A
crontab is a real crontab text, printed by a `crontab` stand-in first on PATH: a test must not
install lines into the machine's real crontab.
"""

import json
import os
import re
import stat
import sys
from pathlib import Path

from conftest import FAKE_SERVER, Workspace, closed_port

from tasty_oneshot import doctor, secrets

FIXTURES = Path(__file__).parent / "fixtures"
SUNDAY = "2026-11-29 15:00:00"  # 10:00 NYC on a Sunday: a scheduled run skips, off its slot
REFRESH_TOKEN = "rt-very-secret-refresh-0123"
CLIENT_SECRET = "cs-very-secret-client-4567"


def jobs_file(ws: Workspace, jobs: str, *, model: str = "test", mcp: str | None = None) -> None:
    ws.write(
        "tasty-oneshot.yaml",
        f"model: {model}\n" + (mcp if mcp is not None else ws.fake_mcp_yaml()) + "jobs:\n" + jobs,
    )


def env_file(ws: Workspace, *lines: str) -> str:
    """The timer's env file: the test's state directory, and `lines`."""
    path = ws.write("timer.env", "\n".join([f"TASTY_ONESHOT_STATE_DIR={ws.state}", *lines]) + "\n")
    path.chmod(0o600)
    return str(path)


def doctor_json(ws: Workspace, *args: str) -> tuple[int, list[dict]]:
    result = ws.call("doctor", "--json", *args, timeout=180)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def found(checks: list[dict], check: str, job: str | None = None) -> list[dict]:
    return [c for c in checks if c["check"] == check and c["job"] == job]


def one(checks: list[dict], check: str, job: str | None = None) -> dict:
    matches = found(checks, check, job)
    assert len(matches) == 1, (check, job, checks)
    return matches[0]


def enabled_systemd_timer(ws: Workspace, job: str, env: str, *, enable: bool = True) -> None:
    units = Path(ws.env["XDG_CONFIG_HOME"]) / "systemd" / "user"
    made = ws.call(
        "generate-units", "--job", job, "--target", "systemd", "--output-dir", str(units),
        "--env-file", env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    if enable:
        import subprocess

        enabling = subprocess.run(
            ["systemctl", "--user", "enable", f"tasty-oneshot-{job}.timer"],
            env=ws.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert enabling.returncode == 0, enabling.stderr


def crontab_on_path(ws: Workspace, text: str) -> None:
    """A `crontab` whose `crontab -l` prints `text`, first on PATH."""
    bin_dir = ws.root / "bin"
    bin_dir.mkdir(exist_ok=True)
    (ws.root / "user.crontab").write_text(text)
    script = bin_dir / "crontab"
    script.write_text(f'#!/bin/sh\n[ "$1" = -l ] && exec cat {ws.root / "user.crontab"}\nexit 1\n')
    script.chmod(0o755)
    ws.env["PATH"] = f"{bin_dir}:{ws.env['PATH']}"


# --- a job that will run ---------------------------------------------------------------------


def test_a_job_with_its_timer_enabled_passes_without_running_the_agent_or_writing_the_ledger(ws):
    jobs_file(
        ws, '  check:\n    instructions: summarise\n    schedule: "9:30am"\n    daily: true\n'
    )
    env = env_file(ws)
    skipped = ws.call("run", "--job", "check", "--scheduled", "--env-file", env, at=SUNDAY)
    assert skipped.returncode == 0, skipped.stderr
    rows = ws.history()
    assert len(rows) == 1
    enabled_systemd_timer(ws, "check", env)

    code, checks = doctor_json(ws, "--env-file", env)

    assert code == 0, checks
    for check in checks:  # the --json shape
        assert set(check) == {"check", "job", "status", "message"}
        assert check["status"] in ("ok", "warn", "fail")
    assert all(c["status"] != "fail" for c in checks), checks
    assert one(checks, "mcp-server", "check")["status"] == "ok"
    assert "tools" in one(checks, "mcp-server", "check")["message"]
    assert one(checks, "timer", "check")["status"] == "ok"
    assert "enabled" in one(checks, "timer", "check")["message"]
    assert "schema 4, 1 rows" in one(checks, "ledger")["message"]
    assert one(checks, "state-dir")["status"] == "ok"
    assert re.search(
        r"next fire \d{4}-\d\d-\d\d 09:30 NYC", one(checks, "next-fire", "check")["message"]
    )
    # It never ran the agent: the server was started once (by doctor), and called for nothing.
    assert len(ws.server_starts()) == 1
    assert ws.calls() == []
    assert ws.history() == rows  # no new row, no slot used
    assert sorted(p.name for p in ws.state.iterdir() if p.name.startswith(".doctor")) == []


# --- what a timer's run would not have --------------------------------------------------------


def test_an_empty_model_key_in_the_env_file_fails_naming_the_key_and_the_file(ws):
    jobs_file(ws, "  check:\n    instructions: summarise\n", model="openai:gpt-5-mini")
    env = env_file(ws, "OPENAI_API_KEY=")

    code, checks = doctor_json(ws, "--env-file", env)

    assert code == 1
    model = one(checks, "model", "check")
    assert model["status"] == "fail"
    assert "OPENAI_API_KEY is not set" in model["message"]
    assert f"set it in {env}" in model["message"]
    assert "only in this shell" not in model["message"]


def test_variables_set_only_in_this_shell_are_named_as_ones_the_timer_will_not_get(ws):
    jobs_file(
        ws,
        "  check:\n    instructions: summarise\n  nick:\n    instructions: check ${ACCOUNT_NICK}\n",
        model="openai:gpt-5-mini",
    )
    ws.env["OPENAI_API_KEY"] = "sk-only-in-this-shell-123"
    ws.env["ACCOUNT_NICK"] = "ira"
    env = env_file(ws)

    code, checks = doctor_json(ws, "--env-file", env)

    assert code == 1
    model = one(checks, "model", "check")
    assert model["status"] == "fail"
    assert "OPENAI_API_KEY" in model["message"]
    assert "set only in this shell" in model["message"]
    assert f"add it to {env}" in model["message"]
    nick = one(checks, "job", "nick")
    assert nick["status"] == "fail"
    assert "${ACCOUNT_NICK} is not set" in nick["message"]
    assert "set only in this shell" in nick["message"]
    assert "sk-only-in-this-shell-123" not in json.dumps(checks)


def test_missing_tastytrade_credentials_fail_naming_who_needs_them_and_start_no_server(ws):
    agent = ws.write("tasty-agent", f"#!/bin/sh\nexec {sys.executable} {FAKE_SERVER} {ws.record}\n")
    agent.chmod(0o755)
    jobs_file(ws, "  check:\n    instructions: summarise\n", mcp="mcp:\n  command: ./tasty-agent\n")
    env = env_file(ws, f"TASTYTRADE_CLIENT_SECRET={CLIENT_SECRET}")

    code, checks = doctor_json(ws, "--env-file", env)

    assert code == 1
    credentials = found(checks, "credentials", "check")
    assert [c["status"] for c in credentials] == ["ok", "fail"]
    assert "TASTYTRADE_REFRESH_TOKEN is not set" in credentials[1]["message"]
    assert "needed by the tasty-agent MCP server" in credentials[1]["message"]
    assert one(checks, "mcp-server", "check")["status"] == "fail"
    assert ws.server_starts() == []
    assert CLIENT_SECRET not in json.dumps(checks)


def test_a_broker_refusal_says_what_tasty_agent_said_last_with_the_secrets_masked(ws):
    # A tasty-agent whose broker refuses the refresh token (and that quotes it, carelessly).
    agent = ws.write(
        "tasty-agent",
        "#!/bin/sh\n"
        "echo 'Starting the TastyTrade MCP server' >&2\n"
        'echo "ERROR:tasty_agent.core:Failed to authenticate with Tastytrade: invalid_grant '
        '(refresh token $TASTYTRADE_REFRESH_TOKEN)" >&2\n'
        "exit 1\n",
    )
    agent.chmod(0o755)
    jobs_file(ws, "  check:\n    instructions: summarise\n", mcp="mcp:\n  command: ./tasty-agent\n")
    env = env_file(
        ws, f"TASTYTRADE_CLIENT_SECRET={CLIENT_SECRET}", f"TASTYTRADE_REFRESH_TOKEN={REFRESH_TOKEN}"
    )

    result = ws.call("doctor", "--env-file", env, timeout=180)

    assert result.returncode == 1, result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("fail mcp-server (check)"))
    assert "TastyTrade authentication failed: Failed to authenticate with Tastytrade" in line
    assert "invalid_grant (refresh token ***)" in line
    assert REFRESH_TOKEN not in result.stdout + result.stderr
    assert CLIENT_SECRET not in result.stdout + result.stderr
    assert [x.split()[0] for x in result.stdout.splitlines()].count("ok") >= 3


def test_the_last_error_of_a_real_tasty_agent_that_cannot_reach_tastytrade():
    lines = (FIXTURES / "tasty-agent-unreachable.stderr").read_text().splitlines()
    said = doctor.last_error(lines)
    assert said == (
        "Failed to authenticate with Tastytrade: httpx2.ConnectError: [Errno -2] Name or "
        "service not known"
    )


def test_the_last_error_of_a_server_whose_rich_log_has_no_time_column():
    # rich's layout without its time column (RichHandler(show_time=False)): the level starts
    # the line, so it is not read as one of rich's records, but the source column still ends it.
    lines = [
        "Starting the TastyTrade MCP server",
        "ERROR    Failed to authenticate with Tastytrade: invalid_grant     core.py:142",
    ]
    said = doctor.last_error(lines)
    assert said == "Failed to authenticate with Tastytrade: invalid_grant"


# --- jobs, state, ledger -------------------------------------------------------------------------


def test_a_bad_job_among_good_ones_fails_alone_and_the_others_are_checked(ws):
    jobs_file(
        ws,
        "  first:\n    instructions: a\n"
        "  broken:\n    instructions: b\n    hourly: maybe\n"
        "  last:\n    instructions: c\n",
    )
    env = env_file(ws)

    result = ws.call("doctor", "--env-file", env, timeout=180)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for line in lines:
        assert re.match(r"^(ok|warn|fail) +[a-z-]+( \([a-z0-9-]+\))?: \S", line), line
    broken = [line for line in lines if "(broken)" in line]
    assert len(broken) == 1
    assert broken[0].startswith("fail job (broken): ")
    assert "job 'broken': key 'hourly'" in broken[0]
    for job in ("first", "last"):
        assert f"ok   job ({job}): loads: no schedule" in lines
        assert any(line.startswith(f"ok   mcp-server ({job}): ") for line in lines)
    assert len(ws.server_starts()) == 1  # one server, shared by the jobs, started once


def test_a_state_dir_writable_by_others_fails_with_the_fix(ws):
    jobs_file(ws, "  check:\n    instructions: summarise\n")
    open_dir = ws.root / "open-state"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    env = ws.write("timer.env", f"TASTY_ONESHOT_STATE_DIR={open_dir}\n")
    ws.env["TASTY_ONESHOT_STATE_DIR"] = str(open_dir)

    code, checks = doctor_json(ws, "--env-file", str(env))

    assert code == 1
    state = one(checks, "state-dir")
    assert state["status"] == "fail"
    assert "writable by group or others (mode 0777)" in state["message"]
    assert f"chmod 700 {open_dir}" in state["message"]
    assert one(checks, "ledger")["status"] == "fail"
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o777  # looked at, not changed
    assert list(open_dir.iterdir()) == []


def test_a_missing_env_file_is_one_line_and_exit_2(ws):
    jobs_file(ws, "  check:\n    instructions: summarise\n")
    result = ws.call("doctor", "--env-file", str(ws.root / "nowhere.env"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "nowhere.env: env file not found" in result.stderr


def test_a_postgresql_ledger_is_checked_read_only_and_an_unreachable_one_fails(ws, tmp_path):
    import psycopg
    from postgres_server import Cluster

    from tasty_oneshot.ledger.postgres import SCHEMA_VERSION, PostgresLedger

    server = Cluster()
    try:
        url = server.new_database()
        made = PostgresLedger(tmp_path, url)
        made.connect()  # the schema, as a first run makes it
        made.close()
        jobs_file(ws, "  check:\n    instructions: summarise\n")
        env = env_file(ws, f"TASTY_ONESHOT_LEDGER={url}")

        _, checks = doctor_json(ws, "--env-file", env, "--job", "check")

        ledger = one(checks, "ledger")
        assert ledger["status"] == "ok", ledger
        assert f"reachable, schema {SCHEMA_VERSION}" in ledger["message"]
        with psycopg.connect(url) as db:
            assert db.execute("SELECT count(*) FROM tasty_oneshot_runs").fetchone() == (0,)
    finally:
        server.destroy()
    secrets.register("s3cretpw")
    gone = doctor._postgres_check(f"postgresql://u:s3cretpw@127.0.0.1:{closed_port()}/x")
    assert gone.status == "fail"
    assert "cannot be reached" in gone.message
    assert "s3cretpw" not in secrets.redact(gone.message)


# --- timers ------------------------------------------------------------------------------------


def test_timers_disabled_missing_or_in_a_crontab_for_another_zone_fail_with_the_fix(ws):
    daily = '    schedule: "10:00am"\n    daily: true\n'
    jobs_file(
        ws,
        "".join(
            f"  {name}:\n    instructions: x\n{daily}"
            for name in ("enabled", "disabled", "nowhere", "cron")
        )
        + "  by-hand:\n    instructions: x\n",
    )
    env = env_file(ws)
    enabled_systemd_timer(ws, "enabled", env)
    enabled_systemd_timer(ws, "disabled", env, enable=False)
    crontab_on_path(
        ws,
        "# tasty-oneshot: crontab lines for a cron daemon running in Asia/Kathmandu.\n"
        "MAILTO=me\n"
        f"45 20 * * * /usr/bin/tasty-oneshot run --job cron --env-file {env} --scheduled\n",
    )

    code, checks = doctor_json(ws, "--env-file", env)

    assert code == 1
    assert one(checks, "timer", "enabled")["status"] == "ok"
    disabled = one(checks, "timer", "disabled")
    assert disabled["status"] == "fail"
    assert "systemctl --user enable --now tasty-oneshot-disabled.timer" in disabled["message"]
    nowhere = one(checks, "timer", "nowhere")
    assert nowhere["status"] == "fail"
    assert "generate-units --job nowhere" in nowhere["message"]
    assert one(checks, "timer", "cron") == {
        "check": "timer", "job": "cron", "status": "ok", "message": "crontab: 1 lines run it",
    }  # fmt: skip
    assert found(checks, "timer", "by-hand") == []  # no schedule: no timer to look for
    zone = one(checks, "cron-zone")
    assert zone["status"] == "fail"
    assert "Asia/Kathmandu" in zone["message"]
    assert f"--cron-tz {doctor.cron_daemon_zone()}" in zone["message"]
    assert one(checks, "lingering")["status"] in ("ok", "warn")


def test_crontab_lines_made_for_the_cron_daemons_zone_pass():
    system = doctor.cron_daemon_zone()
    text = f"# tasty-oneshot: crontab lines for a cron daemon running in {system}.\n"
    assert doctor.cron_zone_check(text).status == "ok"
    other = "Asia/Kathmandu" if system != "Asia/Kathmandu" else "UTC"
    assert doctor.cron_zone_check(text.replace(system, other)).status == "fail"
    assert doctor.cron_zone_check("30 9 * * * run --job x\n").status == "warn"
    assert doctor.same_zone("Etc/UTC", "UTC")


def test_lingering_is_read_from_systemds_linger_directory():
    user = f"doctor-test-{os.getpid()}"  # nobody: the machine's own users are not touched
    assert doctor.linger_check({"USER": user, "PATH": "/usr/bin:/bin"}).status == "warn"
    assert f"loginctl enable-linger {user}" in doctor.linger_check({"USER": user}).message
    linger = Path("/var/lib/systemd/linger")
    made = not linger.exists()
    linger.mkdir(parents=True, exist_ok=True)
    try:
        (linger / user).touch()
        assert doctor.linger_check({"USER": user}).status == "ok"
    finally:
        (linger / user).unlink(missing_ok=True)
        if made:
            linger.rmdir()
