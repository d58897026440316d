"""`tasty-oneshot status`: every job of the jobs file at a glance, like `systemctl
list-timers` joined with the ledger, and the slots that should have run but did not.

A missed slot is a fire time in the last --days days at which the job would have run (the
market open, or hours ignored), whose window has ended (max_delay passed), since the job was
first expected to fire (its first scheduled run in the ledger, or when its timer or crontab
line was installed here, whichever is earlier), with no ledger row that started the agent for
it: the timer did not fire (never enabled, linger off, the host off), its run died before the
ledger, or the run gave up (`busy`) or was refused (`locked`).
"""

import json
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

from tasty_oneshot import paths, terminal
from tasty_oneshot.errors import EXIT_FAILED, EXIT_OK
from tasty_oneshot.jobs import Job
from tasty_oneshot.ledger import Ledger, open_ledger
from tasty_oneshot.ledger.rows import AGENT_STATUSES, StatusFacts, iso, utc
from tasty_oneshot.market import MarketDay, calendar_cached, known_day
from tasty_oneshot.next_fires import fire_time_rows
from tasty_oneshot.schedule import NYC, now_nyc

log = logging.getLogger("tasty_oneshot")

FAILED = ("failed", "timeout", "interrupted", "abandoned")
CHECK_FAILS = ("failing", "missed", "not-installed")

# `systemctl list-unit-files` states of a timer that fires without an `enable`: enabled until
# reboot, no [Install] section (started by what wants it), an alias, a generated or transient
# unit. Every other state (disabled, linked, masked, indirect, bad) is installed, not enabled.
ENABLED_STATES = frozenset(
    ("enabled", "enabled-runtime", "static", "alias", "generated", "transient")
)
SYSTEM_UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
# Where cron daemons keep a user's crontab (Debian, RHEL, SUSE, BSD, macOS): its modification
# time is when `crontab` last installed it. Often readable by root alone.
CRONTAB_SPOOLS = (
    "/var/spool/cron/crontabs",
    "/var/spool/cron",
    "/var/spool/cron/tabs",
    "/var/cron/tabs",
    "/usr/lib/cron/tabs",
)


class Timer(NamedTuple):
    """What this host's timers say of one job."""

    state: str  # "enabled", "installed" (not enabled), "absent" or "unknown" (nothing to ask)
    installed_at: datetime | None = None  # when its timer unit or crontab was written here


class Crontab(NamedTuple):
    text: str
    installed_at: datetime | None


class Timers(NamedTuple):
    """The user's and the system's systemd timers and the user's crontab, as far as they
    could be asked."""

    systemd: dict[str, Timer] | None  # unit name -> its timer, or None: no systemctl to ask
    crontab: Crontab | None  # None: no crontab to ask

    def of(self, job: str) -> Timer:
        found: list[Timer] = []
        if self.systemd is not None:
            found.append(self.systemd.get(f"tasty-oneshot-{job}.timer", Timer("absent")))
        if self.crontab is not None:
            if runs_job(self.crontab.text, job):
                found.append(Timer("enabled", self.crontab.installed_at))
            else:
                found.append(Timer("absent"))
        states = [timer.state for timer in found]
        state = next((s for s in ("enabled", "installed", "absent") if s in states), "unknown")
        times = [timer.installed_at for timer in found if timer.installed_at is not None]
        return Timer(state, min(times, default=None))


def status(
    jobs: list[Job],
    days: int,
    as_json: bool,
    check: bool,
    ledger_url: str | None = None,
    now: datetime | None = None,
) -> int:
    now = now or now_nyc()
    state = paths.state_dir()
    timers = ask_timers()
    ledger = open_ledger(state, ledger_url)
    try:
        reports = [report(job, ledger, state, now, days, timers.of(job.name)) for job in jobs]
    finally:
        ledger.close()
    if as_json:
        sys.stdout.write(json.dumps(reports, indent=2) + "\n")
    else:
        write_table(reports, days)
    if check and any(item["state"] in CHECK_FAILS for item in reports):
        return EXIT_FAILED
    return EXIT_OK


