"""How a run ended, and the recording of it: the ledger (or the spool, when the ledger cannot
take it), the log line, the agent's output on stdout, the ping, the alert.

Recorded once: a signal that arrives once recording began cannot turn a finished run into
an interrupted one.
"""

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from tasty_oneshot import secrets
from tasty_oneshot.errors import (
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SIGHUP,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    StateFault,
)
from tasty_oneshot.ledger.rows import Finish, Usage
from tasty_oneshot.notify import notify_outcome
from tasty_oneshot.schedule import now_nyc

if TYPE_CHECKING:
    from tasty_oneshot.invocation import Invocation

log = logging.getLogger("tasty_oneshot")

# The signals that stop a run, and the exit code each gives (SIGHUP: an ssh session closed).
STOP_SIGNALS = {
    signal.SIGTERM: EXIT_SIGTERM,
    signal.SIGINT: EXIT_SIGINT,
    signal.SIGHUP: EXIT_SIGHUP,
}


class Outcome(NamedTuple):
    status: str  # ok, failed, skipped, locked, timeout, interrupted
    reason: str
    exit_code: int
    output: str | None = None
    usage: Usage = Usage()
    cost: float | None = None
    ping: str | None = None  # a skip's dead-man's-switch ping: "success", "log" or none


def stopped_before_the_agent(sig: signal.Signals) -> Outcome:
    return Outcome(
        "interrupted", f"stopped by {sig.name} before the agent started", STOP_SIGNALS[sig]
    )


def record(run: "Invocation", outcome: Outcome) -> int:
    """Record the outcome, print the agent's output, alert if asked to; the exit code.

    Once: a signal that arrives after this began cannot turn a finished run into an
    interrupted one; signals are ignored from here to the exit. An outcome the ledger
    cannot take is kept for the next invocation; it is printed and alerted all the same.
    """
    if run.exit_code is not None:
        return run.exit_code
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    level = logging.INFO if outcome.exit_code in (EXIT_OK, EXIT_LOCKED) else logging.ERROR
    if outcome.status == "locked" or outcome.reason.startswith("busy:"):
        level = logging.WARNING
    hint = ""
    if outcome.status == "skipped" and not run.request.scheduled:
        level = logging.WARNING  # a person at a terminal: say why nothing ran
        if outcome.ping == "success":  # the market is closed
            hint = "; to run it now anyway: --ignore-market-hours"
    elif outcome.reason.startswith(("off schedule", "stale")) and started_by_hand():
        level = logging.WARNING  # `systemctl start` of a timer's service: a run was expected
        hint = (
            "; this service was started by hand, not by its timer, and keeps the timer's "
            f"slot guard: to run the job now, tasty-oneshot run --job {run.job.name}"
        )
    log.log(level, "%s: %s%s", outcome.status, outcome.reason, hint)
    run.exit_code = outcome.exit_code
    if run.run_id is None:
        _keep_or_warn(
            lambda: run.ledger.record(
                run.start(), outcome.status, outcome.reason, now_nyc(), outcome.exit_code
            )
        )
    else:
        _finish(run, outcome)
    if outcome.output is not None:
        print_output(outcome.output)
    _ping(run, outcome)
    text = outcome.output if outcome.status == "ok" else outcome.reason
    job = run.job
    alerted = notify_outcome(job.notify, job.notify_on, job.name, outcome.status, text or "")
    notes = [*run.notes, alerted] if alerted else run.notes
    run_id = run.run_id
    if notes and run_id is not None:
        _keep_or_warn(lambda: run.ledger.note_notify(run_id, "; ".join(notes)))
    return outcome.exit_code


def _ping(run: "Invocation", outcome: Outcome) -> None:
    """The dead-man's switch: the exit of a run that started the agent; a market-closed
    skip is a success, a lock refusal a log entry; a slot-guard skip says nothing."""
    if run.pinger is None:
        return
    if run.run_id is not None:
        text = outcome.output if outcome.status == "ok" else outcome.reason
        run.pinger.exit(outcome.exit_code, text or "")
    elif outcome.ping == "success":
        run.pinger.success(outcome.reason)
    elif outcome.ping == "log":
        run.pinger.log(outcome.reason)


def _finish(run: "Invocation", outcome: Outcome) -> None:
    run_id, reservation = run.run_id, run.reservation
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
        run.ledger.finish(run_id, finish)
    except StateFault as exc:
        try:
            kept = reservation.keep(run.ledger.where, run_id, finish, run.start())
        except OSError as err:
            log.error("%s; the outcome could not be kept either (%s)", exc, err.strerror)
        else:
            log.warning("%s; the outcome is kept in %s for the next run to write in", exc, kept)
    else:
        reservation.discard()


def _keep_or_warn(write: Callable[[], object]) -> None:
    try:
        write()
    except StateFault as exc:
        log.warning("%s; not recorded", exc)


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
