"""A run resumed after its wait for a place outside Python (see waiter.py): the same run,
started again by `exec` once the wait ended. Its slot, its lock and the market were settled
before the wait; what remains is the place, then the agent."""

import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tasty_oneshot import WAITING_ENV, agent_phase, places
from tasty_oneshot.errors import EXIT_LOCKED
from tasty_oneshot.outcome import Outcome, record, stopped_before_the_agent

if TYPE_CHECKING:
    from tasty_oneshot.invocation import Invocation
    from tasty_oneshot.waiter import Resumed

log = logging.getLogger("tasty_oneshot")


def resumed(state: Path, job: str) -> "Resumed | None":
    """What the wait handed on, when this process is the same run after its wait for a
    place; else None (a run like any other)."""
    if WAITING_ENV not in os.environ:
        return None
    from tasty_oneshot import waiter

    return waiter.resumed(state, job)


def after_the_wait(run: "Invocation", resumed: "Resumed") -> int:
    """The place (unless the wait gave up on it, or the run was stopped meanwhile), then the
    agent; the exit code."""
    import tasty_oneshot
    from tasty_oneshot.lock import JobLock
    from tasty_oneshot.waiter import LOCK_FD

    run.slot = resumed.slot
    lock = JobLock.adopted(run.state, run.job.name, LOCK_FD)
    stopped_by = resumed.signal
    if tasty_oneshot.early_signals:  # while this process started again
        stopped_by = signal.Signals(tasty_oneshot.early_signals[0]).name
    place = resumed.place
    try:
        if place is not None and (stopped_by or time.monotonic() >= resumed.give_up_at):
            place.release()  # it came too late, or the run was stopped meanwhile
            place = None
        if stopped_by is not None:
            return record(run, stopped_before_the_agent(signal.Signals[stopped_by]))
        if place is None:
            log.info("gave up waiting for a place after %.1fs", resumed.waited)
            reason = places.busy_reason(resumed.places, resumed.waited)
            return record(run, Outcome("skipped", reason, EXIT_LOCKED, ping="log"))
        log.info("got place %d after waiting %.1fs", place.index, resumed.waited)
        run.place = place
        return record(run, agent_phase.enter(run, None))
    finally:
        lock.release()
