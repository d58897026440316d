"""max_parallel: a host-wide cap on agents running at once, through the real CLI.

Each job has its own fake MCP server record, so the tests can tell which job's server ran
when; `--wait-for GO` holds every tool call until the test creates GO, and `--hang` holds
one forever. New York is UTC-5: 9:30 NYC on Monday 2026-11-30 is 14:30 UTC.
"""

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FAKE_SERVER
from test_run_lifecycle import alive, assert_gone, wait_for

from tasty_oneshot import places
from tasty_oneshot.lock import is_held


def server_block(record: Path, *flags: str) -> str:
    args = json.dumps([str(FAKE_SERVER), str(record), *flags])
    return f"    mcp:\n      command: {sys.executable}\n      args: {args}\n"


def write_jobs(ws, jobs: dict[str, str], top: str = "max_parallel: 2\n") -> None:
    """`jobs`: name -> the job's own YAML lines (already indented by 4)."""
    body = "".join(f"  {name}:\n    instructions: Check\n{lines}" for name, lines in jobs.items())
    ws.write("tasty-oneshot.yaml", "model: test\n" + top + "jobs:\n" + body)


def records(ws, name: str) -> list[dict]:
    path = ws.root / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def start(ws, *args: str, at: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        ws.command(*args, at=at), cwd=ws.root, env=ws.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


@contextmanager
def the_only_place_held(ws, waiter: str = "", others: tuple[str, ...] = ()):
    """Jobs `holder`, `waiter` (`waiter`: its schedule lines) and `others` under
    `max_parallel: 1`, with `holder` running and stuck in a tool call (so it holds the only
    place) meanwhile."""
    jobs = {
        "holder": server_block(ws.root / "holder.jsonl", "--hang", "account_overview"),
        "waiter": waiter + server_block(ws.root / "waiter.jsonl"),
    }
    jobs.update({name: server_block(ws.root / f"{name}.jsonl") for name in others})
    write_jobs(ws, jobs, top="max_parallel: 1\n")
    holder = start(ws, "run", "--job", "holder", "--ignore-market-hours")
    try:
        wait_for(lambda: any(e["event"] == "call" for e in records(ws, "holder")), "holder")
        yield
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.communicate(timeout=60)


class TicketOrder:
    """Watches the queue of waiting runs and notes the order in which tickets leave it: a
    waiter removes its ticket once it has a place, so that is the order places were given."""

    def __init__(self, queue: Path) -> None:
        self.queue, self.left = queue, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        present: set[str] = set()
        while not self.stop.is_set():
            now = set(os.listdir(self.queue)) if self.queue.is_dir() else set()
            now = {name for name in now if not name.startswith(".")}  # not yet in the queue
            gone = sorted(present - now)
            if len(gone) > 1:
                self.left.append(None)  # two in one look: their order is not known
            self.left += gone
            present = now
            time.sleep(0.002)

    def close(self) -> list[str | None]:
        self.stop.set()
        self.thread.join()
        return self.left


class AliveServers:
    """Samples, in a thread, how many of the jobs' MCP servers are alive at once."""

    def __init__(self, ws, names: list[str]) -> None:
        self.ws, self.names, self.peak = ws, names, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while not self.stop.is_set():
            pids = [
                event["pid"]
                for name in self.names
                for event in records(self.ws, name)
                if event["event"] == "start"
            ]
            self.peak = max(self.peak, sum(alive(pid) for pid in pids))
            time.sleep(0.02)

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


def test_at_most_max_parallel_servers_run_and_waiters_go_in_fire_time_order(ws):
    go = ws.root / "go"
    names = [f"job-{i}" for i in range(6)]
    jobs = {
        name: f'    schedule: "9:3{i}am"\n    daily: true\n    max_delay: 600\n'
        + server_block(ws.root / f"{name}.jsonl", "--wait-for", str(go))
        for i, name in enumerate(names)
    }
    write_jobs(ws, jobs)
    sampler = AliveServers(ws, names)
    order = TicketOrder(ws.state / "places" / "queue")
    runs = {
        name: start(ws, "run", "--job", name, "--scheduled", at="2026-11-30 14:36:00")
        for name in names
    }
    try:
        # Two runs reach their tool calls and block there; the four others wait for a place.
        wait_for(lambda: sum(bool(records(ws, n)) for n in names) >= 2, "two servers")
        queue = ws.state / "places" / "queue"
        wait_for(lambda: queue.is_dir() and len(os.listdir(queue)) == 4, "four waiting")
        first = {n for n in names if records(ws, n)}
        assert len(first) == 2
        go.write_text("go")
        results = {name: proc.communicate(timeout=120) for name, proc in runs.items()}
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        peak = sampler.close()
        left = order.close()
    assert peak <= 2, f"{peak} MCP servers were alive at once"
    for name, proc in runs.items():
        assert proc.returncode == 0, results[name][1]
    assert {row["status"] for row in ws.history("--limit", "20")} == {"ok"}
    # The waiters got their places in the order of their fire times: a ticket is named by
    # its fire time, and tickets left the queue one by one, earliest fire time first.
    assert None not in left and len(left) == 4, left
    assert left == sorted(left), left
    waited = [n for n in names if n not in first]
    for name in waited:
        assert "waiting for one of 2 places" in results[name][1]
        assert "got place" in results[name][1]


def test_a_waiter_gives_up_as_busy_when_its_slot_passes_and_status_counts_it_missed(ws):
    with the_only_place_held(ws, '    schedule: "9:30am"\n    daily: true\n    max_delay: 4\n'):
        waiter = ws.cli("run", "--job", "waiter", "--scheduled", at="2026-11-30 14:30:01")
    assert waiter.returncode == 75, waiter.stderr
    assert "waiting for one of 1 places" in waiter.stderr
    assert "gave up waiting" in waiter.stderr
    assert records(ws, "waiter") == []  # its server never started
    [row] = ws.history("--job", "waiter")
    assert row["status"] == "skipped" and row["reason"].startswith("busy:"), row
    assert row["exit_code"] == 75 and row["slot"] == "2026-11-30T09:30:00-05:00"
    # The slot was not used up, and status counts it as missed.
    result = ws.cli("status", "--json", "--job", "waiter", at="2026-11-30 15:00:00")
    [report] = json.loads(result.stdout)
    assert report["missed"] == ["2026-11-30T09:30:00-05:00"] and report["state"] == "missed"


def test_a_holder_killed_with_sigkill_frees_its_place_for_a_waiter_at_once(ws):
    jobs = {
        "holder": server_block(ws.root / "holder.jsonl", "--hang", "account_overview"),
        "waiter": server_block(ws.root / "waiter.jsonl"),
    }
    write_jobs(ws, jobs, top="max_parallel: 1\n")
    holder = start(ws, "run", "--job", "holder", "--ignore-market-hours")
    wait_for(lambda: any(e["event"] == "call" for e in records(ws, "holder")), "holder")
    waiter = start(ws, "run", "--job", "waiter", "--ignore-market-hours", "--timeout", "120")
    queue = ws.state / "places" / "queue"
    wait_for(lambda: queue.is_dir() and os.listdir(queue), "the waiter's ticket", proc=waiter)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=30)
    _out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert "got place 0" in err
    [start_event] = [e for e in records(ws, "holder") if e["event"] == "start"]
    assert_gone(start_event["pid"])


