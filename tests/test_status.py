"""`status` sees a timer that never fired: missed slots count from when the job was first
expected to fire (its first scheduled run, or when its timer unit or crontab was written
here), a job with a schedule and no timer anywhere is `not-installed`, and the `timer` field
says exactly what systemd and cron say.

In-process: real unit files under a temporary XDG_CONFIG_HOME read by the real `systemctl
--user list-unit-files`, a fake `crontab` on PATH that lists a spool file, real ledger rows.
"Now" is given to `status`; times below are UTC (New York is UTC-5 here).
"""

import json
import os
import pwd
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasty_oneshot import paths
from tasty_oneshot import status as status_module
from tasty_oneshot.ledger import open_ledger
from tasty_oneshot.ledger.rows import Finish, RunStart
from tasty_oneshot.runner import file_jobs
from tasty_oneshot.schedule import NYC

JOBS = """\
model: test
jobs:
  check:
    instructions: Check my positions
    schedule: "10:00am"
    daily: true
  by-hand:
    instructions: Only when asked
  any-hour:
    instructions: Weekends too
    schedule: "10:00am"
    daily: true
    ignore_market_hours: true
"""
CRON_LINE = "0 15 * * 1-5 /opt/venv/bin/tasty-oneshot run --job check --config /x.yaml --scheduled"
FAKE_CRONTAB = """\
#!/bin/sh
[ "$1" = -l ] || exit 2
if [ -f "{spool}" ]; then exec cat "{spool}"; fi
echo "no crontab for $(id -un)" >&2
exit 1
"""
ENABLED = "timers.target.wants"


