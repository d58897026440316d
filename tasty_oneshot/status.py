"""`tasty-oneshot status`: every job of the jobs file at a glance, like `systemctl
list-timers` joined with the ledger, and the slots that should have run but did not.

A missed slot is a fire time in the last --days days at which the job would have run (the
market open, or hours ignored), whose window has ended (max_delay passed), after the job's
first scheduled run, with no ledger row that started the agent for it: the timer did not
fire, the host was off, or the run gave up (`busy`) or was refused (`locked`).
"""

import json
import logging
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from tasty_oneshot import paths, terminal
from tasty_oneshot.errors import EXIT_FAILED, EXIT_OK
from tasty_oneshot.jobs import Job
from tasty_oneshot.ledger import AGENT_STATUSES, Ledger, StatusFacts, iso, open_ledger, utc
from tasty_oneshot.market import MarketDay, calendar_cached, known_day
from tasty_oneshot.next_fires import fire_time_rows
from tasty_oneshot.schedule import NYC, now_nyc

log = logging.getLogger("tasty_oneshot")

FAILED = ("failed", "timeout", "interrupted", "abandoned")
CHECK_FAILS = ("failing", "missed")


class Timers(NamedTuple):
    """What the system's timers say of each job: "enabled", "installed", "absent" or
    "unknown" (nothing could be asked)."""

    systemd: dict[str, str] | None  # unit name -> state, or None: no systemctl to ask
    crontab: str | None  # the user's crontab text, or None: no crontab to ask

    def of(self, job: str) -> str:
        states = []
        if self.systemd is not None:
            states.append(self.systemd.get(f"tasty-oneshot-{job}.timer", "absent"))
        if self.crontab is not None:
            lines = [f"{line} " for line in self.crontab.splitlines() if not line.startswith("#")]
            names = (f"--job {job} ", f"--name {job} ")
            mentioned = any(name in line for line in lines for name in names)
            states.append("enabled" if mentioned else "absent")
        for state in ("enabled", "installed"):
            if state in states:
                return state
        return "absent" if states else "unknown"


def status(
    jobs: list[Job], days: int, as_json: bool, check: bool, ledger_url: str | None = None
) -> int:
    now = now_nyc()
    state = paths.state_dir()
    ledger = open_ledger(state, ledger_url)
    try:
        reports = [report(job, ledger, state, now, days) for job in jobs]
    finally:
        ledger.close()
    timers = ask_timers()
    for item in reports:
        item["timer"] = timers.of(item["job"])
    if as_json:
        sys.stdout.write(json.dumps(reports, indent=2) + "\n")
    else:
        write_table(reports, days)
    if check and any(item["state"] in CHECK_FAILS for item in reports):
        return EXIT_FAILED
    return EXIT_OK


def report(job: Job, ledger: Ledger, state: Path, now: datetime, days: int) -> dict[str, Any]:
    """One job's object of `status --json`."""
    since = now - timedelta(days=days)
    facts = ledger.status_facts(job.name, since)
    upcoming = []
    if not job.schedule.is_empty:
        cache = state / "market"
        upcoming = fire_time_rows(job, 1, now, lambda day: calendar_cached(day, cache))
    missed = missed_slots(job, facts, since, now, state / "market")
    return {
        "job": job.name,
        "schedule": job.schedule.describe(),
        "next": ({k: upcoming[0][k] for k in ("at", "utc", "will_run")} if upcoming else None),
        "last": facts.last,
        "last_ok_at": facts.last_ok_at,
        "failures_in_a_row": failures_in_a_row(facts.agent_statuses),
        "missed": missed,
        "state": job_state(facts, missed),
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


def job_state(facts: StatusFacts, missed: list[str]) -> str:
    ran = [s for s in facts.agent_statuses if s in AGENT_STATUSES]
    if ran and ran[0] == "running":
        return "running"
    finished = [s for s in ran if s != "running"]
    if finished and finished[0] != "ok":
        return "failing"
    if missed:
        return "missed"
    if facts.first_scheduled_utc is None:
        return "never-run"
    return "ok"


def missed_slots(
    job: Job, facts: StatusFacts, since: datetime, now: datetime, market_cache: Path
) -> list[str]:
    """The NYC fire times since `since` the job should have run and did not (see above)."""
    schedule = job.schedule
    if not schedule.is_wall_clock or schedule.is_once or facts.first_scheduled_utc is None:
        return []
    first = datetime.fromisoformat(facts.first_scheduled_utc)
    # Slots from the first scheduled run's own slot on: it may have started late in its window.
    start = max(since, first - timedelta(seconds=job.max_delay))
    ended = now - timedelta(seconds=job.max_delay)
    sessions: dict[date, MarketDay] = {}
    missed = []
    for fire in schedule.fire_times(start - timedelta(seconds=1)):
        if fire.astimezone(UTC) > ended.astimezone(UTC):
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


def ask_timers() -> Timers:
    """The user's systemd timers and crontab, where they can be asked; never fails."""
    systemd = None
    if shutil.which("systemctl"):
        output = _ask(
            ["systemctl", "--user", "list-unit-files", "tasty-oneshot-*.timer", "--no-legend"]
        )
        if output is not None:
            systemd = {}
            for line in output.splitlines():
                fields = line.split()
                if len(fields) >= 2:
                    enabled = fields[1] in ("enabled", "enabled-runtime", "static")
                    systemd[fields[0]] = "enabled" if enabled else "installed"
    crontab = _ask(["crontab", "-l"]) if shutil.which("crontab") else None
    return Timers(systemd, crontab)


def _ask(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        # `crontab -l` with no crontab: nothing installed there, which is an answer.
        return "" if "no crontab" in result.stderr.lower() else None
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
                _short(item["next"]["at"]) if item["next"] else "-",
            )
        )
    terminal.write_table(rows)
    for item in reports:
        for fire in item["missed"][-5:]:
            sys.stdout.write(f"{item['job']}: missed {_short(fire)}\n")


def _short(moment: str) -> str:
    """2026-11-30T09:30:00-05:00 -> 2026-11-30 09:30."""
    return moment[:16].replace("T", " ")
