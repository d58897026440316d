"""Many jobs fired at once, with and without `max_parallel`; and how soon a run's first model
request goes out (issue 10).

    .venv/bin/python benchmarks/many_at_once.py [--jobs 10] [--cap 2] [-n 5] [--rounds 1]

Part 1: --jobs `tasty-oneshot run --job NAME --ignore-market-hours` started together, every
job's MCP server the fake tasty-agent that imports the real one first (so it costs what the
real server costs to start), the model the OpenAI stub answering at once. Once without a cap,
once with `max_parallel: CAP` in the jobs file, and one run alone, in this same run. The
summed VmRSS of the CLIs and all their descendants (the MCP servers) is sampled every 20 ms
from /proc; shared pages count once per process, as RSS does. Each run's wait comes from its
"got place N after waiting X s" log line (0 when it never waited).
Target: with the cap, peak sum <= CAP x one run's peak x 1.10.

Part 2: from process start (wall clock, just before the spawn) to the stub's receipt of the
first POST, median of -n: (a) the CLI (the MCP server spawned, then pydantic-ai imported in a
thread meanwhile); (b) a bare pydantic-ai script in the old, sequential order (imports, then
the MCP server started and initialized, then the agent run); (c) each side alone, in fresh
processes: the pydantic-ai imports, and the fake server from spawn to its answer to MCP
`initialize`. Target: (a) <= 1.10 x the slower side of (c). Then where (a)'s time goes: the
CLI run again through a wrapper that timestamps its steps (nothing in tasty_oneshot changed).

Not a test: figures depend on the machine.
"""

import argparse
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

PYTHON = sys.executable
CLI = str(Path(sys.executable).parent / "tasty-oneshot")
TESTS = Path(__file__).resolve().parent.parent / "tests"
FAKE_SERVER = TESTS / "fake_tasty_agent.py"
STUB = TESTS / "openai_stub.py"
SAMPLE = 0.020  # seconds between RSS samples
WAITED = re.compile(r"got place (\d+) after waiting ([\d.]+)s")
TARGET_RATIO = 1.10
PYDANTIC_AI_IMPORTS = "import pydantic_ai, pydantic_ai.mcp, pydantic_ai.models.openai"

# (b): today's old order, all in one line of work: imports, server, agent.
SEQUENTIAL = """\
import asyncio, sys
import pydantic_ai, pydantic_ai.mcp, pydantic_ai.models
from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset

async def main():
    agent_model = pydantic_ai.models.infer_model("openai-chat:stub")  # imports the provider
    toolset = MCPToolset(StdioTransport(command=sys.argv[1], args=sys.argv[2:]))
    async with toolset:  # the server is spawned and answers initialize
        agent = Agent(agent_model, toolsets=[toolset])
        result = await agent.run("Check my positions")
    print(result.output)

asyncio.run(main())
"""

# The CLI with its steps timestamped: wraps runner and agent functions, then runs the CLI.
STEPS = """\
import json, os, sys, time
marks = {}
def mark(name):
    marks.setdefault(name, time.time())
import tasty_oneshot.cli as cli
import tasty_oneshot.runner as runner
import tasty_oneshot.agent_phase as agent_phase
import tasty_oneshot.agent as agent
mark("CLI and runner imported")
start_server, import_agent = agent_phase._start_server, agent_phase._import_agent
resolve_model, run_agent = agent.resolve_model, agent.run_agent
def _start_server(run):
    mark("server spawn begins")
    server = start_server(run)
    mark("server spawned")
    return server
def _import_agent():
    module = import_agent()
    mark("pydantic-ai imported (thread)")
    return module
def _resolve_model(job):
    before = set(sys.modules)
    mark("model resolution begins (main thread)")
    model = resolve_model(job)
    mark("model resolved")
    new = sorted(set(sys.modules) - before)
    marks["resolve imported"] = [len(new), sorted({m.split(".")[0] for m in new})]
    return model
async def _run_agent(*args, **kwargs):
    mark("agent run begins")
    return await run_agent(*args, **kwargs)
agent_phase._start_server, agent_phase._import_agent = _start_server, _import_agent
agent.resolve_model, agent.run_agent = _resolve_model, _run_agent
try:
    cli.main(sys.argv[1:])
finally:
    with open(os.environ["BENCH_MARKS"], "w") as f:
        json.dump(marks, f)
"""


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the process trees --------------------------------------------------------------------


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    return parents


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie


