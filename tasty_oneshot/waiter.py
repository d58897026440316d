"""Waiting for a place outside Python: a run of the CLI that finds every place of
`max_parallel` taken replaces itself (exec, the same process) with a small POSIX shell loop
(WAITER) that waits with util-linux's flock(1), about 2 MB instead of about 25 MB. The job's
lock and the ticket stay held across the exec (the open file descriptions are inherited).
When the loop has a place, gives up, meets something among the places that is not a file of
ours, or is stopped by a signal, it replaces itself with the same command line again, which
resumes the run where it was left (`resumed`). Without /bin/sh, flock(1) or sleep(1), and
with a PostgreSQL ledger (whose job lock belongs to a connection, which an exec would drop),
the run waits in Python (places.take_place).
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
from typing import NamedTuple, NoReturn

from tasty_oneshot import WAITING_ENV  # what the run knew before it began to wait (JSON)
from tasty_oneshot.places import Place, places_dir, take_ticket

log = logging.getLogger("tasty_oneshot")

# How the wait ended: "place N", "busy", "signal NAME", "untrusted PATH".
WAIT_END_ENV = "TASTY_ONESHOT_WAIT_END"
LOCK_FD, TICKET_FD, PLACE_FD = 7, 8, 9  # where the job's lock, the ticket and the place are
HIGH_FD = 100  # copies made for the handover go at or above this, out of the way
SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")  # the stops the loop records

# $1 places directory, $2 places, $3 ticket, $4 seconds until it gives up, then the command
# that resumes the run. Nothing is read from /proc (the units' ProcSubset=pid hides most of
# it): the deadline is a `sleep` started at once (`timer`), and a ticket is dead when a try
# for its flock succeeds. The first live ticket tries the places every 0.1 s; every later one
# sleeps in flock(1) on the first's ticket until it is gone (it got a place or died), a
# second at a time. Waits run in the background with `wait`, so that a signal ends them at
# once (a signal that comes just before `wait` begins is seen within that second); they hold
# none of the run's descriptors (the job's lock, the ticket, stdout), so none outlives the
# run. Only regular files of this user's are opened (`ours`): anything else in the queue or
# among the places (a FIFO would block the open) ends the wait, and the run refuses it.
WAITER = r"""
umask 077
dir=$1 n=$2 ticket=$3 secs=$4
shift 4
stop= end= bg=
halt() { stop=$1; if [ -n "$bg" ]; then kill "$bg" 2>/dev/null; fi; }
trap 'halt TERM' TERM
trap 'halt HUP' HUP
trap 'halt INT' INT
ours() { [ -f "$1" ] && [ ! -h "$1" ] && [ -O "$1" ]; }
there() { [ -e "$1" ] || [ -h "$1" ]; }
sleep "$secs" </dev/null >/dev/null 2>&1 7<&- 8<&- &
timer=$!
while [ -z "$stop" ]; do
    if ! kill -0 "$timer" 2>/dev/null; then end=busy; break; fi
    first=
    for t in "$dir"/queue/[0-9]*; do
        there "$t" || continue
        if ! ours "$t"; then end="untrusted $t"; break 2; fi
        if [ "$t" != "$ticket" ] && { flock -s -n 9; } 2>/dev/null 9<"$t"; then
            rm -f -- "$t"
            continue
        fi
        first=$t
        break
    done
    if [ -z "$first" ] || [ "$first" = "$ticket" ]; then
        i=0
        while [ "$i" -lt "$n" ]; do
            place=$dir/$i.lock
            if there "$place" && ! ours "$place"; then end="untrusted $place"; break 2; fi
            if { command exec 9<>"$place"; } 2>/dev/null; then
                if flock -n 9; then end="place $i"; break 2; fi
                exec 9<&-
            fi
            i=$((i + 1))
        done
        sleep 0.1 </dev/null >/dev/null 2>&1 7<&- 8<&- &
    else
        { flock -s -w 1 9; } </dev/null >/dev/null 2>&1 7<&- 8<&- 9<"$first" &
    fi
    bg=$!
    if [ -n "$stop" ]; then kill "$bg" 2>/dev/null; fi
    wait "$bg"
    bg=
