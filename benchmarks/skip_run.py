"""How much a run costs when it does not run the agent: a skip, and a lock refusal.

    .venv/bin/python benchmarks/skip_run.py [-n 15] [--at "2026-11-26 15:00:00"]

Prints wall time (median, p90), CPU time (user + system, median) and peak RSS per case, each
child measured on its own with wait4(2), the cases taken in turn round after round (drift on a
shared machine weighs on all alike), against `python -I -c pass` as the floor (under faketime
too, for the cases that run under it: the ratios compare like with like). Also checks, with
`python -X importtime`, that a skipped run imports none of the heavy packages, and lists what
it does import.

Targets (from the issues): skip median <= 150 ms, <= 40 MB peak RSS and <= 4.5x the floor's CPU
time; lock refusal <= 150 ms.
The skip is measured with the SQLite ledger, and with a PostgreSQL ledger ($TASTY_ONESHOT_LEDGER)
on a port nobody listens on: a skip decided from the cache must not connect (it keeps its row
for the next invocation that can), so it meets the same targets and imports no psycopg.
Not a test: figures depend on the machine. Exits 1 if a heavy import is found.
"""

import argparse
import fcntl
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

PYTHON = sys.executable
CLI = str(Path(sys.executable).parent / "tasty-oneshot")
FAKETIME = shutil.which("faketime")
JOB = "bench"
HEAVY = (
    "pydantic_ai",
    "mcp",
    "fastmcp",
    "tastytrade",
    "pandas",
    "exchange_calendars",
    "pydantic",
    "typer",
    "numpy",
    "httpx",
    "httpx2",
    "openai",
    "anthropic",
    "psycopg",
    "psycopg_binary",
)
NOTABLE = (
    "asyncio",
    "ssl",
    "socket",
    "subprocess",
    "yaml",
    "logging",
    "argparse",
    "dataclasses",
    "inspect",
    "typing",
    "pathlib",
    "zoneinfo",
    "hashlib",
    "sqlite3",
    "json",
    "shutil",
)
TARGET_MS = 150
TARGET_MB = 40
TARGET_CPU_RATIO = 4.5  # issue 17: a skip's CPU time, over python -I -c pass's


def measure(
    argv: list[str], env: dict[str, str], cwd: Path
) -> tuple[float, float, int, str, float]:
    """Run argv once: (wall seconds, peak RSS MB, exit code, stderr, CPU seconds).

    Peak RSS is the largest of the child and its descendants; CPU is the child's user plus
    system time, its descendants' included (wait4's rusage).
    """
    err_path = cwd / ".stderr"
    with open(os.devnull, "wb") as devnull, open(err_path, "wb") as err:
        actions = [
            (os.POSIX_SPAWN_DUP2, devnull.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
        ]
        old = os.getcwd()
        os.chdir(cwd)
        try:
            start = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
            _, status, usage = os.wait4(pid, 0)
            wall = time.perf_counter() - start
        finally:
            os.chdir(old)
    cpu = usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, code, err_path.read_text(), cpu


class Case:
    """One command measured `runs` times, in rounds with the others (see bench_all)."""

    def __init__(self, name, argv, env, expect=0, check=None):
        self.name, self.argv, self.env, self.expect, self.check = name, argv, env, expect, check
        self.walls: list[float] = []
        self.peaks: list[float] = []
        self.cpus: list[float] = []


def bench_all(cases: list[Case], cwd: Path, runs: int, results) -> None:
    """Each case once per round, round after round: a machine that gets busier or quieter
    meanwhile weighs on every case alike, so the ratios to the floor stay fair."""
    for round_ in range(runs):
        for case in cases:
            wall, peak, code, stderr, cpu = measure(case.argv, case.env, cwd)
            if code != case.expect:
                sys.exit(f"{case.name}: exit {code}, expected {case.expect}\n{stderr}")
            if case.check is not None and round_ == 0:
                case.check(stderr)
            case.walls.append(wall * 1000)
            case.peaks.append(peak)
            case.cpus.append(cpu * 1000)
    for case in cases:
        walls = sorted(case.walls)
        p90 = walls[min(len(walls) - 1, round(0.9 * (len(walls) - 1)))]
        median, cpu = statistics.median(walls), statistics.median(case.cpus)
        results.append((case.name, median, p90, max(case.peaks), cpu))


def imported(argv_tail: list[str], env: dict[str, str], cwd: Path, wrap: list[str]):
    """Run the CLI under -X importtime: ([(cumulative us, self us, module)], stderr)."""
    argv = [*wrap, PYTHON, "-X", "importtime", CLI, *argv_tail]
    _, _, code, stderr, _ = measure(argv, env, cwd)
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative, module = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative), int(self_us), module.rstrip()[1:]))  # keeps the indent
    return code, rows, stderr


