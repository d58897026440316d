"""The agent phase of a run: the market check (unless the day's cached session settled it),
a place (when places are capped), the MCP server, pydantic-ai and the agent, all in one event
loop that the timeout, SIGTERM, SIGINT and SIGHUP stop.

The MCP server starts as soon as the run knows the agent will run, and imports its world while
this process imports pydantic-ai (in a thread, so a timeout or a signal still stops the run).
Nothing here is imported at the top that a skip would pay for: asyncio comes in with the phase.
"""

import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tasty_oneshot import paths, places
from tasty_oneshot.errors import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_TIMEOUT, one_line
from tasty_oneshot.market import Credentials, Verdict
from tasty_oneshot.outcome import STOP_SIGNALS, Outcome
from tasty_oneshot.schedule import now_nyc

if TYPE_CHECKING:
    from tasty_oneshot.invocation import Invocation
    from tasty_oneshot.mcp_server import StdioServer

log = logging.getLogger("tasty_oneshot")


def enter(run: "Invocation", verdict: Verdict | None) -> Outcome:
    """The agent phase, to its outcome; `verdict`: the market's, when the cache had it."""
    import asyncio  # here, not at the top: a skip must stay light
    import gc

    if not gc.isenabled():  # the CLI's own process, which starts with it off (see __main__)
        # A run may last minutes and allocate without bound from here. What was imported
        # so far stays for the process's life: set aside, never scanned again.
        gc.freeze()
        gc.enable()

    return asyncio.run(_stoppable(run, verdict))


async def _stoppable(run: "Invocation", verdict: Verdict | None) -> Outcome:
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


async def _market_then_agent(run: "Invocation", verdict: Verdict | None) -> Outcome:
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


async def _take_place(run: "Invocation", count: int) -> places.Place:
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


def _start_server(run: "Invocation") -> "StdioServer | None":
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