done
kill "$timer" 2>/dev/null
wait
if [ -n "$stop" ]; then end="signal SIG$stop"; exec 9<&-; fi
rm -f -- "$ticket"
exec 8<&-
TASTY_ONESHOT_WAIT_END=$end
export TASTY_ONESHOT_WAIT_END
exec "$@"
"""


class Resumed(NamedTuple):
    """A run resumed after its wait outside Python (its job's lock on LOCK_FD). Neither a
    place nor a signal: it gave up."""

    place: Place | None
    signal: str | None  # "SIGTERM", ... when a signal ended the wait
    slot: datetime | None
    started_at: datetime
    started: float  # monotonic, when the run began (before the wait)
    waited: float  # seconds
    give_up_at: float  # monotonic, as before the wait
    places: int


def can_wait_outside() -> bool:
    """Whether the wait can be left to the shell loop: /bin/sh, and flock(1) and sleep(1) on
    the PATH."""
    import shutil  # only a run that waits gets here

    tools = ("flock", "sleep")
    return os.access("/bin/sh", os.X_OK) and all(shutil.which(tool) for tool in tools)


def wait_outside(
    state: Path,
    places: int,
    order: datetime,
    give_up_at: float,
    lock_fd: int,
    facts: Mapping[str, object],
    command: list[str],
) -> None:
    """Take a ticket and replace this process with WAITER; never returns. If anything fails
    before the exec or in it (an OSError, a signal), the ticket is gone and every descriptor
    is as it was."""
    ticket, ticket_fd = take_ticket(places_dir(state), order)
    opened = [ticket_fd]  # closed if the exec does not happen
    placed: dict[int, int | None] = {}  # LOCK_FD, TICKET_FD: a copy of what was there, if any
    try:
        log.info(
            "waiting for one of %d places (max_parallel): taken, or promised to earlier runs",
            places,
        )
        now = time.monotonic()
        env = dict(os.environ)
        facts = {**facts, "waited_from": now, "give_up_at": give_up_at, "places": places}
        env[WAITING_ENV] = json.dumps(facts)
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        directory = str(places_dir(state))
        seconds = f"{max(0.0, give_up_at - now):.2f}"
        argv = ["sh", "-c", WAITER, "tasty-oneshot-wait", directory, str(places), str(ticket)]
        argv.append(seconds)
        # Copies first: the lock or the ticket may itself be at 7 or 8.
        wanted = {LOCK_FD: _dup_high(lock_fd), TICKET_FD: _dup_high(ticket_fd)}
        opened += wanted.values()
        for fd, source in wanted.items():
            # What is at 7 and 8 now (asyncio's own descriptors, perhaps) is put back after.
            before = _dup_high(fd) if _is_open(fd) else None
            if before is not None:
                opened.append(before)
            os.dup2(source, fd)
            placed[fd] = before
        os.execve("/bin/sh", argv + command, env)
    finally:  # reached only when the exec did not happen
        for fd, before in placed.items():
            if before is None:
                os.close(fd)
            else:
                os.dup2(before, fd, inheritable=False)
        ticket.unlink(missing_ok=True)
        for fd in opened:
            os.close(fd)


def _dup_high(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)


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
        locked = _holds(LOCK_FD, lock_path(state, job))
        place: Place | None = None
        if how == "place":
            index = int(detail)
            if _holds(PLACE_FD, places_dir(state) / f"{index}.lock"):
                place = Place(PLACE_FD, index)
        slot = facts["slot"]
        result = Resumed(
            place=place,
            signal=detail if how == "signal" else None,
            slot=datetime.fromisoformat(slot) if slot else None,
            started_at=datetime.fromisoformat(facts["started_at"]),
            started=float(facts["started"]),
            waited=time.monotonic() - float(facts["waited_from"]),
            give_up_at=float(facts["give_up_at"]),
            places=int(facts["places"]),
        )
    except (ValueError, KeyError, TypeError, OSError):
        raise UsageError(problem) from None
    valid_end = how in ("busy", "signal", "untrusted") or place is not None
    if not locked or not valid_end or (how == "signal" and detail not in SIGNALS):
        raise UsageError(problem)
    if how == "untrusted":
        _refuse(places_dir(state), Path(detail), problem)
    os.set_inheritable(LOCK_FD, False)  # nothing this run starts inherits them
    if place is not None:
        os.set_inheritable(PLACE_FD, False)
    return result


def _refuse(directory: Path, path: Path, problem: str) -> NoReturn:
    """The wait ended at `path`, in the places or their queue, which is not a regular file of
    this user's (WAITER never opens such a thing): exit 2 naming it and the fix."""
    from tasty_oneshot import paths
    from tasty_oneshot.errors import UsageError

    if path.parent not in (directory, directory / "queue"):
        raise UsageError(problem)
    paths.make_private(path)  # the refusal that names what it is, if it is still there
    import shlex

    raise paths.untrusted(
        path, "is not a regular file of this user's", f"rm {shlex.quote(str(path))}"
    )


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
