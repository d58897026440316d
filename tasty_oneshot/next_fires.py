"""`tasty-oneshot next`: preview a job's next fire times, judged with the offline calendar."""

import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from tasty_oneshot.errors import EXIT_OK, UsageError
from tasty_oneshot.jobs import Job
from tasty_oneshot.market import MarketDay, calendar_day
from tasty_oneshot.schedule import NYC, now_nyc


def fire_time_rows(
    job: Job,
    count: int,
    after: datetime | None = None,
    session_of: Callable[[date], MarketDay] = calendar_day,
) -> list[dict[str, Any]]:
    """The next `count` fire times after `after` (now), each with whether the market is open
    then by the offline calendar (`session_of` may read it through the day cache)."""
    if job.schedule.is_empty:
        raise UsageError(f"job {job.name} has no schedule: give schedule flags or keys")
    rows = []
    for fire in job.schedule.fire_times(after or now_nyc()):
        try:
            market_open = session_of(fire.astimezone(NYC).date()).is_open(fire)
        except ValueError as exc:  # exchange_calendars' DateOutOfBounds: about a year ahead
            raise UsageError(
                f"fire time {fire.isoformat()} is beyond the offline NYSE calendar "
                f"({str(exc).splitlines()[0]}); ask for fewer with --count"
            ) from None
        rows.append(
            {
                "at": fire.astimezone(NYC).isoformat(),
                "utc": fire.astimezone(UTC).isoformat(),
                "market_open": market_open,
                "will_run": market_open or job.ignore_market_hours,
            }
        )
        if len(rows) == count:
            break
    return rows


def show_next(jobs: list[Job], count: int, as_json: bool) -> int:
    """Each job's next `count` fire times. With --json, one job gives the contract's array;
    several give one array in time order, each row naming its job."""
    per_job = [(job, fire_time_rows(job, count)) for job in jobs]
    if as_json:
        if len(jobs) == 1:
            rows = per_job[0][1]
        else:
            rows = sorted(
                ({"job": job.name, **row} for job, job_rows in per_job for row in job_rows),
                key=lambda row: (row["utc"], row["job"]),
            )
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_OK
    out = sys.stdout
    for job, rows in per_job:
        out.write(f"{job.name}: {job.schedule.describe()}\n")
        if job.schedule.is_monotonic:
            out.write(
                "  (a monotonic period: times below count from now; the timer counts from "
                "when it starts)\n"
            )
        for row in rows:
            at = row["at"].replace("T", " ")
            state = "runs" if row["will_run"] else "skip: market closed"
            out.write(f"  {at}  ({row['utc'].replace('T', ' ')[:-6]} UTC)  {state}\n")
    return EXIT_OK