def report(
    job: Job, ledger: Ledger, state: Path, now: datetime, days: int, timer: Timer
) -> dict[str, Any]:
    """One job's object of `status --json`."""
    since = now - timedelta(days=days)
    facts = ledger.status_facts(job.name, since)
    upcoming = []
    if not job.schedule.is_empty:
        cache = state / "market"
        upcoming = fire_time_rows(job, 1, now, lambda day: calendar_cached(day, cache))
    missed = missed_slots(job, facts, since, now, state / "market", timer.installed_at)
    return {
        "job": job.name,
        "schedule": job.schedule.describe(),
        "next": ({k: upcoming[0][k] for k in ("at", "utc", "will_run")} if upcoming else None),
        "last": facts.last,
        "last_ok_at": facts.last_ok_at,
        "failures_in_a_row": failures_in_a_row(facts.agent_statuses),
        "missed": missed,
        "timer": timer.state,
        "state": job_state(job, facts, missed, timer.state),
    }


def failures_in_a_row(statuses: list[str]) -> int:
    """How many of the newest runs that started the agent failed, before an ok."""
    count = 0
    for status in statuses:
        if status == "running":
            continue
        if status not in FAILED:
            break
        count += 1
    return count


def job_state(job: Job, facts: StatusFacts, missed: list[str], timer: str) -> str:
    ran = [s for s in facts.agent_statuses if s in AGENT_STATUSES]
    if ran and ran[0] == "running":
        return "running"
    finished = [s for s in ran if s != "running"]
    if finished and finished[0] != "ok":
        return "failing"
    scheduled_run = facts.first_scheduled_utc is not None
    if not job.schedule.is_empty and not scheduled_run and timer != "enabled":
        return "not-installed"
    if missed:
        return "missed"
    if finished or scheduled_run:
        return "ok"
    return "never-run"


def missed_slots(
    job: Job,
    facts: StatusFacts,
    since: datetime,
    now: datetime,
    market_cache: Path,
    installed_at: datetime | None = None,
) -> list[str]:
    """The NYC fire times since `since` the job should have run and did not (see above)."""
    schedule = job.schedule
    if not schedule.is_wall_clock or schedule.is_once:
        return []
    expected = []  # when the job was first expected to fire
    if facts.first_scheduled_utc is not None:
        # From the first scheduled run's own slot on: it may have started late in its window.
        first = datetime.fromisoformat(facts.first_scheduled_utc)
        expected.append(first - timedelta(seconds=job.max_delay))
    if installed_at is not None:
        expected.append(installed_at)
    if not expected:
        return []
    start = max(since, min(expected))
    ended = now - timedelta(seconds=job.max_delay)
    sessions: dict[date, MarketDay] = {}
    missed = []
    for fire in schedule.fire_times(start - timedelta(seconds=1)):
        if fire.astimezone(UTC) >= ended.astimezone(UTC):  # a run may still take it (<=)
            break
        if utc(fire) in facts.used_slots:
            continue
        if not job.ignore_market_hours:
            day = fire.astimezone(NYC).date()
            if day not in sessions:
                sessions[day] = known_day(day, market_cache)
            if not sessions[day].is_open(fire):
                continue
        missed.append(iso(fire) or "")
    return missed


def runs_job(crontab: str, job: str) -> bool:
    """Whether a line of the crontab (not a comment) runs the job: `run ... --job NAME` or
    `run ... --name NAME` (an ad hoc job's), not `status --job NAME`."""
    for line in crontab.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:  # `0 15 * * * # tasty-oneshot run ...`: the shell runs nothing of it
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote (cron does not care)
            words = line.split()
        if "run" not in words:
            continue
        after = words[words.index("run") + 1 :]
        pairs = pairwise(after)
        if any(flag in ("--job", "--name") and name == job for flag, name in pairs):
            return True
        if f"--job={job}" in after or f"--name={job}" in after:
            return True
    return False


def ask_timers() -> Timers:
    """This host's systemd timers (the user's and the system's) and the user's crontab,
    where they can be asked; never fails."""
    systemd: dict[str, Timer] | None = None
    if shutil.which("systemctl"):
        for scope in ("--user", "--system"):
            units = _systemd_timers(scope)
            if units is None:
                continue
            systemd = systemd or {}
            for name, timer in units.items():
                other = systemd.get(name)
                if other is None or (other.state != "enabled" and timer.state == "enabled"):
                    systemd[name] = timer
    crontab = None
    if shutil.which("crontab"):
        text = _ask(["crontab", "-l"])
        if text is not None:
            crontab = Crontab(text, _crontab_installed_at())
    return Timers(systemd, crontab)


