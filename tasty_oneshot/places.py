"""A host-wide cap on agents running at once: `max_parallel` places, one flock each.

A run that will start its agent takes a place (STATE/places/N.lock) first; the kernel frees
it however the run ends, SIGKILL included. A run that finds every place taken waits, holding
nothing else (no MCP server, no model request): it writes a ticket in STATE/places/queue,
named by its fire time, and holds a flock on it while it waits. Tickets go in fire-time
order: only the earliest live ticket may take a place that comes free, so the waiting runs
go ahead in the order of their fire times, not in the order the kernel wakes them. A ticket
whose process is gone (its flock released) is removed by the next waiter that sees it.

A waiting run of the CLI holds no Python either: it replaces itself (exec, the same process)
with a small POSIX shell loop (WAITER) that waits with util-linux's flock(1), about 2 MB
instead of about 25 MB. The job's lock and the ticket stay held across the exec (the open
file descriptions are inherited). When the loop has a place, gives up, or is stopped by a
signal, it replaces itself with the same command line again, which resumes the run where it
was left (`resumed`). Without /bin/sh or flock(1), and with a PostgreSQL ledger (whose job lock
belongs to a connection, which an exec would drop), the run waits in Python.
"""

import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from tasty_oneshot import paths
from tasty_oneshot.lock import is_held

log = logging.getLogger("tasty_oneshot")

POLL = 0.1  # seconds between looks while waiting (only waiting runs poll)
ENV = "TASTY_ONESHOT_MAX_PARALLEL"


class Busy(Exception):
    """No place came free before the run had to give up."""


class Place:
    """A place held by this run until `release` (or the process ends)."""

    def __init__(self, fd: int, index: int) -> None:
        self.fd, self.index = fd, index

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def try_places(state: Path, places: int) -> Place | None:
    """A free place at once, if there is one (the common case: no waiting)."""
    return _try_places(_directory(state), places)


async def take_place(state: Path, places: int, order: datetime, give_up_at: float) -> Place:
    """A place among `places`, waiting in this process in `order` (the fire time) behind
    earlier runs; Busy when none came free before the monotonic time `give_up_at`."""
    import asyncio  # a run that takes a place is past the skip path

    directory = _directory(state)
    place = _try_places(directory, places)
    if place is not None:
        return place
    ticket, fd = _ticket(directory, order)
    started = time.monotonic()
    log.info("waiting for one of %d places (max_parallel): every one is taken", places)
    try:
        while True:
            if _first_live(ticket.parent) == ticket.name:
                place = _try_places(directory, places)
                if place is not None:
                    log.info(
                        "got place %d after waiting %.1fs", place.index, time.monotonic() - started
                    )
                    return place
            if time.monotonic() >= give_up_at:
                waited = time.monotonic() - started
                log.info("gave up waiting for a place after %.1fs", waited)
                raise Busy(busy_reason(places, waited))
            await asyncio.sleep(POLL)
    finally:
        ticket.unlink(missing_ok=True)
        os.close(fd)


def busy_reason(places: int, waited: float) -> str:
    return f"busy: no place of max_parallel={places} came free in {waited:.0f}s"


def _directory(state: Path) -> Path:
    return paths.private_dir(paths.private_dir(state / "places"))


