"""What the ledger itself costs a run that starts the agent: SQLite against PostgreSQL.

    .venv/bin/python benchmarks/ledger_overhead.py [-n 50]

Each run does what the runner asks of the ledger around the agent, through the real API:
open_ledger, the job's lock (taken and released), claim (a RunStart, its own slot), finish
(a Finish with an output of a few KiB), close. The median and p90 of N runs are printed for
each ledger, step by step and in all, side by side with the ratio, with the number of SQL
statements a run sends to PostgreSQL (each a round trip: on a network, add that many times
its round-trip time, plus the connection's own).

PostgreSQL is a throwaway local cluster (tests/postgres_server.py) over TCP on 127.0.0.1,
started with its defaults (fsync and synchronous commit on, unlike the tests' cluster), so that
each commit waits for the disk as SQLite's does. Not a test: figures depend on the machine.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from tasty_oneshot.ledger import open_ledger
from tasty_oneshot.ledger.rows import Finish, RunStart, Usage, host_name
from tasty_oneshot.schedule import now_nyc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import Cluster

STEPS = ("open", "lock", "claim", "finish", "close")
OUTPUT = "All positions within limits; no action needed.\n" * 80  # about 4 KiB
T = TypeVar("T")


def one_run(state: Path, url: str | None, job: str, index: int) -> dict[str, float]:
    """The ledger's part of one run; seconds per step."""
    took: dict[str, float] = {}

    def timed(step: str, action: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = action()
        took[step] = took.get(step, 0.0) + time.perf_counter() - start
        return result

    started_at = now_nyc()
    ledger = timed("open", lambda: open_ledger(state, url))
    lock = ledger.job_lock(job)
    timed("lock", lock.acquire)
    start = RunStart(
        job=job,
        started_at=started_at,
        slot=started_at.replace(microsecond=0) + timedelta(minutes=index),
        model="test",
        trading="read-only",
        scheduled=True,
        pid=os.getpid(),
        host=host_name(),
    )
    run_id = timed("claim", lambda: ledger.claim(start))
    if run_id is None:
        sys.exit(f"run {index}: the slot was already claimed")
    finish = Finish(
        status="ok",
        reason="the agent finished",
        finished_at=now_nyc(),
        exit_code=0,
        output=OUTPUT,
        usage=Usage(2, 1500, 300, 6),
        cost=0.0123,
    )
    if not timed("finish", lambda: ledger.finish(run_id, finish)):
        sys.exit(f"run {index}: finish found no running row")
    timed("lock", lock.release)
    timed("close", ledger.close)
    took["run"] = sum(took.values())
    return took


def measure(state: Path, url: str | None, runs: int) -> dict[str, list[float]]:
    """Per step, the milliseconds of each run (after one untimed run that creates the
    schema)."""
    one_run(state, url, "warm-up", 0)
    timings: dict[str, list[float]] = {step: [] for step in (*STEPS, "run")}
    for index in range(runs):
        for step, seconds in one_run(state, url, "bench", index).items():
            timings[step].append(seconds * 1000)
    return timings


def count_statements(state: Path, url: str) -> int:
    """How many statements one run sends to PostgreSQL (the connection's setup included)."""
    import psycopg

    sent = 0
    original = psycopg.Connection.execute

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal sent
        sent += 1
        return original(self, *args, **kwargs)

    psycopg.Connection.execute = counting  # type: ignore[method-assign]
    try:
        one_run(state, url, "count", 10_000)
    finally:
        psycopg.Connection.execute = original  # type: ignore[method-assign]
    return sent


class DurableCluster(Cluster):
    """The tests' cluster, started as a real server runs: fsync and synchronous commit on."""

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-t", "60",
                  "-l", str(self.base / "log"), "start")  # fmt: skip


def durability(state: Path, url: str) -> tuple[str, str]:
    """How each ledger commits: SQLite's journal mode and synchronous level, PostgreSQL's
    fsync and synchronous_commit."""
    import psycopg

    from tasty_oneshot.ledger.sqlite import SqliteLedger

    ledger = SqliteLedger(state)
    mode = ledger.db.execute("PRAGMA journal_mode").fetchone()[0]
    level = ("off", "normal", "full", "extra")[
        ledger.db.execute("PRAGMA synchronous").fetchone()[0]
    ]
    ledger.close()
    with psycopg.connect(url, autocommit=True) as db:
        shown = [
            db.execute(f"SHOW {name}").fetchall()[0][0] for name in ("fsync", "synchronous_commit")
        ]
    return (
        f"journal_mode {mode}, synchronous {level}",
        f"fsync {shown[0]}, synchronous_commit {shown[1]}",
    )


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=50)
    runs = parser.parse_args().runs
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load} on {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="tasty-oneshot-ledger-bench-"))
    cluster = DurableCluster()
    try:
        url = cluster.new_database()
        sqlite_state, pg_state = root / "sqlite", root / "pg"
        for state in (sqlite_state, pg_state):
            state.mkdir(mode=0o700)
        settings = durability(sqlite_state, url)
        sqlite = measure(sqlite_state, None, runs)
        pg = measure(pg_state, url, runs)
        statements = count_statements(pg_state, url)
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{runs} runs each, milliseconds (median, p90); the lock is taken and released;")
    print(f"SQLite ({settings[0]}) in {root.parent}; PostgreSQL ({settings[1]})\n")
    print(f"{'':8} {'SQLite':^15}   {'PostgreSQL':^15}   {'PostgreSQL /':>12}")
    print(f"{'step':8} {'median':>7} {'p90':>7}   {'median':>7} {'p90':>7}   {'SQLite':>12}")
    for step in (*STEPS, "run"):
        a, b = statistics.median(sqlite[step]), statistics.median(pg[step])
        ratio = f"{b / a:11.1f}x" if a > 0 else f"{'-':>12}"
        cells = f"{a:7.2f} {p90(sqlite[step]):7.2f}   {b:7.2f} {p90(pg[step]):7.2f}"
        print(f"{step:8} {cells}   {ratio}")
    print(
        f"\nPostgreSQL connects at the lock; a run sends {statements} statements (session"
        " settings, schema check, lock, claim, finish, unlock), each a round trip, besides"
        " the connection's own"
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average after: {load} on {os.cpu_count()} CPUs (other work inflates the times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