def _systemd_timers(scope: str) -> dict[str, Timer] | None:
    """The tasty-oneshot timers systemctl lists in its scope (it reads the unit files, no
    running manager needed), each with its unit file's modification time."""
    command = ["systemctl", scope, "list-unit-files", "tasty-oneshot-*.timer", "--no-legend"]
    output = _ask(command, none_found_is_silent=True)
    if output is None:
        return None
    timers = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].endswith(".timer"):
            state = "enabled" if fields[1] in ENABLED_STATES else "installed"
            timers[fields[0]] = Timer(state, _modified(_unit_dirs(scope), fields[0]))
    return timers


def _unit_dirs(scope: str) -> list[Path]:
    """Where systemd looks for unit files of the scope, in its order (systemd.unit(5))."""
    if scope == "--system":
        return [Path(d) for d in SYSTEM_UNIT_DIRS]
    env = os.environ
    config = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    data = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local/share")
    runtime = [Path(env["XDG_RUNTIME_DIR"])] if env.get("XDG_RUNTIME_DIR") else []
    return [
        config / "systemd/user",
        Path("/etc/systemd/user"),
        *(r / "systemd/user" for r in runtime),
        Path("/run/systemd/user"),
        data / "systemd/user",
        Path("/usr/local/share/systemd/user"),
        Path("/usr/share/systemd/user"),
        Path("/usr/local/lib/systemd/user"),
        Path("/usr/lib/systemd/user"),
    ]


def _modified(directories: list[Path], name: str) -> datetime | None:
    """When the first file `name` in `directories` was written (a link: when it was made)."""
    for directory in directories:
        try:
            return datetime.fromtimestamp((directory / name).lstat().st_mtime, UTC)
        except OSError:
            continue
    return None


def _crontab_installed_at() -> datetime | None:
    try:
        user = pwd.getpwuid(os.getuid()).pw_name  # `crontab -l` lists the real user's
    except KeyError:
        return None
    for spool in CRONTAB_SPOOLS:
        try:
            return datetime.fromtimestamp(os.stat(Path(spool) / user).st_mtime, UTC)
        except OSError:  # none there, or the spool is root's alone
            continue
    return None


def _ask(command: list[str], none_found_is_silent: bool = False) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        # `crontab -l` with no crontab, and `systemctl list-unit-files PATTERN` matching no
        # unit file (since systemd 246: exit 1, not a word): nothing installed there, which
        # is an answer.
        silent = result.returncode == 1 and not (result.stdout + result.stderr).strip()
        if "no crontab" in result.stderr.lower() or (none_found_is_silent and silent):
            return ""
        return None
    return result.stdout


def write_table(reports: list[dict[str, Any]], days: int) -> None:
    rows = [("job", "state", "timer", "last run", "last ok", "fails", f"missed ({days}d)", "next")]
    for item in reports:
        last = item["last"]
        rows.append(
            (
                item["job"],
                item["state"],
                item["timer"],
                f"{_short(last['started_at'])} {last['status']}" if last else "-",
                _short(item["last_ok_at"]) if item["last_ok_at"] else "-",
                str(item["failures_in_a_row"]),
                str(len(item["missed"])),
                _next_cell(item["next"]),
            )
        )
    terminal.write_table(rows)
    for item in reports:
        for fire in item["missed"][-5:]:
            sys.stdout.write(f"{item['job']}: missed {_short(fire)}\n")


def _next_cell(upcoming: dict[str, Any] | None) -> str:
    """The next fire time, marked when the market check will skip it."""
    if upcoming is None:
        return "-"
    return _short(upcoming["at"]) + ("" if upcoming["will_run"] else " (skip: market closed)")


def _short(moment: str) -> str:
    """2026-11-30T09:30:00-05:00 -> 2026-11-30 09:30."""
    return moment[:16].replace("T", " ")