def top_level(module: str) -> str:
    return module.strip().split(".")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=15)
    parser.add_argument(
        "--at",
        default="2026-11-26 15:00:00",
        help="UTC time the skip runs at, through faketime (default: Thanksgiving 2026, 10:00 NYC)",
    )
    options = parser.parse_args()
    if not os.path.exists(CLI):
        sys.exit(f"{CLI} not found: run this with the venv's python (.venv/bin/python)")
    runs = options.runs

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average before: {load} on {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="tasty-oneshot-bench-"))
    try:
        return run_benchmarks(root, runs, options.at)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_benchmarks(root: Path, runs: int, at: str) -> int:
    work, state, home = root / "work", root / "state", root / "home"
    for d in (work, home):
        d.mkdir()
    config = work / "jobs.yaml"
    config.write_text(
        "model: test\n"
        f"mcp:\n  command: {PYTHON}\n  args: ['-c', 'pass']\n"
        f"jobs:\n  {JOB}:\n    instructions: Check my positions\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": "UTC",
        "TASTY_ONESHOT_STATE_DIR": str(state),
        "XDG_CONFIG_HOME": str(home / ".config"),
    }
    run = [CLI, "run", "--job", JOB, "--config", str(config)]
    results: list[tuple[str, float, float, float, float]] = []
    notes: list[str] = []

    # The skip: pinned to a closed time with faketime when it is installed, else the real clock
    # (which then must find the market closed: run it on a night or a weekend).
    # A shell first removes what a killed faketime of the same pid left in /dev/shm (else
    # the wrapper fails with "sem_open: File exists"), then becomes the wrapper.
    clean = 'rm -f /dev/shm/sem.faketime_sem_$$ /dev/shm/faketime_shm_$$; exec "$0" "$@"'
    wrap = ["/bin/sh", "-c", clean, FAKETIME, at] if FAKETIME else []
    if not FAKETIME:
        notes.append("faketime not installed: the skip uses the real clock")
    clock = f"faketime {at!r} UTC" if FAKETIME else "real clock"

    warm = measure([*wrap, *run], env, work)
    if warm[2] != 0 or "market closed" not in warm[3]:
        sys.exit(f"the warm-up run did not skip as closed at {clock}:\n{warm[3]}")
    cached = sorted(p.name for p in (state / "market").iterdir())
    notes.append(f"market cache after warm-up: {', '.join(cached)}")

    # With credentials too: the broker's session for the day, as the broker would have said it,
    # cached beforehand; then no request and no SDK import. (Dummy credentials; a proxy port
    # nobody listens on stops any request from leaving the machine if the cache were missed.)
    creds_env = dict(
        env,
        TASTYTRADE_CLIENT_SECRET="dummy-secret",
        TASTYTRADE_REFRESH_TOKEN="dummy-token",
        HTTPS_PROXY="http://127.0.0.1:9",
        ALL_PROXY="http://127.0.0.1:9",
    )
    day = warm_broker_cache(state / "market", at if FAKETIME else None)
    notes.append(f"broker cache written for {day} (no regular session)")

    cases = [Case("python -I -c pass", [PYTHON, "-I", "-c", "pass"], env)]
    if FAKETIME:
        argv = [*wrap, PYTHON, "-I", "-c", "pass"]  # the same wrapper as the skips under it
        cases.append(Case("faketime + python -I -c pass", argv, env))

    def must_skip(stderr: str) -> None:
        if "market closed" not in stderr or "skipped" not in stderr:
            sys.exit(f"the benchmarked run did not skip:\n{stderr}")

    def must_skip_by_broker(stderr: str) -> None:
        must_skip(stderr)
        if "decided by broker" not in stderr:
            sys.exit(f"the cached broker session did not decide:\n{stderr}")

    clocked = "faketime" if FAKETIME else "real clock"
    cases.append(Case(f"skip, calendar cached ({clocked})", [*wrap, *run], env, 0, must_skip))
    name = f"skip, broker cached ({clocked})"
    cases.append(Case(name, [*wrap, *run], creds_env, 0, must_skip_by_broker))

    # With a PostgreSQL ledger nobody answers: decided from the cache, the skip never connects.
    # Its own state directory (the same cached day), since each skip keeps a row in its spool.
    pg_state = root / "state-pg"
    shutil.copytree(state, pg_state, ignore=shutil.ignore_patterns("ledger.sqlite3*", "locks"))
    pg_env = dict(env, TASTY_ONESHOT_STATE_DIR=str(pg_state), TASTY_ONESHOT_LEDGER=pg_url())

    def must_skip_unconnected(stderr: str) -> None:
        must_skip(stderr)
        if "ERROR" in stderr or "PostgreSQL" in stderr:
            sys.exit(f"the skip tried the PostgreSQL ledger:\n{stderr}")

    name = f"skip, PostgreSQL ledger down ({clocked})"
    cases.append(Case(name, [*wrap, *run], pg_env, 0, must_skip_unconnected))

    # Without faketime, if the market happens to be closed now (no LD_PRELOAD overhead).
    if FAKETIME:
        probe = measure(run, env, work)
        if probe[2] == 0 and "market closed" in probe[3]:
            cases.append(Case("skip, calendar cached (real clock)", run, env, 0, must_skip))
        else:
            notes.append("market open now: no real-clock skip case")

    # The lock refusal: hold the job's lock as a running invocation would (the skips above
    # are decided from the cached day before the lock, so they never meet it).
    lock_path = state / "locks" / f"{JOB}.lock"
    lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Past the market (the cached day is checked before the lock): straight to it.
        locked = [*run, "--ignore-market-hours"]
        cases.append(Case("lock refusal (exit 75)", locked, env, 75))
        bench_all(cases, work, runs, results)
    finally:
        os.close(fd)
    kept = len(list((pg_state / "spool").glob("row-*.json")))
    notes.append(f"PostgreSQL ledger down: {kept} skip rows kept in its spool, for later")

    print_table(results, runs)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average after: {load} on {os.cpu_count()} CPUs (other work inflates the times)")

    # What a skip imports.
    code, rows, stderr = imported(run[1:], env, work, wrap)
    if code != 0 or "market closed" not in stderr:
        sys.exit(f"the -X importtime run did not skip:\n{stderr}")
    _, creds_rows, _ = imported(run[1:], creds_env, work, wrap)
    pg_code, pg_rows, pg_stderr = imported(run[1:], pg_env, work, wrap)
    if pg_code != 0 or "market closed" not in pg_stderr:
        sys.exit(f"the -X importtime run with the PostgreSQL ledger did not skip:\n{pg_stderr}")
    status = 0
    for label, found_rows in (
        ("skip", rows),
        ("skip with credentials", creds_rows),
        ("skip with a PostgreSQL ledger", pg_rows),
    ):
        modules = {top_level(m) for _, _, m in found_rows}
        heavy = sorted(modules & set(HEAVY))
        if heavy:
            status = 1
            print(f"\nFAIL: a {label} imported {', '.join(heavy)}")
        else:
            print(f"\nOK: a {label} imports none of {', '.join(HEAVY)}")
    total_self = sum(s for _, s, _ in rows) / 1000
    roots = {}
    for cumulative, _, module in rows:
        if not module.startswith(" "):  # a top-level import
            roots[module] = roots.get(module, 0) + cumulative
    print(
        f"imports in a skip: {len(rows)} modules, {total_self:.1f} ms in all (-X importtime, "
        "itself slows imports down); the costliest top-level imports:"
    )
    for module, cumulative in sorted(roots.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {cumulative / 1000:7.1f} ms  {module}")
    ours = sorted((c, m.strip()) for c, _, m in rows if m.strip().startswith("tasty_oneshot"))[::-1]
    print(
        "tasty_oneshot modules (cumulative): " + ", ".join(f"{m} {c / 1000:.1f}" for c, m in ours)
    )
    notable = {m.strip(): c for c, _, m in rows if m.strip() in NOTABLE}
    print(
        "notable imports (cumulative ms, counting only what was not already imported): "
        + ", ".join(f"{m} {c / 1000:.1f}" for m, c in sorted(notable.items(), key=lambda x: -x[1]))
    )
    for note in notes:
        print(f"note: {note}")
    return status


def pg_url() -> str:
    """A PostgreSQL URL on a port of 127.0.0.1 nobody listens on (a connection would fail)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://tasty:not-a-password@127.0.0.1:{port}/tasty"


def warm_broker_cache(cache_dir: Path, at: str | None) -> date:
    """Cache the broker's answer for the benchmark's day, in the format market.py writes."""
    from tasty_oneshot import market
    from tasty_oneshot.schedule import NYC

    moment = datetime.fromisoformat(at).replace(tzinfo=UTC) if at else datetime.now(UTC)
    day = moment.astimezone(NYC).date()
    market._write_cache(cache_dir, market.MarketDay(day, None, None, market.BROKER))
    return day


def print_table(results, runs: int) -> None:
    """The table; "x pass" compares each case with the floor run the same way (faketime or not)."""
    floors = {
        "faketime" in name: (wall, cpu) for name, wall, _, _, cpu in results if "pass" in name
    }
    print(f"\n{runs} runs each; peak RSS is the largest of the child and its descendants;")
    print("x pass: the case's median over the median of python -I -c pass run the same way\n")
    head = f"{'case':42} {'median ms':>9} {'p90 ms':>7} {'CPU ms':>7} {'peak MB':>7}"
    print(f"{head} {'x pass':>6} {'x pass (CPU)':>12}  target")
    for name, median, p90, peak, cpu in results:
        floor_wall, floor_cpu = floors.get("faketime" in name, floors[False])
        ratio, cpu_ratio = median / floor_wall, cpu / floor_cpu
        target = ""
        if name.startswith("skip"):
            ok = median <= TARGET_MS and peak <= TARGET_MB and cpu_ratio <= TARGET_CPU_RATIO
            target = (
                f"<= {TARGET_MS} ms, <= {TARGET_MB} MB, <= {TARGET_CPU_RATIO}x CPU: "
                f"{'met' if ok else 'MISSED'}"
            )
        elif name.startswith("lock"):
            target = f"<= {TARGET_MS} ms: {'met' if median <= TARGET_MS else 'MISSED'}"
        row = f"{name:42} {median:9.1f} {p90:7.1f} {cpu:7.1f} {peak:7.1f} {ratio:6.2f}"
        print(f"{row} {cpu_ratio:12.2f}  {target}")


if __name__ == "__main__":
    sys.exit(main())
