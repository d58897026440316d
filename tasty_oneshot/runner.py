"""One invocation of `tasty-oneshot run`, start to exit code.

Read top to bottom: load the job, check the slot, take the lock, check the market, run the
agent, record, exit. Each step is a call into the module named after it. Nothing heavy is
imported before the market says the agent will run, so a skip stays light; once it will run,
the MCP server starts at once and imports its world while this process imports pydantic-ai.
"""

import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from tasty_oneshot import WAITING_ENV, paths, places, secrets
from tasty_oneshot.agent import check_ready
from tasty_oneshot.env_file import load_env_file
from tasty_oneshot.errors import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SIGHUP,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_TIMEOUT,
    StateFault,
    UsageError,
    one_line,
)
from tasty_oneshot.jobs import SCHEDULE_KEYS, Job, resolve_job
from tasty_oneshot.jobs_file import JobsFile, load_defaults, load_jobs_file, notify_sources
from tasty_oneshot.ledger import LEDGER_ENV, ledger_url, open_ledger
from tasty_oneshot.ledger.rows import Finish, RunStart, Usage, host_name
from tasty_oneshot.lock import JobLocked
from tasty_oneshot.market import Credentials, Verdict, cached_verdict
from tasty_oneshot.notify import check_urls, notify_outcome
from tasty_oneshot.schedule import check_slot, now_nyc

if TYPE_CHECKING:
    from tasty_oneshot.ledger.spool import Reservation
    from tasty_oneshot.mcp_server import StdioServer
    from tasty_oneshot.waiter import Resumed

log = logging.getLogger("tasty_oneshot")
T = TypeVar("T")

# The signals that stop a run, and the exit code each gives (SIGHUP: an ssh session closed).
STOP_SIGNALS = {
    signal.SIGTERM: EXIT_SIGTERM,
    signal.SIGINT: EXIT_SIGINT,
    signal.SIGHUP: EXIT_SIGHUP,
}


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


class Outcome(NamedTuple):
    status: str  # ok, failed, skipped, locked, timeout, interrupted
    reason: str
    exit_code: int
    output: str | None = None
    usage: Usage = Usage()
    cost: float | None = None
    ping: str | None = None  # a skip's dead-man's-switch ping: "success", "log" or none


def load_job(request: RunRequest) -> tuple[Job, JobsFile | None]:
    """The job to run, and the jobs file it came from: env files loaded first, the whole jobs
    file read and checked, the command line applied."""
    if request.env_file:
        load_env_file(Path(request.env_file), required=True)
    load_env_file(Path(".env"), required=False)
    config = paths.config_path(request.config)
    jobs_file = load_jobs_file(config) if config else None
    job = resolve_job(
        jobs_file,
        job_name=request.job,
        instructions=request.instructions,
        name=request.name,
        options=request.options,
    )
    return job, jobs_file


def file_jobs(
    config: str | None,
    names: list[str],
    *,
    scheduled_only: bool,
    options: dict[str, Any] | None = None,
) -> list[Job]:
    """The jobs file's jobs named (all, without names; only those with a schedule, with
    `scheduled_only`), for the commands that look at several jobs."""
    load_env_file(Path(".env"), required=False)
    path = paths.config_path(config)
    if path is None:
        raise UsageError(f"no jobs file found: {paths.where_looked()}")
    jobs_file = load_jobs_file(path)
    chosen = names or sorted(jobs_file.jobs)
    jobs = [
        resolve_job(jobs_file, job_name=name, instructions=None, name=None, options=options or {})
        for name in dict.fromkeys(chosen)
    ]
    if scheduled_only and not names:
        jobs = [job for job in jobs if not job.schedule.is_empty]
    if not jobs:
        raise UsageError(f"{path}: no {'scheduled ' if scheduled_only else ''}jobs")
    return jobs


def configured_ledger(config: str | None) -> str | None:
    """The PostgreSQL ledger's URL for the commands that only read the ledger: the
    environment's, else the jobs file's `ledger` key (when a jobs file is found)."""
    load_env_file(Path(".env"), required=False)
    if os.environ.get(LEDGER_ENV):
        return ledger_url()
    path = paths.config_path(config)
    return ledger_url(load_defaults(path).get("ledger") if path else None)


