"""One invocation of `tasty-oneshot run`, start to exit code.

Read top to bottom: load the job, check the slot, take the lock, check the market, run the
agent, record, exit. Each step is a call into the module named after it. Nothing heavy is
imported before the market says the agent will run, so a skip stays light.
"""

import logging
import os
import shlex
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from tasty_oneshot import paths, secrets
from tasty_oneshot.agent import check_ready
from tasty_oneshot.errors import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_TIMEOUT,
    UsageError,
    one_line,
)
from tasty_oneshot.jobs import SCHEDULE_KEYS, Job, load_env_file, load_jobs_file, resolve_job
from tasty_oneshot.ledger import Ledger, Usage
from tasty_oneshot.lock import JobLock, JobLocked
from tasty_oneshot.market import Credentials, cached_verdict
from tasty_oneshot.notify import notify_outcome
from tasty_oneshot.schedule import check_slot, now_nyc

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


class Outcome(NamedTuple):
    status: str  # ok, failed, skipped, timeout, interrupted
    reason: str
    exit_code: int
    output: str | None = None
    usage: Usage = Usage()
    cost: float | None = None


def load_job(request: RunRequest, *, cache: bool = False) -> Job:
    """The job to run: env files loaded, the jobs file read, the command line applied.

    With `cache`, the parsed jobs file is cached in the state directory.
    """
    if request.env_file:
        load_env_file(Path(request.env_file), required=True)
    load_env_file(Path(".env"), required=False)
    config = paths.config_path(request.config)
    cache_dir = paths.state_dir() if cache and config else None
    jobs_file = load_jobs_file(config, cache_dir) if config else None
    return resolve_job(
        jobs_file,
        job_name=request.job,
        instructions=request.instructions,
        name=request.name,
        options=request.options,
    )


def run(request: RunRequest) -> int:
    """One invocation: check the job, then slot, lock, market, agent; record; exit code."""
    started_at, started = now_nyc(), time.monotonic()
    job = load_job(request, cache=True)
    secrets.register_environment()
    secrets.register_urls(job.notify)
    if job.mcp is not None and job.mcp.url:  # a remote server's URL may carry a token
        secrets.register_urls((job.mcp.url,))
    if not request.scheduled and any(k in request.options for k in SCHEDULE_KEYS):
        raise UsageError(
            "schedule flags need a timer: run the job now without them, or schedule it with: "
            + generate_units_command(request, job)
        )
    if request.scheduled and job.schedule.is_empty:
        raise UsageError(f"--scheduled: job {job.name} has no schedule for a timer to keep")
    check_ready(job)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Until the agent phase installs its own handlers, SIGTERM stops the run right here.
    signal.signal(signal.SIGTERM, _raise_interrupted)
    deadline = started + job.timeout
    invocation = Invocation(job, request, paths.state_dir(), started_at, deadline)
    log.info("job %s: %s", job.name, job.schedule.describe())
    try:
        return _slot_lock_market_agent(invocation)
    except (KeyboardInterrupt, Interrupted) as exc:
        sigint = isinstance(exc, KeyboardInterrupt)
        name, code = ("SIGINT", EXIT_SIGINT) if sigint else ("SIGTERM", EXIT_SIGTERM)
        reason = f"stopped by {name} before the agent started"
        return invocation.record(Outcome("interrupted", reason, code))
    finally:
        invocation.ledger.close()
        for sig, handler in handlers.items():  # as they were, for a caller in this process
            signal.signal(sig, handler)


def _slot_lock_market_agent(run: "Invocation") -> int:
    """Each step may end the run: the slot guard, the lock, the market, then the agent."""
    job = run.job
    if run.request.scheduled:
        check = check_slot(job.schedule, run.started_at, job.max_delay)
        if check.skip_reason:
            return run.record(Outcome("skipped", check.skip_reason, EXIT_OK))
        run.slot = check.slot

    lock = JobLock(run.state, job.name)
    try:
        lock.acquire()
    except JobLocked:
        reason = f"another run of {job.name} holds {lock.path}"
        return run.record(Outcome("locked", reason, EXIT_LOCKED))
    try:
        if run.slot is not None and run.ledger.slot_used(job.name, run.slot):
            reason = f"slot {run.slot.isoformat()} already done"
            return run.record(Outcome("skipped", reason, EXIT_OK))
        if not job.ignore_market_hours:
            # Most skips are decided here, from today's cached session, with nothing heavy
            # imported (not even asyncio).
            verdict = cached_verdict(run.market_time, run.state / "market", Credentials.from_env())
            if verdict is not None and not verdict.open:
                return run.record(Outcome("skipped", verdict.describe(), EXIT_OK))
        import asyncio  # here, not at the top: a skip must stay light

        return run.record(asyncio.run(_stoppable(run)))
    finally:
        lock.release()


