"""One invocation of `tasty-oneshot run`, start to exit code.

Read top to bottom: load the job, check the slot, take the lock, check the market, run the
agent (agent_phase.py), record (outcome.py), exit. Each step is a call into the module named
after it; a run resumed after its wait for a place goes on in resume.py. Nothing heavy is
imported before the market says the agent will run, so a skip stays light.
"""

import logging
import os
import shlex
import signal
import time
from pathlib import Path
from typing import Any

from tasty_oneshot import agent_phase, paths, places, resume, secrets
from tasty_oneshot.agent import check_ready
from tasty_oneshot.env_file import load_env_file
from tasty_oneshot.errors import EXIT_LOCKED, EXIT_OK, UsageError
from tasty_oneshot.invocation import Invocation, RunRequest
from tasty_oneshot.jobs import SCHEDULE_KEYS, Job
from tasty_oneshot.jobs_file import (
    JobsFile,
    load_defaults,
    load_jobs_file,
    notify_sources,
    resolve_job,
)
from tasty_oneshot.ledger import LEDGER_ENV, ledger_url
from tasty_oneshot.ledger.rows import host_name
from tasty_oneshot.lock import JobLocked
from tasty_oneshot.market import Credentials, Verdict, cached_verdict
from tasty_oneshot.notify import check_urls
from tasty_oneshot.outcome import STOP_SIGNALS, Outcome, record, stopped_before_the_agent
from tasty_oneshot.schedule import check_slot, now_nyc

log = logging.getLogger("tasty_oneshot")


def load_job(request: RunRequest) -> tuple[Job, JobsFile | None]:
    """The job to run, and the jobs file it came from: env files loaded first, the whole jobs
    file read and checked, the command line applied."""
    if request.env_file:
        load_env_file(Path(request.env_file), required=True)
    load_env_file(Path(".env"), required=False)
    adhoc = request.job is None and request.instructions is not None
    config = paths.adhoc_config_path(request.config) if adhoc else paths.config_path(request.config)
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
        resumed = resume.resumed(state, job.name)  # the same run, after its wait for a place
        if resumed is not None:
            started_at, started = resumed.started_at, resumed.started
        invocation = Invocation(job, request, state, url, started_at, started + job.timeout)
        invocation.max_parallel, invocation.resumed = max_parallel, resumed
        try:
            return _slot_lock_market_agent(invocation)
        except (KeyboardInterrupt, Interrupted) as exc:
            sig = signal.Signals(exc.signum) if isinstance(exc, Interrupted) else signal.SIGINT
            return record(invocation, stopped_before_the_agent(sig))
        finally:
            invocation.close()
    finally:
        for sig, handler in handlers.items():  # as they were, for a caller in this process
            signal.signal(sig, handler)


def _slot_lock_market_agent(run: Invocation) -> int:
    """Each step may end the run: the slot guard, the lock, the market, then the agent."""
    job = run.job
    if run.resumed is not None:
        return resume.after_the_wait(run, run.resumed)
    if run.request.scheduled:
        check = check_slot(job.schedule, run.started_at, job.max_delay)
        if check.skip_reason:
            return record(run, Outcome("skipped", check.skip_reason, EXIT_OK))
        run.slot = check.slot
    verdict = None
    if not job.ignore_market_hours:
        # Most skips are decided here, from the day's cached session, with nothing heavy
        # imported (not even asyncio) and no remote ledger reached.
        verdict = cached_verdict(run.market_time, run.state / "market", Credentials.from_env())
        if verdict is not None and not verdict.open:
            return record(run, Outcome("skipped", verdict.describe(), EXIT_OK, ping="success"))

    # The slot before the lock: hosts that fire it together skip as `already done` rather
    # than being refused the lock; a run that ends before its agent starts gives it back.
    if run.slot is not None and not run.claim_slot():
        reason = f"slot {run.slot.isoformat()} already done"
        return record(run, Outcome("skipped", reason, EXIT_OK))
    try:
        return _lock_market_agent(run, verdict)
    finally:
        run.give_back_slot()


def _lock_market_agent(run: Invocation, verdict: Verdict | None) -> int:
    job = run.job
    lock = run.lock = run.ledger.job_lock(job.name)
    try:
        lock.acquire()
    except JobLocked as exc:
        return record(run, Outcome("locked", exc.describe(job.name), EXIT_LOCKED, ping="log"))
    try:
        log.info("job %s: %s", job.name, job.schedule.describe())
        # Holding the job's lock: any run of it still `running` in the ledger is dead.
        run.ledger.abandon_dead(job.name, os.getpid(), host_name())
        return record(run, agent_phase.enter(run, verdict))
    finally:
        lock.release()


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived before the agent phase took over signal handling."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = STOP_SIGNALS[signal.Signals(signum)]


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


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