def run(request: RunRequest) -> int:
    """One invocation: check the job, then slot, lock, market, agent; record; exit code."""
    started_at, started = now_nyc(), time.monotonic()
    job, jobs_file = load_job(request)
    secrets.register_environment()
    secrets.register_urls(job.notify)
    if job.mcp is not None and job.mcp.url:  # a remote server's URL may carry a token
        secrets.register_urls((job.mcp.url,))
    if job.ping:
        secrets.register_urls((job.ping,))
    if not request.scheduled and any(k in request.options for k in SCHEDULE_KEYS):
        raise UsageError(
            "schedule flags need a timer: run the job now without them, or schedule it with: "
            + generate_units_command(request, job)
        )
    if request.scheduled and job.schedule.is_empty:
        raise UsageError(f"--scheduled: job {job.name} has no schedule for a timer to keep")
    check_ready(job)
    state = paths.state_dir()
    check_urls(notify_sources(jobs_file, request.options), state)
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    # Until the agent phase installs its own handlers, SIGTERM and SIGHUP stop the run here.
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGHUP, _raise_interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        defaults = jobs_file.defaults if jobs_file else {}
        url = ledger_url(defaults.get("ledger"))
        max_parallel = places.configured(defaults.get("max_parallel"))
        resumed = None
        if WAITING_ENV in os.environ:  # the same run, after its wait for a place
            from tasty_oneshot import waiter

            resumed = waiter.resumed(state, job.name)
        if resumed is not None:
            started_at, started = resumed.started_at, resumed.started
        invocation = Invocation(job, request, state, url, started_at, started + job.timeout)
        invocation.max_parallel, invocation.resumed = max_parallel, resumed
        try:
            return _slot_lock_market_agent(invocation)
        except (KeyboardInterrupt, Interrupted) as exc:
            sig = signal.Signals(exc.signum) if isinstance(exc, Interrupted) else signal.SIGINT
            return invocation.record(_stopped_before_the_agent(sig))
        finally:
            invocation.close()
    finally:
        for sig, handler in handlers.items():  # as they were, for a caller in this process
            signal.signal(sig, handler)


def _slot_lock_market_agent(run: "Invocation") -> int:
    """Each step may end the run: the slot guard, the lock, the market, then the agent."""
    job = run.job
    if run.resumed is not None:
        return _after_the_wait(run, run.resumed)
    if run.request.scheduled:
        check = check_slot(job.schedule, run.started_at, job.max_delay)
        if check.skip_reason:
            return run.record(Outcome("skipped", check.skip_reason, EXIT_OK))
        run.slot = check.slot
    verdict = None
    if not job.ignore_market_hours:
        # Most skips are decided here, from the day's cached session, with nothing heavy
        # imported (not even asyncio) and no remote ledger reached.
        verdict = cached_verdict(run.market_time, run.state / "market", Credentials.from_env())
        if verdict is not None and not verdict.open:
            return run.record(Outcome("skipped", verdict.describe(), EXIT_OK, ping="success"))

    # The slot before the lock: hosts that fire it together skip as `already done` rather
    # than being refused the lock; a run that ends before its agent starts gives it back.
    if run.slot is not None and not run.claim_slot():
        reason = f"slot {run.slot.isoformat()} already done"
        return run.record(Outcome("skipped", reason, EXIT_OK))
    try:
        return _lock_market_agent(run, verdict)
    finally:
        run.give_back_slot()


def _lock_market_agent(run: "Invocation", verdict: Verdict | None) -> int:
    job = run.job
    lock = run.lock = run.ledger.job_lock(job.name)
    try:
        lock.acquire()
    except JobLocked as exc:
        return run.record(Outcome("locked", exc.describe(job.name), EXIT_LOCKED, ping="log"))
    try:
        log.info("job %s: %s", job.name, job.schedule.describe())
        # Holding the job's lock: any run of it still `running` in the ledger is dead.
        run.ledger.abandon_dead(job.name, os.getpid(), host_name())
        import asyncio  # here, not at the top: a skip must stay light

        return run.record(asyncio.run(_stoppable(run, verdict)))
    finally:
        lock.release()