class Invocation:
    """One `run` of a job: where its state lives, and what it has done so far (so a run
    stopped midway can still be recorded whole)."""

    def __init__(
        self, job: Job, request: RunRequest, state: Path, started_at: datetime, deadline: float
    ) -> None:
        self.job, self.request, self.state = job, request, state
        self.ledger = Ledger(state)
        self.started_at, self.deadline = started_at, deadline
        # The fire time this run keeps, once the slot guard found it.
        self.slot: datetime | None = None
        self.run_id: int | None = None  # the ledger row, once the agent starts
        self.usage = Usage()
        self.cost: float | None = None
        self.notes: list[str] = []  # what became of the agent's own notify calls
        self.exit_code: int | None = None  # set once the outcome is recorded

    @property
    def market_time(self) -> datetime:
        """The market is judged at the slot's fire time, or now without a slot."""
        return self.slot or now_nyc()

    def start_agent(self) -> None:
        """Record that the agent is starting: from now on the slot is used up."""
        self.run_id = self.ledger.start(
            self.job.name,
            started_at=self.started_at,
            slot=self.slot,
            model=self.job.model,
            trading=self.job.trading,
            scheduled=self.request.scheduled,
            pid=os.getpid(),
        )

    def record(self, outcome: Outcome) -> int:
        """Record the outcome, print the agent's output, alert if asked to; the exit code.

        Once: a signal that arrives after this began cannot turn a finished run into an
        interrupted one; signals are ignored from here to the exit.
        """
        if self.exit_code is not None:
            return self.exit_code
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        level = logging.INFO if outcome.exit_code in (EXIT_OK, EXIT_LOCKED) else logging.ERROR
        log.log(
            logging.WARNING if outcome.status == "locked" else level,
            "%s: %s",
            outcome.status,
            outcome.reason,
        )
        job = self.job
        if self.run_id is None:
            self.run_id = self.ledger.record(
                job.name,
                outcome.status,
                outcome.reason,
                started_at=self.started_at,
                finished_at=now_nyc(),
                exit_code=outcome.exit_code,
                slot=self.slot,
                model=job.model,
                scheduled=self.request.scheduled,
                trading=job.trading,
                pid=os.getpid(),
            )
        else:
            self.ledger.finish(
                self.run_id,
                outcome.status,
                outcome.reason,
                finished_at=now_nyc(),
                exit_code=outcome.exit_code,
                output=outcome.output,
                usage=outcome.usage,
                cost=outcome.cost,
            )
        if self.notes:  # the agent's own notify calls, recorded with the outcome
            self.ledger.note_notify(self.run_id, "; ".join(self.notes))
        self.exit_code = outcome.exit_code
        # Signals stay ignored: the outcome is decided and recorded, and the alert below
        # gives up within seconds, so the exit code always agrees with the ledger.
        if outcome.output is not None:
            shown = secrets.redact(outcome.output)
            sys.stdout.write(shown.rstrip("\n") + "\n")
            sys.stdout.flush()
        text = outcome.output if outcome.status == "ok" else outcome.reason
        alerted = notify_outcome(job.notify, job.notify_on, job.name, outcome.status, text or "")
        if alerted:
            self.ledger.note_notify(self.run_id, "; ".join([*self.notes, alerted]))
        return outcome.exit_code


class Interrupted(Exception):
    """SIGTERM arrived before the agent phase took over signal handling."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted


async def _stoppable(run: Invocation) -> Outcome:
    """The market check and the agent, stopped by the timeout, SIGTERM or SIGINT."""
    import asyncio

    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []
    work = asyncio.ensure_future(_market_then_agent(run))

    def stop(why: str) -> None:
        if not stopped_by:
            stopped_by.append(why)
            work.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
    loop.call_later(max(0.0, run.deadline - time.monotonic()), stop, "timeout")
    try:
        return await work
    except asyncio.CancelledError:
        if not stopped_by:  # cancelled from inside a library, not by us
            return Outcome("failed", "error: the run was cancelled", EXIT_FAILED)
        outcome = {
            "timeout": Outcome(
                "timeout", f"passed its timeout of {run.job.timeout:g}s", EXIT_TIMEOUT
            ),
            "SIGTERM": Outcome("interrupted", "stopped by SIGTERM", EXIT_SIGTERM),
            "SIGINT": Outcome("interrupted", "stopped by SIGINT", EXIT_SIGINT),
        }[stopped_by[0]]
        return outcome._replace(usage=run.usage, cost=run.cost)


async def _market_then_agent(run: Invocation) -> Outcome:
    job = run.job
    if not job.ignore_market_hours:
        from tasty_oneshot.market import MarketCheckError, check_market

        try:
            verdict = await check_market(
                run.market_time, run.state / "market", Credentials.from_env()
            )
        except MarketCheckError as exc:
            return Outcome("failed", f"market check failed: {exc}", EXIT_FAILED)
        log.info(verdict.describe())
        if not verdict.open:
            return Outcome("skipped", verdict.describe(), EXIT_OK)

    from tasty_oneshot.agent import AgentFailed, run_agent

    if time.monotonic() >= run.deadline:  # a blocking step (an import) used up the time
        return Outcome("timeout", f"passed its timeout of {job.timeout:g}s", EXIT_TIMEOUT)
    previous = run.ledger.last_success(job.name) if job.remember == "last" else None
    run.start_agent()
    log.info("running the agent (model %s, trading %s)", job.model, job.trading)
    try:
        result = await run_agent(job, now_nyc(), run.state / "logs", run, previous)
    except AgentFailed as exc:
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