def _ticket(directory: Path, order: datetime) -> tuple[Path, int]:
    """A ticket in the queue, named by the fire time (microseconds) and the pid, both
    zero-padded so that names sort as numbers, with its flock held. It is locked under a
    hidden name and then renamed: a ticket in the queue that is not locked is a dead one."""
    queue = paths.private_dir(directory / "queue")
    name = f"{round(order.timestamp() * 1e6):020d}-{os.getpid():010d}"
    hidden = queue / f".{name}"
    fd = paths.open_private(hidden, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(hidden, queue / name)
    return queue / name, fd


def _try_places(directory: Path, places: int) -> Place | None:
    for index in range(places):
        fd = paths.open_private(directory / f"{index}.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Place(fd, index)
    return None


def _first_live(queue: Path) -> str | None:
    """The earliest ticket whose run still waits; tickets of dead runs are removed."""
    for name in sorted(n for n in os.listdir(queue) if not n.startswith(".")):
        held = is_held(queue / name)
        if held is False:
            (queue / name).unlink(missing_ok=True)
            continue
        return name
    return None


def configured(defaults: int | None) -> int | None:
    """max_parallel: $TASTY_ONESHOT_MAX_PARALLEL, else the jobs file's; None: no cap."""
    text = os.environ.get(ENV)
    if not text:
        return defaults
    from tasty_oneshot.errors import UsageError

    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"${ENV}: {text[:20]!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise UsageError(f"${ENV}: expected a whole number from 1 to 1000")
    return value


# --- Waiting outside Python -------------------------------------------------------------

WAITING_ENV = "TASTY_ONESHOT_WAITING"  # what the run knew before it began to wait (JSON)
WAIT_END_ENV = "TASTY_ONESHOT_WAIT_END"  # how the wait ended: "place N", "busy", "signal NAME"
LOCK_FD, TICKET_FD, PLACE_FD = 7, 8, 9  # where the job's lock, the ticket and the place are

# $1 places directory, $2 places, $3 ticket, $4 give up at (/proc/uptime, centiseconds), then
# the command that resumes the run. The first live ticket tries the places every 0.1 s; every
# later one sleeps in flock(1) on the first's ticket until it is gone (it got a place or died).
# Waits run in the background with `wait`, so that a signal ends them at once; they hold none
# of the run's descriptors (the job's lock, the ticket, stdout), so none outlives the run.
WAITER = r"""
umask 077
dir=$1 n=$2 ticket=$3 until=$4
shift 4
stop= end= bg=
halt() { stop=$1; if [ -n "$bg" ]; then kill "$bg" 2>/dev/null; fi; }
trap 'halt TERM' TERM
trap 'halt HUP' HUP
trap 'halt INT' INT
while [ -z "$stop" ]; do
    read -r up _ </proc/uptime
    now=${up%.*}${up#*.}
    if [ "$now" -ge "$until" ]; then end=busy; break; fi
    first=
    for t in "$dir"/queue/[0-9]*; do
        [ -e "$t" ] || continue
        if [ "$t" != "$ticket" ] && { flock -n 9; } 2>/dev/null 9<"$t"; then
            rm -f -- "$t"
            continue
        fi
        first=$t
        break
    done
    if [ -z "$first" ] || [ "$first" = "$ticket" ]; then
        i=0
        while [ "$i" -lt "$n" ]; do
            if { command exec 9<>"$dir/$i.lock"; } 2>/dev/null; then
                if flock -n 9; then end="place $i"; break 2; fi
                exec 9<&-
            fi
            i=$((i + 1))
        done
        sleep 0.1 </dev/null >/dev/null 2>&1 7<&- 8<&- &
    else
        left=$((until - now))
        cs=$((left % 100))
        if [ "$cs" -lt 10 ]; then cs=0$cs; fi
        { flock -w "$((left / 100)).$cs" 9; } </dev/null >/dev/null 2>&1 7<&- 8<&- 9<"$first" &
    fi
    bg=$!
    if [ -n "$stop" ]; then kill "$bg" 2>/dev/null; fi
    wait "$bg"
    bg=
done
wait
if [ -n "$stop" ]; then end="signal SIG$stop"; exec 9<&-; fi
rm -f -- "$ticket"
exec 8<&-
TASTY_ONESHOT_WAIT_END=$end
export TASTY_ONESHOT_WAIT_END
exec "$@"
"""


class Resumed(NamedTuple):
    """A run resumed after its wait outside Python."""

    ended: str  # "place", "busy" or "signal"
    place: Place | None
    signal: str | None  # "SIGTERM", ... when a signal ended the wait
    slot: datetime | None
    started_at: datetime
    started: float  # monotonic, when the run began (before the wait)
    waited: float  # seconds
    give_up_at: float  # monotonic, as before the wait
    places: int
    lock_fd: int


def can_wait_outside() -> bool:
    """Whether the wait can be left to the shell loop: /bin/sh, and flock(1) on the PATH."""
    import shutil  # only a run that waits gets here

    return os.access("/bin/sh", os.X_OK) and shutil.which("flock") is not None


def wait_outside(
    state: Path,
    places: int,
    order: datetime,
    give_up_at: float,
    lock_fd: int,
    facts: Mapping[str, object],
    command: list[str],
) -> None:
    """Take a ticket and replace this process with WAITER; never returns. If the exec itself
    fails (OSError), the ticket is gone and every descriptor is as it was."""
    ticket, ticket_fd = _ticket(_directory(state), order)
    log.info("waiting for one of %d places (max_parallel): every one is taken", places)
    now = time.monotonic()
    with open("/proc/uptime", "rb") as f:  # a clock the shell can read without a fork
        uptime = float(f.read().split()[0])
    until = round((uptime + give_up_at - now) * 100)
    env = dict(os.environ)
    facts = {**facts, "waited_from": now, "give_up_at": give_up_at, "places": places}
    env[WAITING_ENV] = json.dumps(facts)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    directory = str(_directory(state))
    argv = ["sh", "-c", WAITER, "tasty-oneshot-wait", directory, str(places), str(ticket)]
    argv.append(str(until))
    # What is at 7 and 8 now (asyncio's own descriptors, perhaps) is put back if exec fails.
    wanted = {LOCK_FD: _dup_high(lock_fd), TICKET_FD: _dup_high(ticket_fd)}
    saved = {fd: _dup_high(fd) for fd in wanted if _is_open(fd)}
    for fd, source in wanted.items():
        os.dup2(source, fd)
    try:
        os.execve("/bin/sh", argv + command, env)
    except OSError:
        for fd in wanted:
            if fd in saved:
                os.dup2(saved[fd], fd, inheritable=False)
            else:
                os.close(fd)
        raise
    finally:  # reached only when the exec failed
        ticket.unlink(missing_ok=True)
        for fd in (*wanted.values(), *saved.values(), ticket_fd):
            os.close(fd)


def _dup_high(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def resumed(state: Path, job: str) -> Resumed | None:
    """The run this process resumes after WAITER, if it is one; the variables are removed
    from the environment (nothing this run starts sees them). A wait this process did not
    begin (descriptors that are not its locks) is a usage error."""
    facts_text = os.environ.pop(WAITING_ENV, None)
    ended = os.environ.pop(WAIT_END_ENV, None)
    if facts_text is None:
        return None
    from tasty_oneshot.errors import UsageError
    from tasty_oneshot.lock import lock_path

    problem = f"${WAITING_ENV}: not a wait for a place that this process began"
    try:
        facts = json.loads(facts_text)
        how, _, detail = (ended or "").partition(" ")
        lock_fd = LOCK_FD if _holds(LOCK_FD, lock_path(state, job)) else -1
        place = None
        if how == "place":
            index = int(detail)
            if _holds(PLACE_FD, _directory(state) / f"{index}.lock"):
                place = Place(PLACE_FD, index)
        slot = facts["slot"]
        result = Resumed(
            ended=how,
            place=place,
            signal=detail if how == "signal" else None,
            slot=datetime.fromisoformat(slot) if slot else None,
            started_at=datetime.fromisoformat(facts["started_at"]),
            started=float(facts["started"]),
            waited=time.monotonic() - float(facts["waited_from"]),
            give_up_at=float(facts["give_up_at"]),
            places=int(facts["places"]),
            lock_fd=lock_fd,
        )
    except (ValueError, KeyError, TypeError, OSError):
        raise UsageError(problem) from None
    valid_end = how in ("busy", "signal") or place is not None
    if lock_fd < 0 or not valid_end or (how == "signal" and detail not in SIGNALS):
        raise UsageError(problem)
    os.set_inheritable(LOCK_FD, False)  # nothing this run starts inherits them
    if place is not None:
        os.set_inheritable(PLACE_FD, False)
    return result


SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")


def _holds(fd: int, path: Path) -> bool:
    """Whether `fd` is open on the file at `path` and this process holds its flock."""
    try:
        info, there = os.fstat(fd), os.lstat(path)
        if (info.st_dev, info.st_ino) != (there.st_dev, there.st_ino):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: succeeds at once
    except OSError:
        return False
    return True
