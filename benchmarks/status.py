"""How long `tasty-oneshot status` takes for 50 jobs over a ledger of 100,000 rows.

    .venv/bin/python benchmarks/status.py [-n 5] [--jobs 50] [--rows 100000]

The ledger is filled with rows like a month of real timers leaves (runs every 5 to 60
minutes, skips in between) and `status --json --days 7` is timed in a subprocess against
`python -I -c pass`, first with the market days not yet cached (the offline calendar is
imported), then warm. Target (issue 8): well under a second. Not a test: figures depend on
the machine.
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasty_oneshot.ledger.rows import RunStart
from tasty_oneshot.ledger.sqlite import SqliteLedger

CLI = str(Path(sys.executable).parent / "tasty-oneshot")
SCHEDULES = [
    'cron: "*/5 9-15 * * 1-5"',
    "period: 1800",
    "hourly: true",
    'schedule: "9:30am"\n    daily: true',
    'schedule: "3:55pm"\n    daily: true',
]


def jobs_yaml(count: int) -> str:
    lines = ["model: test", "mcp:", "  command: /bin/true", "jobs:"]
    for i in range(count):
        lines += [f"  job-{i:03d}:", "    instructions: Check", f"    {SCHEDULES[i % 5]}"]
    return "\n".join(lines) + "\n"


def fill(state: Path, jobs: int, rows: int, now: datetime) -> None:
    """`rows` rows spread over `jobs` jobs and the last 30 days, a third of them agent runs."""
    ledger = SqliteLedger(state)
    ledger.record(RunStart("job-000", now), "skipped", "warm-up", now, 0)  # the schema
    ledger.close()
    db = sqlite3.connect(state / "ledger.sqlite3")
    batch = []
    for n in range(rows):
        job = f"job-{n % jobs:03d}"
        at = now - timedelta(minutes=(rows - n) * 30 * 24 * 60 // rows)
        slot = at.replace(second=0, microsecond=0)
        agent = n % 3 == 0
        batch.append(
            (
                job,
                "ok" if agent else "skipped",
                "the agent finished" if agent else "market closed",
                slot.isoformat(),
                slot.astimezone(UTC).isoformat(timespec="seconds"),
                int(agent),
                at.isoformat(timespec="seconds"),
                at.astimezone(UTC).isoformat(timespec="seconds"),
                at.isoformat(timespec="seconds"),
                0,
                1,
            )
        )
    db.executemany(
        "INSERT INTO runs (job, status, reason, slot, slot_utc, agent_started, started_at,"
        " started_utc, finished_at, exit_code, scheduled) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        batch,
    )
    db.commit()
    db.close()


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr.decode()}")
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rows", type=int, default=100_000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        work = Path(tmp)
        state = work / "state"
        state.mkdir(mode=0o700)
        (work / "tasty-oneshot.yaml").write_text(jobs_yaml(options.jobs))
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
        env.update(HOME=str(work), TASTY_ONESHOT_STATE_DIR=str(state), TZ="UTC")
        fill(state, options.jobs, options.rows, datetime.now(UTC))
        status = [CLI, "status", "--json", "--days", "7"]
        floor = [timed([sys.executable, "-I", "-c", "pass"], env, work) for _ in range(options.n)]
        cold = timed(status, env, work)  # the market days are not cached yet
        warm = [timed(status, env, work) for _ in range(options.n)]
        print(f"{options.jobs} jobs, {options.rows} ledger rows, status --json --days 7")
        print(f"python -I -c pass   median {statistics.median(floor):7.1f} ms")
        print(f"status, cold cache  once   {cold:7.1f} ms (imports the offline calendar)")
        median = statistics.median(warm)
        print(f"status, warm        median {median:7.1f} ms  max {max(warm):7.1f} ms")
        verdict = "met" if median < 1000 else "NOT met"
        print(f"target: well under 1 s: {verdict} ({median / statistics.median(floor):.1f}x pass)")


if __name__ == "__main__":
    main()
