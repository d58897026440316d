"""max_parallel's wait inside the sandbox the generated systemd units set up, without systemd.

Each run of the CLI here starts in a mount namespace of its own (`unshare -m`) that is set up
as the service's: /proc mounted with `subset=pid` (ProcSubset=pid: no /proc/uptime, no
/proc/locks), a private /tmp (PrivateTmp), and the whole system read-only (ProtectSystem=
strict) except the test's own directory, which holds the state directory (the unit's
StateDirectory). unshare and the shell exec, so the process the test starts is the CLI.
"""

import fcntl
import os
import resource
import signal
import subprocess
import time
from datetime import UTC, datetime

import pytest
from test_places import records, server_block, tickets, waiting_in_the_shell, write_jobs
from test_run_lifecycle import wait_for

from tasty_oneshot import waiter
from tasty_oneshot.places import places_dir, take_ticket

# $1: the directory that stays writable (it holds the state directory); then the command.
SANDBOX = """
set -e
root=$1
shift
mount -t proc -o subset=pid proc /proc
mount --bind "$root" /mnt
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p "$root"
mount --move /mnt "$root"
mount -o remount,bind,ro /
exec "$@"
"""


def sandboxed(ws, command: list[str]) -> list[str]:
    """`command` inside the units' sandbox, the workspace (and its state directory) writable."""
    root = str(ws.state.parent)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", SANDBOX, "sh", root, *command]


@pytest.fixture
def sandbox(ws):
    """A function that starts the CLI with ARGS inside the sandbox; skips where it is refused."""
    probe = subprocess.run(
        sandboxed(ws, ["sh", "-c", "! test -e /proc/uptime && ! test -e /proc/locks"]),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot set up the sandbox here (unshare -m as root): {probe.stderr.strip()}")

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            sandboxed(ws, ws.command(*args)), cwd=ws.root, env=ws.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    return start


def holder_and_waiter(ws) -> None:
    """Jobs `holder` (its tool call hangs: it holds the only place) and `waiter`."""
    jobs = {
        "holder": server_block(ws.root / "holder.jsonl", "--hang", "account_overview"),
        "waiter": server_block(ws.root / "waiter.jsonl"),
    }
    write_jobs(ws, jobs, top="max_parallel: 1\n")


def holding(ws, sandbox) -> subprocess.Popen:
    """`holder`, started in the sandbox, once it holds the only place (inside its tool call)."""
    holder = sandbox("run", "--job", "holder", "--ignore-market-hours", "--timeout", "300")
    calling = lambda: any(e["event"] == "call" for e in records(ws, "holder"))  # noqa: E731
    wait_for(calling, "the holder's tool call", timeout=120, proc=holder)
    return holder


def stop(proc: subprocess.Popen, sig: signal.Signals = signal.SIGTERM) -> tuple[str, str]:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    return proc.communicate(timeout=120)


def test_a_waiting_run_gets_the_place_when_it_comes_free_inside_the_units_sandbox(ws, sandbox):
    holder_and_waiter(ws)
    holder = holding(ws, sandbox)
    try:
        waiter_run = sandbox("run", "--job", "waiter", "--ignore-market-hours", "--timeout", "90")
        assert waiting_in_the_shell(ws, waiter_run) == waiter_run.pid
        assert records(ws, "waiter") == []  # nothing of it runs while it waits
    finally:
        stop(holder)
    _out, err = waiter_run.communicate(timeout=120)
    assert waiter_run.returncode == 0, err
    assert "got place 0 after waiting" in err
    assert tickets(ws) == []
    assert records(ws, "waiter")[0]["event"] == "start"


def test_a_dead_ticket_does_not_make_later_runs_busy_inside_the_units_sandbox(ws, sandbox):
    holder_and_waiter(ws)
    holder = holding(ws, sandbox)
    try:
        waiter_run = sandbox("run", "--job", "waiter", "--ignore-market-hours", "--timeout", "90")
        waiting_in_the_shell(ws, waiter_run)
        stop(waiter_run, signal.SIGKILL)  # its ticket stays in the queue, no longer held
        assert len(tickets(ws)) == 1
    finally:
        stop(holder)
    # Nothing runs now: a later capped run removes the dead ticket and takes the place at once.
    later = sandbox("run", "--job", "waiter", "--ignore-market-hours", "--timeout", "60")
    _out, err = later.communicate(timeout=120)
    assert later.returncode == 0, err
    assert "waiting" not in err
    assert tickets(ws) == []


def open_fds() -> set[int]:
    """This process's open descriptors (fstat: a listing of /proc/self/fd would open one)."""
    return {fd for fd in range(1024) if is_open(fd)}


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("fault", ["descriptors run out", "exec refused"])
def test_a_wait_that_fails_before_the_shell_runs_leaves_no_ticket_behind(ws, fault):
    # A real fault at either end of the handover: no descriptor left for the copies it makes
    # (RLIMIT_NOFILE below them), or an exec the kernel refuses (an argument over its limit).
    state = ws.state
    state.mkdir(mode=0o700)
    lock_fd = os.open(state / "check.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    command = ["x" * (1 << 20)]  # never exec'd, whatever the fault: the test goes on
    before = open_fds()
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    if fault == "descriptors run out":  # the ticket's own descriptor fits, no copy at 100+
        assert set(range(waiter.HIGH_FD)) - before  # room for the ticket's own
        resource.setrlimit(resource.RLIMIT_NOFILE, (waiter.HIGH_FD, limits[1]))
    try:
        with pytest.raises(OSError):
            order = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
            waiter.wait_outside(state, 1, order, time.monotonic() + 60, lock_fd, {}, command)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        os.close(lock_fd)
    queue = places_dir(state) / "queue"
    assert os.listdir(queue) == []  # not even a hidden one
    assert open_fds() == before - {lock_fd}


def test_a_ticket_that_cannot_be_put_in_the_queue_leaves_nothing_behind(ws):
    # The rename that puts a locked ticket in the queue fails for real: a directory holds
    # the ticket's name. Nothing is left, not even the hidden file it was locked under.
    order = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
    ws.state.mkdir(mode=0o700)
    queue = places_dir(ws.state) / "queue"
    queue.mkdir(mode=0o700)
    name = f"{round(order.timestamp() * 1e6):020d}-{os.getpid():010d}"
    (queue / name).mkdir(mode=0o700)
    before = open_fds()
    with pytest.raises(IsADirectoryError):
        take_ticket(queue.parent, order)
    assert os.listdir(queue) == [name]
    assert open_fds() == before
