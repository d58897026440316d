"""One `run` of a job as it goes: what the command line asked for (RunRequest), and what the
run has done so far (Invocation: its slot's claim, its ledger row, the space kept for its
outcome, its place), carried from step to step."""

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tasty_oneshot import places
from tasty_oneshot.errors import StateFault
from tasty_oneshot.jobs import Job
from tasty_oneshot.ledger import open_ledger
from tasty_oneshot.ledger.rows import RunStart, Usage, host_name
from tasty_oneshot.schedule import now_nyc

if TYPE_CHECKING:
    from tasty_oneshot.ledger.spool import Reservation
    from tasty_oneshot.waiter import Resumed

log = logging.getLogger("tasty_oneshot")


class RunRequest(NamedTuple):
    """What the command line asked for; `options` holds only the job keys it gave."""

    instructions: str | None = None
    job: str | None = None
    name: str | None = None
    config: str | None = None
    env_file: str | None = None
    scheduled: bool = False
    options: dict[str, Any] = {}  # noqa: RUF012 (read, never mutated)
    # The command line that runs this invocation again, to resume it after a wait for a
    # place outside Python (empty: the run waits in this process).
    command: tuple[str, ...] = ()


class Invocation:
    """One `run` of a job: where its state lives, and what it has done so far (so a run
    stopped midway can still be recorded whole)."""

    def __init__(
        self,
        job: Job,
        request: RunRequest,
        state: Path,
        ledger_url: str | None,
        started_at: datetime,
        deadline: float,
    ) -> None:
        self.job, self.request, self.state = job, request, state
        self.started_at, self.deadline = started_at, deadline
        self.ledger = open_ledger(state, ledger_url, deadline)
        # The fire time this run keeps, once the slot guard found it.
        self.slot: datetime | None = None
        self.run_id: int | None = None  # the ledger row, once the agent starts
        self.slot_claim: int | None = None  # that row while it only claims the slot
        self.reservation: Reservation | None = None  # space for the outcome, meanwhile
        self.usage = Usage()
        self.cost: float | None = None
        self.notes: list[str] = []  # what became of the agent's own notify calls
        self.exit_code: int | None = None  # set once the outcome is recorded
        self.max_parallel: int | None = None  # the host-wide cap on running agents, if any
        self.resumed: Resumed | None = None  # after a wait for a place outside Python
        self.lock: Any = None  # the job's lock, once taken
        # The place, once taken: held until the process ends (not released when the agent
        # is done, so that a run that still holds pydantic-ai's memory keeps its place).
        self.place: places.Place | None = None
        self.pinger = None
        if job.ping:
            from tasty_oneshot.ping import Pinger

            self.pinger = Pinger(job.ping)

    def give_up_waiting_at(self) -> float:
        """When a run waiting for a place gives up (monotonic): its slot's window ends at the
        fire time plus max_delay; a run without a slot waits at most until its timeout (a
        second early, so it ends as `busy`, not as a timeout)."""
        limit = self.deadline - 1.0
        if self.slot is not None:
            left = (self.slot.astimezone(UTC) - datetime.now(UTC)).total_seconds()
            limit = min(limit, time.monotonic() + left + self.job.max_delay)
        return limit

    @property
    def market_time(self) -> datetime:
        """The market is judged at the slot's fire time, or now without a slot."""
        return self.slot or now_nyc()

    def start(self) -> RunStart:
        return RunStart(
            job=self.job.name,
            started_at=self.started_at,
            slot=self.slot,
            model=self.job.model,
            trading=self.job.trading,
            scheduled=self.request.scheduled,
            pid=os.getpid(),
            host=host_name(),
        )

    def reserve(self) -> None:
        """Keep space for the outcome, before anything of the agent starts."""
        from tasty_oneshot.ledger.spool import Reservation

        self.reservation = Reservation(self.state)

    def claim_slot(self) -> bool:
        """Claim the slot, before the job's lock: other invocations of it skip from now on.
        False: another run has it. Held until the agent starts (then the slot is used up)
        or given back (`give_back_slot`) by a run that ends before."""
        self.slot_claim = self.ledger.claim(self.start())
        return self.slot_claim is not None

    def give_back_slot(self) -> None:
        """The slot's claim, given back by a run that did not start its agent (refused the
        lock, a skip, a wait outside Python, exit 2): it does not use the slot up."""
        claim, self.slot_claim = self.slot_claim, None
        if claim is not None and self.run_id is None:
            try:
                self.ledger.give_back(claim)
            except StateFault as exc:
                log.warning("%s; the slot stays claimed (as by a run that was killed)", exc)

    def claim(self) -> bool:
        """Record that the agent is starting (its slot claimed now, if not yet): from now on
        the slot is used up. False: another run has the slot."""
        run_id = self.slot_claim
        if run_id is None:
            run_id = self.ledger.claim(self.start())
        if run_id is None:
            return False
        self.run_id = run_id
        return True

    def close(self) -> None:
        if self.reservation is not None:
            self.reservation.discard()
        if self.place is not None and not self.request.command:  # an in-process caller
            self.place.release()  # (the CLI keeps its place until its process ends)
        self.ledger.close()
