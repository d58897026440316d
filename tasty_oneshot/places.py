"""A host-wide cap on agents running at once: `max_parallel` places, one flock each.

A run that will start its agent takes a place (STATE/places/N.lock) first; the kernel frees
it however the run ends, SIGKILL included. A run that finds every place taken waits, holding
nothing else (no MCP server, no model request): it writes a ticket in STATE/places/queue,
named by its fire time, and holds a flock on it while it waits. Tickets go in fire-time
order: only the earliest live ticket may take a place that comes free, so the waiting runs
go ahead in the order of their fire times, not in the order the kernel wakes them. A ticket
whose process is gone (its flock released) is removed by the next waiter that sees it: its
flock is tried, not looked up in /proc/locks, which the units' sandbox hides (ProcSubset=pid).
Anything in the queue or among the places that is not a regular file of this user's (a FIFO,
a directory, a link) is refused, never opened. The CLI waits outside Python instead
(waiter.py), in the same order.
"""

import fcntl
import logging
import os
import time
from datetime import datetime
from pathlib import Path

from tasty_oneshot import paths

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
    """A free place at once, if there is one and no run waits for one (the common case);
    a run that finds others waiting queues behind those with earlier fire times."""
    directory = places_dir(state)
    if _first_live(paths.private_dir(directory / "queue")) is not None:
        return None
    return _try_places(directory, places)


async def take_place(state: Path, places: int, order: datetime, give_up_at: float) -> Place:
    """A place among `places`, waiting in this process in `order` (the fire time) behind
    earlier runs; Busy when none came free before the monotonic time `give_up_at`."""
    import asyncio  # a run that takes a place is past the skip path

    place = try_places(state, places)
    if place is not None:
        return place
    ticket, fd = take_ticket(places_dir(state), order)
    directory = ticket.parent.parent
    started = time.monotonic()
    log.info(
        "waiting for one of %d places (max_parallel): taken, or promised to earlier runs", places
    )
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


def places_dir(state: Path) -> Path:
    return paths.private_dir(paths.private_dir(state / "places"))


def take_ticket(directory: Path, order: datetime) -> tuple[Path, int]:
    """A ticket in the queue, named by the fire time (microseconds) and the pid, both
    zero-padded so that names sort as numbers, with its flock held. It is locked under a
    hidden name and then renamed: a ticket in the queue that is not locked is a dead one."""
    queue = paths.private_dir(directory / "queue")
    name = f"{round(order.timestamp() * 1e6):020d}-{os.getpid():010d}"
    hidden = queue / f".{name}"
    fd = paths.open_private(hidden, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(hidden, queue / name)
    except BaseException:  # a signal, say: no ticket, not even a hidden one, is left
        hidden.unlink(missing_ok=True)
        os.close(fd)
        raise
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
    """The earliest ticket whose run still waits; tickets of dead runs are removed. Anything
    in the queue that is not a regular file of this user's is refused (exit 2) first."""
    names = sorted(n for n in os.listdir(queue) if not n.startswith("."))
    for name in names:
        paths.make_private(queue / name)  # checked without opening it (a FIFO would block)
    for name in names:
        if _is_live(queue / name):
            return name
    return None


def _is_live(ticket: Path) -> bool:
    """Whether the run that took `ticket` still waits: it holds the ticket's flock, so a try
    for a shared one fails. A ticket is locked before it gets its name, so a try never takes
    a live run's ticket from under it. A dead run's ticket is removed."""
    try:
        fd = paths.open_private(ticket, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    ticket.unlink(missing_ok=True)
    return False


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