def _is_server(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return FAKE_SERVER.name.encode() in f.read()
    except OSError:
        return False


def _is_waiting(pid: int) -> bool:
    """Whether the run holds a ticket in STATE/places/queue: it waits for a place."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if "/places/queue/" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sample(NamedTuple):
    """One look at the runs: RSS summed by what each run was doing."""

    total_kb: int = 0
    running: int = 0  # CLIs with an MCP server (counted with their servers)
    running_kb: int = 0
    waiting: int = 0  # CLIs holding a ticket in STATE/places/queue
    waiting_kb: int = 0
    other: int = 0  # the rest: starting up, or finishing after their server stopped
    other_kb: int = 0
    servers: int = 0
    heavy: int = 0  # CLIs over HEAVY_KB of RSS: pydantic-ai imported


HEAVY_KB = 60 * 1024  # a waiting CLI has ~26 MB; with pydantic-ai imported, over 85 MB


def sample(roots: set[int]) -> Sample:
    """The summed RSS of the roots and all their descendants, by what each root was doing."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    counts = dict.fromkeys(Sample._fields, 0)
    for root in roots:
        cli = _rss_kb(root)
        if not cli:
            continue  # exited
        tree, has_server = cli, False
        stack = list(children.get(root, ()))
        while stack:
            pid = stack.pop()
            stack += children.get(pid, ())
            rss = _rss_kb(pid)
            if rss and _is_server(pid):
                counts["servers"] += 1
                has_server = True
            tree += rss
        kind = "running" if has_server else "waiting" if _is_waiting(root) else "other"
        counts[kind] += 1
        counts[f"{kind}_kb"] += tree
        counts["total_kb"] += tree
        counts["heavy"] += cli > HEAVY_KB
    return Sample(**counts)


class Fleet(NamedTuple):
    peak: Sample
    most_servers: int
    most_heavy: int
    last_finished: float
    waits: list[float]
    busy: int


def fire(names: list[str], config: Path, env: dict[str, str], cwd: Path, logs: Path) -> Fleet:
    """Start one run per name at the same instant; sample their trees until the last exits."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, errs = [], []
    started = time.monotonic()
    for name in names:
        err = open(logs / f"{name}.stderr", "w+b")  # noqa: SIM115 (closed below)
        errs.append(err)
        argv = [CLI, "run", "--job", name, "--ignore-market-hours", "--config", str(config)]
        procs.append(
            subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        )
    roots = {p.pid for p in procs}
    peak, most_servers, most_heavy = Sample(), 0, 0
    while True:
        now = sample(roots)
        if now.total_kb > peak.total_kb:
            peak = now
        most_servers = max(most_servers, now.servers)
        most_heavy = max(most_heavy, now.heavy)
        if all(p.poll() is not None for p in procs):
            break
        time.sleep(max(0.0, SAMPLE - (time.monotonic() - started) % SAMPLE))
    last = time.monotonic() - started
    waits, busy = [], 0
    for name, proc, err in zip(names, procs, errs, strict=True):
        err.seek(0)
        text = err.read().decode(errors="replace")
        err.close()
        if "busy:" in text:
            busy += 1
        elif proc.returncode != 0:
            sys.exit(f"{name}: exit {proc.returncode}\n{text}")
        found = WAITED.search(text)
        waits.append(float(found.group(2)) if found else 0.0)
    return Fleet(peak, most_servers, most_heavy, last, waits, busy)


def one_waiting(config: Path, env: dict[str, str], cwd: Path, cap: int) -> tuple[int, int]:
    """(RSS kB, PSS kB) of a run waiting for a place: every place held here, one run started."""
    directory = Path(env["TASTY_ONESHOT_STATE_DIR"]) / "places"
    directory.mkdir(mode=0o700, parents=True)
    directory.parent.chmod(0o700)
    held = []
    for index in range(cap):
        fd = os.open(directory / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    argv = [CLI, "run", "--job", "job-0", "--ignore-market-hours", "--config", str(config)]
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while not _is_waiting(proc.pid):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the run did not wait for a place")
            time.sleep(0.02)
        time.sleep(0.5)  # settled into its wait
        return _rss_kb(proc.pid), _pss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        for fd in held:
            os.close(fd)


# --- the model stub -----------------------------------------------------------------------


class Stub:
    """tests/openai_stub.py answering "ok" at once; its requests, with their arrival times."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir()
        self.proc = subprocess.Popen([PYTHON, str(STUB), str(directory), "answer", "ok"])
        deadline = time.monotonic() + 15
        while not (directory / "port").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("the OpenAI stub did not start")
            time.sleep(0.02)
        self.port = int((directory / "port").read_text())

    def forget(self) -> None:
        (self.dir / "requests.jsonl").unlink(missing_ok=True)

    def first_arrival(self) -> float:
        with open(self.dir / "requests.jsonl", "rb") as f:
            return json.loads(f.readline())["arrived"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- part 1 -------------------------------------------------------------------------------


def jobs_yaml(count: int, record: Path, cap: int | None) -> str:
    args = [str(FAKE_SERVER), str(record), "--weigh-like-tasty-agent"]
    lines = ["model: openai-chat:stub", "mcp:", f"  command: {PYTHON}"]
    lines.append(f"  args: {json.dumps(args)}")
    if cap is not None:
        lines.append(f"max_parallel: {cap}")
    lines.append("jobs:")
    for i in range(count):
        lines += [f"  job-{i}:", "    instructions: Check my positions"]
    return "\n".join(lines) + "\n"


def base_env(root: Path, state: Path, stub: Stub) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    env.update(
        HOME=str(root / "home"),
        TZ="UTC",
        TASTY_ONESHOT_STATE_DIR=str(state),
        XDG_CONFIG_HOME=str(root / "home" / ".config"),
        OPENAI_BASE_URL=f"http://127.0.0.1:{stub.port}/v1",
        OPENAI_API_KEY="sk-x",
    )
    return env


def mb(kb: int) -> float:
    return kb / 1024


def part1(root: Path, stub: Stub, jobs: int, cap: int, rounds: int) -> None:
    names = [f"job-{i}" for i in range(jobs)]
    work = root / "work"
    free = root / "free.yaml"
    capped = root / "capped.yaml"
    free.write_text(jobs_yaml(jobs, root / "mcp-calls.jsonl", None))
    capped.write_text(jobs_yaml(jobs, root / "mcp-calls.jsonl", cap))

    def env(label: str) -> dict[str, str]:
        return base_env(root, root / f"state-{label}", stub)

    fire(names[:1], free, env("warm"), work, root / "logs-warm")  # .pyc and page cache
    rows: list[tuple[str, Fleet]] = []
    logs = root / "logs"
    for r in range(rounds):
        rows.append(("1 run alone", fire(names[:1], free, env(f"one{r}"), work, logs)))
        rows.append((f"{jobs} at once, no cap", fire(names, free, env(f"free{r}"), work, logs)))
        label = f"{jobs} at once, max_parallel: {cap}"
        rows.append((label, fire(names, capped, env(f"cap{r}"), work, logs)))
    waiter_rss, waiter_pss = one_waiting(capped, env("waiter"), work, cap)
    pid = os.posix_spawn(PYTHON, [PYTHON, "-I", "-c", "pass"], os.environ)
    floor_kb = os.wait4(pid, 0)[2].ru_maxrss  # kB on Linux

    print(f"\nPart 1: {jobs} jobs fired at once ({rounds} round(s)); RSS summed over the CLIs")
    print("and all their descendants (MCP servers), sampled every 20 ms; at the peak, split by")
    print("what each run was doing (count: MB); waits from each run's log\n")
    print(
        f"{'case':27} {'peak MB':>8} {'running':>10} {'waiting':>10} {'other':>10} "
        f"{'servers':>7} {'heavy':>5} {'last s':>6}  waits s (sorted)"
    )
    for label, fleet in rows:
        waits = " ".join(f"{w:.1f}" for w in sorted(fleet.waits))
        busy = f"  ({fleet.busy} busy)" if fleet.busy else ""
        peak = fleet.peak
        print(
            f"{label:27} {mb(peak.total_kb):8.1f} {split(peak.running, peak.running_kb)} "
            f"{split(peak.waiting, peak.waiting_kb)} {split(peak.other, peak.other_kb)} "
            f"{fleet.most_servers:7d} {fleet.most_heavy:5d} {fleet.last_finished:6.1f}  "
            f"{waits}{busy}"
        )
    print(
        "running: CLIs with their MCP server; waiting: holding a ticket for a place; other:\n"
        "starting, or finishing after the server stopped. servers: the most alive at once;\n"
        f"heavy: the most CLIs at once over {HEAVY_KB // 1024} MB (pydantic-ai imported)"
    )
    print(
        f"one waiting run: {mb(waiter_rss):.1f} MB RSS ({mb(waiter_pss):.1f} MB PSS); "
        f"python -I -c pass: {mb(floor_kb):.1f} MB RSS"
    )
    one = max(f.peak.total_kb for label, f in rows if label == "1 run alone")
    capped_rows = [f for label, f in rows if "max_parallel" in label]
    worst = max(capped_rows, key=lambda f: f.peak.total_kb)
    limit = cap * one * TARGET_RATIO
    verdict = "met" if worst.peak.total_kb <= limit else "NOT met"
    print(
        f"\ntarget: with max_parallel: {cap}, peak sum <= {cap} x one run's peak "
        f"({mb(one):.1f} MB) x {TARGET_RATIO:.2f} = {mb(int(limit)):.1f} MB: "
        f"{mb(worst.peak.total_kb):.1f} MB, {verdict}"
    )
    allowance = limit - cap * one
    others = jobs - cap
    print(
        f"  the target leaves {mb(int(allowance)):.1f} MB for the {others} other runs; "
        f"waiting, they take {others} x {mb(waiter_rss):.1f} = {mb(others * waiter_rss):.1f} MB"
    )
    without = worst.peak.total_kb - worst.peak.waiting_kb
    verdict = "met" if without <= limit else "NOT met"
    print(
        f"  the peak less its waiting runs: {mb(without):.1f} MB, {verdict}; "
        f"the peak against {cap} x one run + {others} waiting: "
        f"{worst.peak.total_kb / (cap * one + others * waiter_rss):.2f} x"
    )
    uncapped = max(f.peak.total_kb for label, f in rows if "no cap" in label)
    print(
        f"peak sum: {uncapped / one:.1f} x one run's without a cap, "
        f"{worst.peak.total_kb / one:.1f} x with it"
    )


def split(count: int, kb: int) -> str:
    return f"{count:2d}: {mb(kb):6.1f}"


# --- part 2 -------------------------------------------------------------------------------


def first_request(argv: list[str], env: dict[str, str], cwd: Path, stub: Stub) -> float:
    """Seconds from just before the spawn to the stub's receipt of the first POST."""
    stub.forget()
    started = time.time()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{argv[:3]}... exit {result.returncode}:\n{result.stderr.decode()[-3000:]}")
    return stub.first_arrival() - started


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.time()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.time() - started


def server_initialized(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from the spawn of the MCP server to its answer to `initialize`."""
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        },
    }
    started = time.time()
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    elapsed = time.time() - started
    if b'"result"' not in line:
        sys.exit(f"the fake server did not answer initialize: {line[:200]!r}")
    proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return elapsed


def part2(root: Path, stub: Stub, runs: int) -> None:
    work = root / "work"
    record = root / "mcp-calls-2.jsonl"
    config = root / "one.yaml"
    config.write_text(jobs_yaml(1, record, None))
    env = base_env(root, root / "state-first", stub)
    server = [PYTHON, str(FAKE_SERVER), str(record), "--weigh-like-tasty-agent"]
    script = root / "sequential.py"
    script.write_text(SEQUENTIAL)
    steps = root / "steps.py"
    steps.write_text(STEPS)
    cases = {
        "(a) the CLI, overlapped": lambda: first_request(
            [CLI, "run", "--job", "job-0", "--ignore-market-hours", "--config", str(config)],
            env,
            work,
            stub,
        ),
        "(b) bare pydantic-ai, sequential": lambda: first_request(
            [PYTHON, str(script), *server], env, work, stub
        ),
        "(c) pydantic-ai imports alone": lambda: wall([PYTHON, "-c", PYDANTIC_AI_IMPORTS], env),
        "(c) server up to initialize": lambda: server_initialized(server, env),
        "    python -c 'import tasty_agent.server'": lambda: wall(
            [PYTHON, "-c", "import tasty_agent.server"], env
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():  # warm-up: .pyc files, page cache, the state directory
        case()
    for _ in range(runs):  # interleaved, so that a noisy moment hits every case alike
        for name, case in cases.items():
            times[name].append(case())
    medians = {name: statistics.median(values) for name, values in times.items()}

    print(f"\nPart 2: process start to the first model request ({runs} runs each, interleaved)\n")
    print(f"{'case':42} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in times.items():
        print(f"{name:42} {medians[name]:9.2f} {min(values):7.2f} {max(values):7.2f}")
    imports = medians["(c) pydantic-ai imports alone"]
    server_up = medians["(c) server up to initialize"]
    slower = max(imports, server_up)
    overlapped = medians["(a) the CLI, overlapped"]
    sequential = medians["(b) bare pydantic-ai, sequential"]
    print(
        f"(a) first request {overlapped:.2f} s against {sequential:.2f} s sequential: "
        f"{sequential - overlapped:+.2f} s saved ({overlapped / sequential:.2f} x)"
    )
    verdict = "met" if overlapped <= TARGET_RATIO * slower else "NOT met"
    print(
        f"target: (a) <= {TARGET_RATIO:.2f} x the slower of (c) ({slower:.2f} s) = "
        f"{TARGET_RATIO * slower:.2f} s: {overlapped:.2f} s ({overlapped / slower:.2f} x), "
        + verdict
    )
    where_the_time_goes(steps, config, record, env, work, stub, runs)


def where_the_time_goes(
    steps: Path, config: Path, record: Path, env: dict[str, str], cwd: Path, stub: Stub, runs: int
) -> None:
    """(a) again through the STEPS wrapper: when each step ended, from the spawn."""
    marks_file = cwd.parent / "marks.json"
    env = dict(env, BENCH_MARKS=str(marks_file))
    argv = [PYTHON, str(steps), "run", "--job", "job-0", "--ignore-market-hours"]
    argv += ["--config", str(config)]
    at: dict[str, list[float]] = {}
    imported = None
    for _ in range(runs):
        started = time.time()
        first_request(argv, env, cwd, stub)
        first = stub.first_arrival()
        marks = json.loads(marks_file.read_text())
        imported = marks.pop("resolve imported", imported)
        starts = [json.loads(x) for x in record.read_text().splitlines()]
        marks["server imported tasty_agent.server (its own log)"] = [
            e for e in starts if e["event"] == "start"
        ][-1]["time"]
        marks["first model request at the stub"] = first
        for name, moment in marks.items():
            at.setdefault(name, []).append(moment - started)
    print(
        "\nwhere (a)'s time goes (the CLI through a wrapper that timestamps its steps; "
        f"median of {runs}):"
    )
    for name, values in sorted(at.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"  {statistics.median(values):6.2f} s  {name}")
    if imported:
        count, packages = imported
        print(f"  model resolution imported {count} modules, from: {', '.join(packages)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--cap", type=int, default=2)
    parser.add_argument("-n", "--runs", type=int, default=5, help="part 2's runs per case")
    parser.add_argument("--rounds", type=int, default=1, help="part 1's rounds")
    options = parser.parse_args()
    if not os.path.exists(CLI):
        sys.exit(f"{CLI} not found: run this with the venv's python (.venv/bin/python)")
    print(f"load average before: {load()} on {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="tasty-oneshot-many-"))
    (root / "work").mkdir()
    (root / "home").mkdir()
    stub = Stub(root / "stub")
    try:
        part1(root, stub, options.jobs, options.cap, options.rounds)
        part2(root, stub, options.runs)
    finally:
        stub.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nload average after: {load()} on {os.cpu_count()} CPUs (other work inflates times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