def _stopped_before_the_agent(sig: signal.Signals) -> "Outcome":
    return Outcome(
        "interrupted", f"stopped by {sig.name} before the agent started", STOP_SIGNALS[sig]
    )


def _after_the_wait(run: "Invocation", resumed: "Resumed") -> int:
    """The run resumed after waiting for a place outside Python: its slot, its lock and the
    market were settled before the wait; what remains is the place, then the agent."""
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
            return run.record(_stopped_before_the_agent(signal.Signals[stopped_by]))
        if place is None:
            log.info("gave up waiting for a place after %.1fs", resumed.waited)
            reason = places.busy_reason(resumed.places, resumed.waited)
            return run.record(Outcome("skipped", reason, EXIT_LOCKED, ping="log"))
        log.info("got place %d after waiting %.1fs", place.index, resumed.waited)
        run.place = place
        import asyncio

        return run.record(asyncio.run(_stoppable(run, None)))
    finally:
        lock.release()


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

    def record(self, outcome: Outcome) -> int:
        """Record the outcome, print the agent's output, alert if asked to; the exit code.

        Once: a signal that arrives after this began cannot turn a finished run into an
        interrupted one; signals are ignored from here to the exit. An outcome the ledger
        cannot take is kept for the next invocation; it is printed and alerted all the same.
        """
        if self.exit_code is not None:
            return self.exit_code
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        level = logging.INFO if outcome.exit_code in (EXIT_OK, EXIT_LOCKED) else logging.ERROR
        if outcome.status == "locked" or outcome.reason.startswith("busy:"):
            level = logging.WARNING
        hint = ""
        if outcome.status == "skipped" and not self.request.scheduled:
            level = logging.WARNING  # a person at a terminal: say why nothing ran
            if outcome.ping == "success":  # the market is closed
                hint = "; to run it now anyway: --ignore-market-hours"
        elif outcome.reason.startswith(("off schedule", "stale")) and started_by_hand():
            level = logging.WARNING  # `systemctl start` of a timer's service: a run was expected
            hint = (
                "; this service was started by hand, not by its timer, and keeps the timer's "
                f"slot guard: to run the job now, tasty-oneshot run --job {self.job.name}"
            )
        log.log(level, "%s: %s%s", outcome.status, outcome.reason, hint)
        self.exit_code = outcome.exit_code
        if self.run_id is None:
            self._keep_or_warn(
                lambda: self.ledger.record(
                    self.start(), outcome.status, outcome.reason, now_nyc(), outcome.exit_code
                )
            )
        else:
            self._finish(outcome)
        if outcome.output is not None:
            print_output(outcome.output)
        self._ping(outcome)
        text = outcome.output if outcome.status == "ok" else outcome.reason
        job = self.job
        alerted = notify_outcome(job.notify, job.notify_on, job.name, outcome.status, text or "")
        notes = [*self.notes, alerted] if alerted else self.notes
        run_id = self.run_id
        if notes and run_id is not None:
            self._keep_or_warn(lambda: self.ledger.note_notify(run_id, "; ".join(notes)))
        return outcome.exit_code

    def _ping(self, outcome: Outcome) -> None:
        """The dead-man's switch: the exit of a run that started the agent; a market-closed
        skip is a success, a lock refusal a log entry; a slot-guard skip says nothing."""
        if self.pinger is None:
            return
        if self.run_id is not None:
            text = outcome.output if outcome.status == "ok" else outcome.reason
            self.pinger.exit(outcome.exit_code, text or "")
        elif outcome.ping == "success":
            self.pinger.success(outcome.reason)
        elif outcome.ping == "log":
            self.pinger.log(outcome.reason)

    def _finish(self, outcome: Outcome) -> None:
        run_id, reservation = self.run_id, self.reservation
        assert run_id is not None and reservation is not None
        finish = Finish(
            status=outcome.status,
            reason=outcome.reason,
            finished_at=now_nyc(),
            exit_code=outcome.exit_code,
            output=outcome.output,
            usage=outcome.usage,
            cost=outcome.cost,
        )
        try:
            self.ledger.finish(run_id, finish)
        except StateFault as exc:
            try:
                kept = reservation.keep(self.ledger.where, run_id, finish, self.start())
            except OSError as err:
                log.error("%s; the outcome could not be kept either (%s)", exc, err.strerror)
            else:
                log.warning("%s; the outcome is kept in %s for the next run to write in", exc, kept)
        else:
            reservation.discard()

    @staticmethod
    def _keep_or_warn(write: Callable[[], object]) -> None:
        try:
            write()
        except StateFault as exc:
            log.warning("%s; not recorded", exc)

    def close(self) -> None:
        if self.reservation is not None:
            self.reservation.discard()
        if self.place is not None and not self.request.command:  # an in-process caller
            self.place.release()  # (the CLI keeps its place until its process ends)
        self.ledger.close()