def at(text: str) -> datetime:
    """A UTC time as the tests write it ('2026-12-01 15:00:30')."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nyc(day: str, wall: str = "10:00") -> str:
    return datetime.fromisoformat(f"{day} {wall}").replace(tzinfo=NYC).isoformat()


class Host:
    """This host as `status` asks it: unit files, a crontab, the ledger."""

    def __init__(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.root = root
        self.capsys = capsys
        self.units = root / "config/systemd/user"
        self.runtime = root / "runtime"
        self.spool = root / "spool"
        self.bin = root / "bin"
        for directory in (self.units / ENABLED, self.runtime, self.spool, self.bin):
            directory.mkdir(parents=True)
        self.runtime.chmod(0o700)
        crontab = self.bin / "crontab"
        user = pwd.getpwuid(os.getuid()).pw_name
        crontab.write_text(FAKE_CRONTAB.format(spool=self.spool / user))
        crontab.chmod(0o755)
        self.crontab_file = self.spool / user
        for name, value in {
            "HOME": root / "home",
            "XDG_CONFIG_HOME": root / "config",
            "XDG_DATA_HOME": root / "data",
            "XDG_RUNTIME_DIR": self.runtime,
            "TASTY_ONESHOT_STATE_DIR": root / "state",
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
        }.items():
            monkeypatch.setenv(name, str(value))
        monkeypatch.delenv("TASTY_ONESHOT_CONFIG", raising=False)
        monkeypatch.delenv("TASTY_ONESHOT_LEDGER", raising=False)
        monkeypatch.setattr(status_module, "CRONTAB_SPOOLS", (str(self.spool),))
        monkeypatch.chdir(root)
        (root / "tasty-oneshot.yaml").write_text(JOBS)

    def unit(self, job: str, state: str, written: str) -> None:
        """A timer unit for the job, written at `written` (UTC), enabled as `state` says."""
        name = f"tasty-oneshot-{job}.timer"
        path = self.units / name
        install = "" if state == "static" else "[Install]\nWantedBy=timers.target\n"
        path.write_text(f"[Timer]\nOnCalendar=*-*-* 10:00:00 America/New_York\n{install}")
        if state == "enabled":
            (self.units / ENABLED / name).symlink_to(f"../{name}")
        elif state == "enabled-runtime":
            wants = self.runtime / "systemd/user" / ENABLED
            wants.mkdir(parents=True, exist_ok=True)
            (wants / name).symlink_to(path)
        else:
            assert state in ("disabled", "static"), state
        stamp = at(written).timestamp()
        os.utime(path, (stamp, stamp))

    def crontab(self, text: str, written: str) -> None:
        self.crontab_file.write_text(text)
        stamp = at(written).timestamp()
        os.utime(self.crontab_file, (stamp, stamp))

    def ran(
        self, job: str, started: str, status: str = "ok", scheduled: bool = True, host: str = ""
    ) -> None:
        """A run that started the agent at `started` (UTC), its slot the minute before."""
        begin = at(started).astimezone(NYC)
        slot = begin.replace(second=0) if scheduled else None
        ledger = open_ledger(paths.state_dir())
        try:
            start = RunStart(job, begin, slot=slot, scheduled=scheduled, host=host or "here")
            run_id = ledger.claim(start)
            assert run_id is not None
            ledger.finish(
                run_id, Finish(status, "the agent finished", begin, 0 if status == "ok" else 1)
            )
        finally:
            ledger.close()

    def status(self, now: str, *jobs: str, days: int = 7) -> tuple[int, dict[str, dict]]:
        """`status --json --check` at `now` (UTC): its exit code and its objects by job."""
        self.capsys.readouterr()
        selected = file_jobs(None, list(jobs), scheduled_only=False)
        code = status_module.status(selected, days, True, True, now=at(now).astimezone(NYC))
        reports = json.loads(self.capsys.readouterr().out)
        return code, {item["job"]: item for item in reports}

    def table(self, now: str, *jobs: str) -> list[str]:
        self.capsys.readouterr()
        selected = file_jobs(None, list(jobs), scheduled_only=False)
        status_module.status(selected, 7, False, False, now=at(now).astimezone(NYC))
        return self.capsys.readouterr().out.splitlines()


@pytest.fixture
def host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Host:
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed")
    return Host(tmp_path, monkeypatch, capsys)


# Tuesday 2026-12-01, 2:30pm in New York. In the week before: Thanksgiving (11-26) closed,
# Friday 11-27 open until 13:00, Monday 11-30 and Tuesday 12-01 open.
NOW = "2026-12-01 19:30:00"
FROM_FRIDAY = [nyc("2026-11-27"), nyc("2026-11-30"), nyc("2026-12-01")]


# --- missed slots from the timer's installation ------------------------------------------------


def test_an_enabled_timer_whose_runs_never_reach_the_ledger_misses_from_its_units_time(host):
    # Enabled Friday 07:00 New York; every firing since died before the ledger (exit 2 in the
    # timer's environment), or linger was off and none fired.
    host.unit("check", "enabled", written="2026-11-27 12:00:00")
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["missed"] == FROM_FRIDAY
    assert jobs["check"]["timer"] == "enabled" and jobs["check"]["state"] == "missed"
    assert code == 1


def test_missed_slots_start_at_the_units_time_not_before(host):
    host.unit("check", "enabled", written="2026-11-30 16:00:00")  # Monday 11:00, after 10:00
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["missed"] == [nyc("2026-12-01")] and code == 1


def test_a_timer_installed_but_never_enabled_is_not_installed_and_misses_slots(host):
    host.unit("check", "disabled", written="2026-11-27 12:00:00")
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["timer"] == "installed"
    assert jobs["check"]["state"] == "not-installed"
    assert jobs["check"]["missed"] == FROM_FRIDAY
    assert code == 1


def test_the_first_scheduled_run_or_the_units_time_whichever_is_earlier(host):
    # The first firing (Friday) died before the ledger; Tuesday's ran.
    host.unit("check", "enabled", written="2026-11-27 12:00:00")
    host.ran("check", "2026-12-01 15:00:20")
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["missed"] == FROM_FRIDAY[:2] and code == 1
    # Units written again since: the ledger's first scheduled run (Tuesday 11-24) is earlier.
    host.unit("check", "disabled", written="2026-11-30 16:00:00")
    (host.units / ENABLED / "tasty-oneshot-check.timer").unlink(missing_ok=True)
    host.ran("check", "2026-11-24 15:00:20")
    _, jobs = host.status(NOW, "check", days=8)
    assert jobs["check"]["missed"] == [nyc("2026-11-25"), *FROM_FRIDAY[:2]]
    assert jobs["check"]["timer"] == "installed" and jobs["check"]["state"] == "missed"


def test_an_enabled_timer_before_its_first_fire_time_is_never_run(host):
    host.unit("check", "enabled", written="2026-12-01 16:00:00")  # 11:00, after today's 10:00
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["missed"] == [] and jobs["check"]["state"] == "never-run"
    assert code == 0


def test_a_slot_inside_its_window_is_not_missed_until_max_delay_passed(host):
    host.unit("check", "enabled", written="2026-12-01 14:00:00")  # 9:00, before 10:00
    code, jobs = host.status("2026-12-01 15:04:59", "check")  # 10:04:59: within max_delay 300
    assert jobs["check"]["missed"] == [] and jobs["check"]["state"] == "never-run"
    assert code == 0
    code, jobs = host.status("2026-12-01 15:05:00", "check")  # 10:05:00: a run may still go
    assert jobs["check"]["missed"] == [] and code == 0
    code, jobs = host.status("2026-12-01 15:05:01", "check")
    assert jobs["check"]["missed"] == [nyc("2026-12-01")] and code == 1


def test_a_jobs_own_max_delay_is_its_window_not_the_default(host):
    (host.root / "tasty-oneshot.yaml").write_text(
        JOBS + '  slow:\n    instructions: Late is fine\n    schedule: "10:00am"\n'
        "    daily: true\n    max_delay: 3600\n"
    )
    host.unit("slow", "enabled", written="2026-12-01 14:00:00")  # 9:00, before 10:00
    code, jobs = host.status("2026-12-01 15:30:00", "slow")  # 10:30: inside its hour
    assert jobs["slow"]["missed"] == [] and jobs["slow"]["state"] == "never-run" and code == 0
    code, jobs = host.status("2026-12-01 16:00:00", "slow")  # 11:00: its last instant
    assert jobs["slow"]["missed"] == [] and code == 0
    code, jobs = host.status("2026-12-01 16:00:01", "slow")
    assert jobs["slow"]["missed"] == [nyc("2026-12-01")] and code == 1


# --- crontab -----------------------------------------------------------------------------------


def test_a_crontab_line_is_an_enabled_timer_counted_from_the_crontabs_time(host):
    host.crontab(f"MAILTO=me\n{CRON_LINE}\n", written="2026-11-27 12:00:00")
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["timer"] == "enabled"
    assert jobs["check"]["missed"] == FROM_FRIDAY and jobs["check"]["state"] == "missed"
    assert code == 1


def test_a_commented_out_or_other_commands_crontab_line_is_no_timer(host):
    host.crontab(
        f"#{CRON_LINE}\n  # {CRON_LINE}\n\t# {CRON_LINE}\n"
        # Commented out after the time fields: cron hands sh a comment, which runs nothing.
        f"{CRON_LINE.replace('/opt', '# /opt')}\n"
        f"{CRON_LINE.replace('/opt', 'true # /opt')}\n"
        "*/30 * * * * /opt/venv/bin/tasty-oneshot status --check --job check || mail me\n"
        "0 15 * * 1-5 /opt/venv/bin/tasty-oneshot run --job checker --scheduled\n",
        written="2026-11-27 12:00:00",
    )
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["timer"] == "absent" and jobs["check"]["state"] == "not-installed"
    assert jobs["check"]["missed"] == [] and code == 1


def test_an_ad_hoc_jobs_crontab_line_names_it_with_name(host):
    host.crontab(
        "0 15 * * 1-5 tasty-oneshot run 'Check my positions' --name=check --daily --scheduled\n"
        "0 15 * * 1-5 tasty-oneshot run Hi --name by-hand --scheduled\n",
        written="2026-12-01 16:00:00",
    )
    _, jobs = host.status(NOW, "check", "by-hand")
    assert jobs["check"]["timer"] == jobs["by-hand"]["timer"] == "enabled"


# --- the timer field ---------------------------------------------------------------------------


def test_static_and_enabled_runtime_timers_are_enabled_a_disabled_one_installed(host):
    host.unit("check", "static", written="2026-12-01 16:00:00")
    host.unit("any-hour", "enabled-runtime", written="2026-12-01 16:00:00")
    host.unit("by-hand", "disabled", written="2026-12-01 16:00:00")
    _, jobs = host.status(NOW)
    assert {job: item["timer"] for job, item in jobs.items()} == {
        "any-hour": "enabled",
        "by-hand": "installed",
        "check": "enabled",
    }
    assert jobs["check"]["state"] == jobs["any-hour"]["state"] == "never-run"


def test_a_timer_in_either_place_counts_and_nothing_to_ask_is_unknown(host, monkeypatch):
    host.unit("check", "enabled", written="2026-12-01 16:00:00")
    host.crontab(CRON_LINE.replace("check", "any-hour") + "\n", written="2026-12-01 16:00:00")
    _, jobs = host.status(NOW)
    assert {job: item["timer"] for job, item in jobs.items()} == {
        "any-hour": "enabled",  # crontab
        "by-hand": "absent",
        "check": "enabled",  # systemd
    }
    monkeypatch.setenv("PATH", str(host.root / "empty"))  # no systemctl, no crontab
    code, jobs = host.status(NOW)
    assert {item["timer"] for item in jobs.values()} == {"unknown"}
    # No timer enabled here and no scheduled run anywhere: not installed, as far as we know.
    assert jobs["check"]["state"] == "not-installed" and jobs["by-hand"]["state"] == "never-run"
    assert code == 1


def test_a_system_timer_counts_too_and_enabled_in_one_scope_is_enabled(host, monkeypatch):
    host.unit("check", "disabled", written="2026-12-01 16:00:00")  # the user's: not enabled
    host.unit("any-hour", "disabled", written="2026-12-01 16:00:00")
    asked = status_module._systemd_timers
    system = {
        "tasty-oneshot-check.timer": status_module.Timer("enabled", at("2026-11-30 16:00:00")),
        "tasty-oneshot-by-hand.timer": status_module.Timer("installed"),
    }
    monkeypatch.setattr(
        status_module,
        "_systemd_timers",
        lambda scope: system if scope == "--system" else asked(scope),
    )  # as `systemctl --system list-unit-files` would say, where a manager answers
    code, jobs = host.status(NOW)
    assert {job: item["timer"] for job, item in jobs.items()} == {
        "any-hour": "installed",
        "by-hand": "installed",
        "check": "enabled",
    }
    assert jobs["check"]["missed"] == [nyc("2026-12-01")]  # from the system unit's time
    assert jobs["any-hour"]["state"] == "not-installed" and code == 1


# --- what systemctl says, read -----------------------------------------------------------------

# `systemctl SCOPE list-unit-files PATTERN --no-legend` as systemd 252 answers it: the lines in
# DIR/user or DIR/system; none there: no unit file matches (exit 1, not a word); DIR/SCOPE.error:
# systemctl fails, saying so.
FAKE_SYSTEMCTL = """\
#!/bin/sh
case "$1" in --user) scope=user ;; --system) scope=system ;; *) exit 2 ;; esac
[ "$2 $3 $4" = "list-unit-files tasty-oneshot-*.timer --no-legend" ] || exit 2
say() { while IFS= read -r line; do printf '%s\\n' "$line"; done <"$1"; }
if [ -f "{dir}/$scope.error" ]; then say "{dir}/$scope.error" >&2; exit 1; fi
if [ -s "{dir}/$scope" ]; then say "{dir}/$scope"; exit 0; fi
exit 1
"""
# Every state list-unit-files can show (systemctl(1)): those of a timer that fires without an
# `enable` of its own are enabled, every other is installed.
UNIT_FILE_STATES = {
    "enabled": "enabled",
    "enabled-runtime": "enabled",
    "static": "enabled",
    "alias": "enabled",
    "generated": "enabled",
    "transient": "enabled",
    "indirect": "installed",
    "disabled": "installed",
    "linked": "installed",
    "linked-runtime": "installed",
    "masked": "installed",
    "masked-runtime": "installed",
    "bad": "installed",
}


@pytest.fixture
def listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """A host whose only systemctl is a fake on PATH (all of it) that lists what the test gives
    it, no crontab; a jobs file with a job named after each unit file state, and `both`."""
    host = Host(tmp_path, monkeypatch, capsys)
    (host.bin / "crontab").unlink()
    answers = tmp_path / "systemctl"
    answers.mkdir()
    fake = host.bin / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.replace("{dir}", str(answers)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(host.bin))
    jobs = "".join(f"  {name}:\n    instructions: Hi\n" for name in [*UNIT_FILE_STATES, "both"])
    (tmp_path / "tasty-oneshot.yaml").write_text(f"model: test\njobs:\n{jobs}")
    return host, answers


def test_each_unit_file_state_systemctl_lists_is_enabled_or_installed_as_systemd_means(listed):
    host, answers = listed
    # Columns as systemd 252 aligns them, the preset last ("enabled" or "-", never read).
    (answers / "user").write_text(
        "".join(
            f"tasty-oneshot-{state}.timer {state:<15} {'-' if i % 2 else 'enabled'}\n"
            for i, state in enumerate(UNIT_FILE_STATES)
        )
        + "tasty-oneshot-both.timer enabled enabled\n"
    )
    (answers / "system").write_text("tasty-oneshot-both.timer disabled enabled\n")
    _, jobs = host.status(NOW)
    timers = {job: item["timer"] for job, item in jobs.items()}
    assert timers == {**UNIT_FILE_STATES, "both": "enabled"}  # enabled in either scope


def test_systemctl_listing_no_timer_is_absent_and_failing_in_both_scopes_unknown(listed):
    host, answers = listed
    (answers / "system").write_text("tasty-oneshot-static.timer static -\n")
    _, jobs = host.status(NOW)  # the user's scope matches nothing: an answer all the same
    assert jobs["static"]["timer"] == "enabled"
    assert {item["timer"] for job, item in jobs.items() if job != "static"} == {"absent"}
    (answers / "system").unlink()
    _, jobs = host.status(NOW)
    assert {item["timer"] for item in jobs.values()} == {"absent"}
    for scope in ("user", "system"):
        (answers / f"{scope}.error").write_text("Failed to connect to bus: No medium found\n")
    _, jobs = host.status(NOW)
    assert {item["timer"] for item in jobs.values()} == {"unknown"}


def test_the_real_systemctl_listing_no_timer_is_absent_not_unknown(host, monkeypatch):
    # systemd 246 and later exit 1 without a word when no unit file matches the pattern.
    (host.bin / "crontab").unlink()  # nothing else to ask
    monkeypatch.setenv("PATH", f"{host.bin}{os.pathsep}{Path(shutil.which('systemctl')).parent}")
    _, jobs = host.status(NOW)
    assert {item["timer"] for item in jobs.values()} == {"absent"}


# --- states ------------------------------------------------------------------------------------


def test_a_job_with_a_schedule_and_no_timer_is_not_installed_and_fails_the_check(host):
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["timer"] == "absent" and jobs["check"]["state"] == "not-installed"
    assert code == 1
    code, jobs = host.status(NOW, "by-hand")  # no schedule: nothing to install
    assert jobs["by-hand"]["state"] == "never-run" and code == 0


def test_scheduled_runs_from_another_host_are_not_not_installed(host):
    for day in ("2026-11-27", "2026-11-30", "2026-12-01"):
        host.ran("check", f"{day} 15:00:10", host="other-host")
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["timer"] == "absent" and jobs["check"]["state"] == "ok"
    assert jobs["check"]["missed"] == [] and code == 0


def test_a_job_with_an_ok_manual_run_is_ok_not_never_run(host):
    host.ran("by-hand", "2026-12-01 18:00:00", scheduled=False)
    host.unit("check", "enabled", written="2026-12-01 16:00:00")
    host.ran("check", "2026-12-01 18:00:00", scheduled=False)
    code, jobs = host.status(NOW, "by-hand", "check")
    assert jobs["by-hand"]["state"] == jobs["check"]["state"] == "ok" and code == 0


def test_failures_are_not_counted_past_an_ok(host):
    host.unit("check", "enabled", written="2026-11-23 12:00:00")
    host.ran("check", "2026-11-24 15:00:10", "failed")
    host.ran("check", "2026-11-25 15:00:10", "ok")
    host.ran("check", "2026-11-27 15:00:10", "timeout")
    host.ran("check", "2026-11-30 15:00:10", "failed")
    host.ran("check", "2026-12-01 15:00:10", "failed")
    code, jobs = host.status(NOW, "check")
    assert jobs["check"]["failures_in_a_row"] == 3 and jobs["check"]["state"] == "failing"
    assert code == 1
    # The same arithmetic on any list the ledger gives, newest first; a running run is skipped.
    count = status_module.failures_in_a_row
    assert count(["running", "failed", "abandoned", "ok", "failed", "timeout"]) == 2
    assert count(["ok", "failed"]) == 0


# --- the table ---------------------------------------------------------------------------------


def test_the_tables_next_column_marks_a_fire_time_the_market_check_will_skip(host):
    host.unit("check", "enabled", written="2026-12-01 16:00:00")
    friday = "2026-12-04 16:00:00"  # 11:00 on Friday: the next 10:00 is Saturday's
    lines = host.table(friday, "check", "any-hour")
    cells = {line.split()[0]: line for line in lines[1:]}
    assert cells["check"].endswith("  2026-12-05 10:00 (skip: market closed)")
    assert cells["any-hour"].endswith("  2026-12-05 10:00")  # ignores market hours: runs
    assert cells["check"].split()[1:3] == ["missed", "enabled"]
    assert cells["any-hour"].split()[1:3] == ["not-installed", "absent"]
    _, jobs = host.status(friday, "check")
    assert jobs["check"]["next"]["will_run"] is False
    thursday = host.table("2026-12-03 16:00:00", "check")
    assert thursday[1].endswith("  2026-12-04 10:00")