def test_a_second_run_of_the_same_job_is_refused_not_queued(ws):
    jobs = {"holder": server_block(ws.root / "holder.jsonl", "--hang", "account_overview")}
    write_jobs(ws, jobs, top="max_parallel: 1\n")
    holder = start(ws, "run", "--job", "holder", "--ignore-market-hours")
    try:
        wait_for(lambda: any(e["event"] == "call" for e in records(ws, "holder")), "holder")
        again = ws.cli("run", "--job", "holder", "--ignore-market-hours")
        assert again.returncode == 75, again.stderr
        assert "waiting" not in again.stderr
        queue = ws.state / "places" / "queue"
        assert not queue.exists() or os.listdir(queue) == []
        assert ws.history()[0]["status"] == "locked"
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.communicate(timeout=60)


def test_a_skip_never_touches_the_places(ws):
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    result = ws.cli("run", "--job", "check", at="2026-11-26 15:00:00")  # Thanksgiving
    assert result.returncode == 0, result.stderr
    assert not (ws.state / "places").exists()


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_max_parallel_in_the_environment_is_one_line_and_exit_2(ws, value):
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="")
    ws.env["TASTY_ONESHOT_MAX_PARALLEL"] = value
    result = ws.cli("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 2
    assert "TASTY_ONESHOT_MAX_PARALLEL" in result.stderr.strip().splitlines()[-1]


def run_pid(proc: subprocess.Popen) -> int:
    """The run's own process: `proc`, or the child that faketime started and waits for."""
    if "faketime" not in os.readlink(f"/proc/{proc.pid}/exe"):
        return proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    wait_for(lambda: children.read_text().split(), "faketime's child", proc=proc)
    [child] = children.read_text().split()
    return int(child)


def tickets(ws) -> list[str]:
    queue = ws.state / "places" / "queue"
    return [n for n in os.listdir(queue) if not n.startswith(".")] if queue.is_dir() else []


def waiting_in_the_shell(ws, proc: subprocess.Popen, tickets_then: int = 1) -> int:
    """Wait until the run `proc` waits for a place: `tickets_then` tickets are in the queue,
    and the process has become the shell loop (the same pid, no Python); that pid."""
    wait_for(lambda: len(tickets(ws)) >= tickets_then, "the waiter's ticket", proc=proc)
    pid = run_pid(proc)
    wait_for(lambda: "python" not in os.readlink(f"/proc/{pid}/exe"), "the shell", proc=proc)
    wait_for(lambda: catches_stops(pid), "the shell's traps", proc=proc)
    return pid


def catches_stops(pid: int) -> bool:
    """Whether the process has handlers for SIGTERM, SIGHUP and SIGINT (the shell loop, once
    its traps are set: a stop before that, in the shell's first instant, kills it)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return all(caught >> (sig - 1) & 1 for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT))


def test_a_waiting_run_holds_no_python_and_resumes_as_the_same_run(ws):
    with the_only_place_held(ws):
        waiter = start(ws, "run", "--job", "waiter", "--ignore-market-hours", "--timeout", "120")
        assert waiting_in_the_shell(ws, waiter) == waiter.pid
        with open(f"/proc/{waiter.pid}/status") as f:
            rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        assert rss_kb < 8 * 1024, f"a waiting run takes {rss_kb} kB"
        # It still holds its job's lock: a second run of it is refused, not queued.
        again = ws.cli("run", "--job", "waiter", "--ignore-market-hours")
        assert again.returncode == 75, again.stderr
        assert records(ws, "waiter") == []  # no server while it waits
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert out.strip() and "got place 0 after waiting" in err
    assert err.count("waiting for one of 1 places") == 1
    assert {r["status"] for r in ws.history("--job", "waiter")} == {"ok", "locked"}
    [server] = [e for e in records(ws, "waiter") if e["event"] == "start"]
    assert server["ppid"] == waiter.pid  # the same process ran the agent
    assert os.listdir(ws.state / "places" / "queue") == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_a_waiting_run_is_recorded_as_interrupted_at_once(ws, sig):
    with the_only_place_held(ws, '    schedule: "9:30am"\n    daily: true\n    max_delay: 600\n'):
        waiter = start(ws, "run", "--job", "waiter", "--scheduled", at="2026-11-30 14:30:01")
        pid = waiting_in_the_shell(ws, waiter)
        os.kill(pid, sig)  # the run alone, as `systemctl stop` or a closed ssh would
        _out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 128 + sig, err
    [row] = ws.history("--job", "waiter")
    assert row["status"] == "interrupted", row
    assert row["reason"] == f"stopped by {sig.name} before the agent started"
    assert row["slot"] == "2026-11-30T09:30:00-05:00"
    assert records(ws, "waiter") == []
    assert os.listdir(ws.state / "places" / "queue") == []


def test_a_wait_this_process_did_not_begin_is_one_line_and_exit_2(ws):
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    facts = {"slot": None, "started_at": "2026-11-30T09:30:00-05:00", "started": 0.0}
    ws.env["TASTY_ONESHOT_WAITING"] = json.dumps({**facts, "waited_from": 0.0, "places": 1})
    ws.env["TASTY_ONESHOT_WAIT_END"] = "place 0"
    result = ws.cli("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "TASTY_ONESHOT_WAITING" in line and "not a wait" in line
    assert records(ws, "check") == [] and ws.history() == []


def flock_holders(path: Path) -> set[int]:
    """The pids that hold a flock on `path`, from /proc/locks."""
    info = os.stat(path)
    key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with open("/proc/locks") as locks:
        fields = [line.split() for line in locks]
    return {int(f[4]) for f in fields if len(f) > 5 and f[1] == "FLOCK" and f[5] == key}


def test_a_place_is_held_until_the_run_ends_not_only_until_its_agent_is_done(ws, receiver):
    # A run recording its outcome still holds pydantic-ai's memory: its place stays taken.
    outcome = "tasty-oneshot check: output"  # the alert's title (not the agent's own alerts)
    alerts = receiver(hang=outcome)
    job = server_block(ws.root / "check.jsonl")
    job += f'    notify: ["{alerts.url()}"]\n    notify_on: [output]\n'
    write_jobs(ws, {"check": job}, top="max_parallel: 1\n")
    run = start(ws, "run", "--job", "check", "--ignore-market-hours")
    try:
        sent = lambda: any(outcome in post["body"] for post in alerts.posts)  # noqa: E731
        wait_for(sent, "the alert, sent after the agent finished", proc=run)
        assert flock_holders(ws.state / "places" / "0.lock") == {run.pid}
    finally:
        alerts.release.set()
        _out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err


def test_a_signal_to_a_run_queued_behind_another_leaves_nothing_behind(ws):
    # The second waiter sleeps in flock(1) on the first's ticket; stopped, nothing of it may
    # live on: not its job's lock (a later run of it would be `locked`), not its stdout.
    with the_only_place_held(ws, others=("second",)):
        first = start(ws, "run", "--job", "waiter", "--ignore-market-hours", "--timeout", "600")
        waiting_in_the_shell(ws, first)
        second = start(ws, "run", "--job", "second", "--ignore-market-hours", "--timeout", "600")
        pid = waiting_in_the_shell(ws, second, tickets_then=2)
        os.kill(pid, signal.SIGTERM)
        _out, err = second.communicate(timeout=60)  # returns only once stdout is closed
        assert second.returncode == 143, err
        assert not is_held(ws.state / "locks" / "second.lock")
        assert [r["status"] for r in ws.history("--job", "second")] == ["interrupted"]
        assert tickets(ws) != [] and first.poll() is None  # the first still waits, in order
        os.kill(run_pid(first), signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    assert tickets(ws) == []


def resume(
    ws, end: str, give_up_in: float, lock: str = "flock -n 7 && "
) -> subprocess.CompletedProcess:
    """Run `check` as the shell loop would resume it: the job's lock on descriptor 7 and
    place 0 on 9 (taken by a wrapper that then execs the CLI), the wait's facts in the
    environment (begun now, giving up `give_up_in` seconds from now), ended by `end`.
    `lock`: how the wrapper takes the job's lock ("": it only opens the file)."""
    now = time.monotonic()
    facts = {
        "slot": None,
        "started_at": "2026-11-30T09:30:00-05:00",
        "started": now,
        "waited_from": now,
        "give_up_at": now + give_up_in,
        "places": 1,
    }
    env = dict(ws.env, TASTY_ONESHOT_WAITING=json.dumps(facts), TASTY_ONESHOT_WAIT_END=end)
    take = 'umask 077; mkdir -p "$1" "$2"; exec 7<>"$1/check.lock" 9<>"$2/0.lock"; '
    take += lock + 'flock -n 9 && shift 2 && exec "$@"'
    command = ["sh", "-c", take, "sh", str(ws.state / "locks"), str(ws.state / "places")]
    return subprocess.run(
        [*command, *ws.command("run", "--job", "check", "--ignore-market-hours")],
        cwd=ws.root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_resumed_run_whose_window_passed_meanwhile_gives_up_as_busy(ws):
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    result = resume(ws, "place 0", give_up_in=-1)  # the place came, but too late
    assert result.returncode == 75, result.stderr
    [row] = ws.history()
    assert row["status"] == "skipped" and row["reason"].startswith("busy:"), row
    assert records(ws, "check") == []


def test_a_resumed_run_stopped_during_its_wait_is_recorded_as_interrupted(ws):
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    result = resume(ws, "signal SIGHUP", give_up_in=600)
    assert result.returncode == 129, result.stderr
    [row] = ws.history()
    assert row["status"] == "interrupted", row
    assert row["reason"] == "stopped by SIGHUP before the agent started"
    assert row["started_at"] == "2026-11-30T09:30:00-05:00"  # the run's start, before its wait


def test_a_resumed_run_with_its_place_runs_the_agent_and_keeps_its_start(ws):
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    result = resume(ws, "place 0", give_up_in=600)
    assert result.returncode == 0, result.stderr
    assert "got place 0 after waiting" in result.stderr
    [row] = ws.history()
    assert row["status"] == "ok" and row["started_at"] == "2026-11-30T09:30:00-05:00", row
    assert records(ws, "check")[0]["event"] == "start"


def test_a_resumed_run_that_does_not_hold_its_jobs_lock_is_refused_with_exit_2(ws):
    # Its place is held, but the job's lock is another process's (a run of the job that is
    # going on): going ahead would run the job twice at once.
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    locks = ws.state / "locks"
    locks.mkdir(mode=0o700, parents=True)
    other = os.open(locks / "check.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        result = resume(ws, "place 0", give_up_in=600, lock="")
    finally:
        os.close(other)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "TASTY_ONESHOT_WAITING" in line and "not a wait" in line
    assert records(ws, "check") == [] and ws.history() == []


def test_waiting_runs_go_in_fire_time_order_not_arrival_order_past_a_dead_ones_ticket(ws):
    # They arrive latest fire time first; the earliest (`dead`) is SIGKILLed while it waits,
    # its ticket left first in the queue. The place goes to `early`, then `late`: never to
    # the first to arrive, and the dead ticket holds up no one (nor makes them `busy`).
    go = ws.root / "go"
    slot = '    schedule: "9:3{}am"\n    daily: true\n    max_delay: 600\n'.format
    jobs = {
        "holder": server_block(ws.root / "holder.jsonl", "--hang", "account_overview"),
        "late": slot(3) + server_block(ws.root / "late.jsonl"),
        "dead": slot(1) + server_block(ws.root / "dead.jsonl"),
        "early": slot(2) + server_block(ws.root / "early.jsonl", "--wait-for", str(go)),
    }
    write_jobs(ws, jobs, top="max_parallel: 1\n")
    holder = start(ws, "run", "--job", "holder", "--ignore-market-hours")
    runs: dict[str, subprocess.Popen] = {}
    try:
        wait_for(lambda: any(e["event"] == "call" for e in records(ws, "holder")), "holder")
        for count, name in enumerate(("late", "dead", "early"), 1):
            runs[name] = start(ws, "run", "--job", name, "--scheduled", at="2026-11-30 14:36:00")
            waiting_in_the_shell(ws, runs[name], tickets_then=count)
        os.killpg(runs["dead"].pid, signal.SIGKILL)
        runs["dead"].communicate(timeout=30)
        # Its ticket, first in the queue and no longer held, is removed by a waiting run.
        wait_for(lambda: len(tickets(ws)) == 2, "the dead run's ticket removed")
        os.killpg(holder.pid, signal.SIGTERM)
        holder.communicate(timeout=60)
        started = lambda: records(ws, "early") or records(ws, "late")  # noqa: E731
        wait_for(started, "a waiting run's server", timeout=60)
        assert records(ws, "early") and records(ws, "late") == []
        go.write_text("go")
        results = {name: runs[name].communicate(timeout=120) for name in ("early", "late")}
    finally:
        for proc in [holder, *runs.values()]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    for name in ("early", "late"):
        assert runs[name].returncode == 0, results[name][1]
        assert "got place 0 after waiting" in results[name][1]
    assert records(ws, "dead") == [] and tickets(ws) == []


def test_the_python_waiter_gives_a_freed_place_to_the_earliest_fire_time_not_the_first(ws):
    # How a run waits when its job's lock is a PostgreSQL connection's (or in-process): in
    # Python. `late` asks first and looks first after the place comes free.
    ws.state.mkdir(mode=0o700)
    held = places.try_places(ws.state, 1)  # the only place, another run's
    assert held is not None
    order = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
    with pytest.raises(places.Busy):  # its give-up time is past: no wait at all
        asyncio.run(places.take_place(ws.state, 1, order, time.monotonic()))
    assert tickets(ws) == []
    got: list[str] = []

    async def wait(name: str, minute: int) -> None:
        fire = order.replace(minute=minute)
        place = await places.take_place(ws.state, 1, fire, time.monotonic() + 60)
        got.append(name)
        place.release()

    async def main() -> None:
        late = asyncio.create_task(wait("late", 33))
        await asyncio.sleep(0)  # it has its ticket, and has looked for a place once
        early = asyncio.create_task(wait("early", 31))
        await asyncio.sleep(0)
        assert len(tickets(ws)) == 2 and got == []
        held.release()  # between early's look and late's next one
        await asyncio.gather(late, early)

    asyncio.run(main())
    assert got == ["early", "late"]
    assert tickets(ws) == []


def test_a_run_waiting_in_python_goes_ahead_when_its_place_comes_free(ws):
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    ws.state.mkdir(mode=0o700)
    held = places.try_places(ws.state, 1)
    assert held is not None

    def free_it_once_the_run_waits() -> None:
        deadline = time.monotonic() + 60
        while not tickets(ws) and time.monotonic() < deadline:
            time.sleep(0.01)
        held.release()

    freer = threading.Thread(target=free_it_once_the_run_waits)
    freer.start()
    try:
        # In-process: no command line to resume, so the run waits in Python.
        result = ws.call("run", "--job", "check", "--ignore-market-hours", "--timeout", "20")
    finally:
        freer.join()
        held.release()
    assert result.returncode == 0, result.stderr
    assert "waiting for one of 1 places" in result.stderr
    assert "got place 0 after waiting" in result.stderr
    assert records(ws, "check")[0]["event"] == "start"
    assert tickets(ws) == []


def test_a_new_run_queues_behind_a_waiting_one_even_when_a_place_is_free(ws):
    # A run already waiting (its ticket held, an earlier fire time) is next for the place
    # that just came free: a run arriving at that moment must not take it before it.
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    queue = ws.state / "places" / "queue"
    queue.mkdir(mode=0o700, parents=True)
    os.chmod(ws.state / "places", 0o700)
    earlier = os.open(queue / f"{1:020d}-{1:010d}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(earlier, fcntl.LOCK_EX)  # alive, and never taking its place
        result = ws.cli("run", "--job", "check", "--ignore-market-hours", "--timeout", "4")
    finally:
        os.close(earlier)
    assert result.returncode == 75, result.stderr
    assert "waiting for one of 1 places" in result.stderr
    assert records(ws, "check") == []
    # Once the earlier run is gone, the place is free for the next run at once.
    again = ws.cli("run", "--job", "check", "--ignore-market-hours")
    assert again.returncode == 0, again.stderr
    assert "waiting" not in again.stderr


PLANTED = f"{1:020d}-{1:010d}"  # a ticket's name, earlier than any run's


def plant(path: Path, kind: str) -> None:
    """Something that is not a regular file, where a ticket or a place belongs."""
    if kind == "FIFO":
        os.mkfifo(path, 0o600)
    else:
        os.mkdir(path, 0o700)


@pytest.mark.parametrize("kind", ["FIFO", "directory"])
def test_something_not_a_ticket_in_the_queue_is_refused_before_any_wait(ws, kind):
    # Behind a live ticket (an earlier fire time, held), where a run would begin to wait.
    write_jobs(ws, {"check": server_block(ws.root / "check.jsonl")}, top="max_parallel: 1\n")
    queue = ws.state / "places" / "queue"
    queue.mkdir(mode=0o700, parents=True)
    os.chmod(ws.state / "places", 0o700)
    planted = queue / f"{2:020d}-{2:010d}"
    plant(planted, kind)
    earlier = os.open(queue / PLANTED, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(earlier, fcntl.LOCK_EX)
        result = ws.cli("run", "--job", "check", "--ignore-market-hours", "--timeout", "30")
    finally:
        os.close(earlier)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"{planted}: is a {kind}, not a regular file" in line and f"rm {planted}" in line
    assert "waiting" not in result.stderr and records(ws, "check") == []
    assert sorted(os.listdir(queue)) == [PLANTED, planted.name]  # no ticket of the run's


@pytest.mark.parametrize(
    ("where", "kind"),
    [("queue", "FIFO"), ("queue", "directory"), ("place", "FIFO")],
)
def test_something_not_a_ticket_planted_during_a_wait_ends_it_with_exit_2(ws, where, kind):
    # The shell loop never opens it (a FIFO would block the open, with the job's lock held
    # and the first SIGTERM lost): the run ends at once, naming it.
    with the_only_place_held(ws):
        waiter = start(ws, "run", "--job", "waiter", "--ignore-market-hours", "--timeout", "120")
        waiting_in_the_shell(ws, waiter)
        if where == "queue":
            planted = ws.state / "places" / "queue" / PLANTED
        else:  # the place the holder has: the waiter would open it next
            planted = ws.state / "places" / "0.lock"
            planted.unlink()
        plant(planted, kind)
        try:
            _out, err = waiter.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(waiter.pid, signal.SIGKILL)
            waiter.communicate()
            pytest.fail(f"the waiting run hung on the {kind} planted in the {where}")
        assert waiter.returncode == 2, err
        last = err.strip().splitlines()[-1]
        assert f"{planted}: is a {kind}, not a regular file" in last and "rm " in last, err
        assert not is_held(ws.state / "locks" / "waiter.lock")
        assert [name for name in tickets(ws) if name != PLANTED] == []
        assert records(ws, "waiter") == []