def started_by_hand() -> bool:
    """A service systemd started (it sets $INVOCATION_ID) that no timer triggered (a timer
    sets $TRIGGER_UNIT): `systemctl start tasty-oneshot-NAME.service`."""
    return bool(os.environ.get("INVOCATION_ID")) and not os.environ.get("TRIGGER_UNIT")


def print_output(output: str) -> None:
    """The agent's answer on stdout. A stdout that cannot take it (`> /dev/full`, a closed
    pipe, `>&-`) does not change the outcome: the ledger has it, and stderr says so."""
    from tasty_oneshot import stdio, terminal

    sys.stdout.write(terminal.lines(secrets.redact(output)).rstrip("\n") + "\n")
    sys.stdout.flush()
    if stdio.failure is not None:
        log.warning(
            "could not write the output to stdout (%s); it is in the ledger "
            "(tasty-oneshot history --json)",
            stdio.failure,
        )


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived before the agent phase took over signal handling."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = STOP_SIGNALS[signal.Signals(signum)]


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


async def _stoppable(run: Invocation, verdict: Verdict | None) -> Outcome:
    """The market check and the agent, stopped by the timeout, SIGTERM, SIGINT or SIGHUP."""
    import asyncio

    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []
    work = asyncio.ensure_future(_market_then_agent(run, verdict))

    def stop(why: str) -> None:
        if not stopped_by:
            stopped_by.append(why)
            work.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig.name)
    loop.call_later(max(0.0, run.deadline - time.monotonic()), stop, "timeout")
    try:
        return await work
    except asyncio.CancelledError:
        if not stopped_by:  # cancelled from inside a library, not by us
            return Outcome("failed", "error: the run was cancelled", EXIT_FAILED)
        why = stopped_by[0]
        if why == "timeout":
            outcome = Outcome(
                "timeout", f"passed its timeout of {run.job.timeout:g}s", EXIT_TIMEOUT
            )
        else:
            code = STOP_SIGNALS[signal.Signals[why]]
            outcome = Outcome("interrupted", f"stopped by {why}", code)
        return outcome._replace(usage=run.usage, cost=run.cost)


async def _market_then_agent(run: Invocation, verdict: Verdict | None) -> Outcome:
    job = run.job
    if not job.ignore_market_hours and run.resumed is None:  # resumed: judged before its wait
        if verdict is None:
            from tasty_oneshot.market import MarketCheckError, check_market

            try:
                verdict = await check_market(
                    run.market_time, run.state / "market", Credentials.from_env()
                )
            except MarketCheckError as exc:
                return Outcome("failed", f"market check failed: {exc}", EXIT_FAILED)
        log.info(verdict.describe())
        if not verdict.open:
            return Outcome("skipped", verdict.describe(), EXIT_OK, ping="success")

    # The run goes ahead. The MCP server starts now and imports its world while this process
    # imports pydantic-ai (in a thread, so a timeout or a signal still stops the run).
    if time.monotonic() >= run.deadline:  # a blocking step (the calendar) used up the time
        return Outcome("timeout", f"passed its timeout of {job.timeout:g}s", EXIT_TIMEOUT)
    if run.max_parallel is not None and run.place is None:
        try:
            run.place = await _take_place(run, run.max_parallel)
        except places.Busy as exc:
            return Outcome("skipped", str(exc), EXIT_LOCKED, ping="log")
    return await _agent(run)


async def _take_place(run: Invocation, count: int) -> places.Place:
    """A place among `count`: at once, or after a wait in fire-time order. The CLI waits
    outside Python (see places); a run whose job lock is a PostgreSQL connection's, or one
    called in-process, waits here."""
    place = places.try_places(run.state, count)
    if place is not None:
        return place
    give_up_at = run.give_up_waiting_at()
    from tasty_oneshot import waiter

    lock_fd = getattr(run.lock, "fd", None)
    if run.request.command and isinstance(lock_fd, int) and waiter.can_wait_outside():
        facts = {
            "slot": run.slot.isoformat() if run.slot else None,
            "started_at": run.started_at.isoformat(),
            "started": run.deadline - run.job.timeout,
        }
        command = list(run.request.command)
        # A stop that already arrived is acted on here (the loop runs its handler at this
        # await), never lost in the exec.
        import asyncio

        await asyncio.sleep(0)
        await asyncio.sleep(0)
        run.give_back_slot()  # the resumed process claims it again for its agent
        try:
            waiter.wait_outside(
                run.state, count, run.market_time, give_up_at, lock_fd, facts, command
            )
        except OSError as exc:
            log.warning("could not wait outside Python (%s): waiting here", exc.strerror)
    return await places.take_place(run.state, count, run.market_time, give_up_at)


async def _agent(run: "Invocation") -> Outcome:
    """Holding a place (if places are capped): the MCP server, pydantic-ai, the agent."""
    job = run.job
    run.reserve()
    server, stopped = _start_server(run), False
    try:
        agent = await in_thread(_import_agent)
        model = agent.resolve_model(job)  # a typo is exit 2 here, before the slot is used
        if time.monotonic() >= run.deadline:
            return Outcome("timeout", f"passed its timeout of {job.timeout:g}s", EXIT_TIMEOUT)
        previous = run.ledger.last_success(job.name) if job.remember == "last" else None
        if not run.claim():
            return Outcome("skipped", "slot already done (by another invocation)", EXIT_OK)
        if server is not None:
            server.log.begin(run.run_id)
        if run.pinger is not None:
            run.pinger.start()
        log.info("running the agent (model %s, trading %s)", job.model, job.trading)
        try:
            result = await agent.run_agent(job, model, server, now_nyc(), run, previous)
        except agent.AgentFailed as exc:
            return Outcome("failed", exc.reason, EXIT_FAILED, usage=exc.usage, cost=exc.cost)
        except Exception as exc:  # anything unforeseen is a failed run, never a crash
            return Outcome("failed", f"error: {one_line(exc)}", EXIT_FAILED)
        return Outcome(
            "ok",
            "the agent finished",
            EXIT_OK,
            output=result.output,
            usage=result.usage,
            cost=result.cost,
        )
    except BaseException:  # cancelled by the timeout or a signal: no grace for the server
        stopped = True
        if server is not None:
            server.stop(graceful=False)
        raise
    finally:
        if server is not None and not stopped:
            server.stop()


def _start_server(run: Invocation) -> "StdioServer | None":
    """Spawn the job's stdio MCP server (None for a remote one); its log names the run."""
    from tasty_oneshot.mcp_server import StdioServer, command_and_args
    from tasty_oneshot.server_log import ServerLog

    if run.job.mcp is not None and run.job.mcp.url:
        return None
    command, args = command_and_args(run.job.mcp)
    logs = paths.private_dir(run.state / "logs")
    server = StdioServer(command, args, ServerLog(logs / f"{run.job.name}.mcp.log"))
    server.start()
    return server


def _import_agent() -> Any:
    import tasty_oneshot.agent as agent

    agent.import_pydantic_ai()
    return agent


async def in_thread[T](function: Callable[[], T]) -> T:
    """`function()` in a daemon thread: the event loop stays free to act on a timeout or a
    signal meanwhile, and the exit never waits for a thread it no longer needs."""
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            result = function()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=target, name="import", daemon=True).start()
    return await done


def _settle(future: Any, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def generate_units_command(request: RunRequest, job: Job) -> str:
    """The generate-units command that would schedule what this run was given."""
    words = ["tasty-oneshot", "generate-units"]
    if request.job:
        words += ["--job", request.job]
    else:
        words += [job.instructions, "--name", job.name]
    if request.config:
        words += ["--config", request.config]
    words += job.schedule.flags()
    if request.options.get("ignore_market_hours"):
        words.append("--ignore-market-hours")
    return shlex.join([*words, "--target", "systemd"])
