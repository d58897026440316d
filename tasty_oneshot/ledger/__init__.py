"""The run ledger: one row per invocation that got past argument checks.

One small interface, two implementations chosen once, in `open_ledger`: SQLite in the state
directory (the default, one host) and PostgreSQL (hosts that share it share everything the
ledger decides). The runner never learns which it has.

A run that starts the agent is written twice: a `running` row that claims its slot before
the agent starts (so the slot counts as used even if the process is killed), then its outcome.
A `running` row whose process is gone is reported as `abandoned` once nobody holds the job's
lock; the next run of the job, holding that lock, records it so.
"""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tasty_oneshot.schedule import NYC

STATUSES = ("ok", "failed", "skipped", "locked", "timeout", "interrupted", "running", "abandoned")
AGENT_STATUSES = ("ok", "failed", "timeout", "interrupted", "running", "abandoned")


class Usage(NamedTuple):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0


class RunStart(NamedTuple):
    """What is known of an invocation when it begins."""

    job: str
    started_at: datetime
    slot: datetime | None = None
    model: str | None = None
    trading: str | None = None
    scheduled: bool = False
    pid: int = 0
    host: str = ""


class Finish(NamedTuple):
    """How a run that started the agent ended."""

    status: str
    reason: str
    finished_at: datetime
    exit_code: int
    output: str | None = None
    usage: Usage = Usage()
    cost: float | None = None


class StatusFacts(NamedTuple):
    """One job's rows, as `status` reads them."""

    last: dict[str, Any] | None  # the newest row, as history --json shows it
    last_ok_at: str | None
    agent_statuses: list[str]  # statuses of the runs that started the agent, newest first
    first_scheduled_utc: str | None  # when the job's first scheduled run started
    used_slots: set[str]  # UTC ISO of the slots claimed since the time asked for


class JobLockLike(Protocol):
    def acquire(self) -> None: ...  # raises lock.JobLocked when another run holds it
    def release(self) -> None: ...


class Ledger(Protocol):
    where: str  # the file or the database, for messages (never a password)

    def job_lock(self, job: str) -> JobLockLike: ...
    def claim(self, start: RunStart) -> int | None: ...
    def give_back(self, run_id: int) -> None: ...  # a claim whose agent never started
    def record(
        self, start: RunStart, status: str, reason: str, finished_at: datetime, exit_code: int
    ) -> int: ...
    def record_kept(
        self, start: RunStart, status: str, reason: str, finished_at: datetime, exit_code: int
    ) -> None: ...
    def finish(self, run_id: int, finish: Finish) -> bool: ...
    def restore(self, row: dict[str, Any]) -> None: ...  # a kept outcome (spool.py)
    def import_rows(self, rows: list[dict[str, Any]]) -> int: ...
    def note_notify(self, run_id: int, text: str) -> None: ...
    def abandon_dead(self, job: str, pid: int, host: str) -> int: ...
    def slot_used(self, job: str, slot: datetime) -> bool: ...
    def last_success(self, job: str) -> tuple[str, str] | None: ...
    def runs(
        self,
        job: str | None = None,
        limit: int | None = None,
        since: datetime | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]: ...
    def totals(self, job: str | None, since: datetime | None) -> list[dict[str, Any]]: ...
    def status_facts(self, job: str, since: datetime) -> StatusFacts: ...
    def close(self) -> None: ...


LEDGER_ENV = "TASTY_ONESHOT_LEDGER"


def start_columns(start: RunStart, status: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A new row's columns (masked), for either ledger; `agent=1` marks a claim."""
    from tasty_oneshot.secrets import redact

    return {
        "job": start.job,
        "status": status,
        "reason": redact(reason),
        "slot": iso(start.slot),
        "slot_utc": utc(start.slot) if start.slot else None,
        "agent_started": extra.pop("agent", 0),
        "started_at": iso(start.started_at),
        "started_utc": utc(start.started_at),
        "model": start.model,
        "trading": start.trading,
        "scheduled": int(start.scheduled),
        "pid": start.pid,
        "host": start.host,
        **extra,
    }


# The columns an outcome sets, in the order of finish_values, for either ledger's UPDATE.
FINISH_COLUMNS = (
    "status",
    "reason",
    "finished_at",
    "exit_code",
    "output",
    "requests",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "cost",
)


def finish_values(finish: Finish) -> tuple[Any, ...]:
    """An outcome's values (masked), in the order of FINISH_COLUMNS."""
    from tasty_oneshot.secrets import redact

    usage = finish.usage
    return (
        finish.status,
        redact(finish.reason),
        iso(finish.finished_at),
        finish.exit_code,
        redact(finish.output),
        usage.requests,
        usage.input_tokens,
        usage.output_tokens,
        usage.tool_calls,
        finish.cost,
    )


# Why a row shows as `abandoned`: seen from its lock (nobody holds it), or marked so by the
# next run of the job (which holds it).
ABANDONED_SHOWN = "abandoned: its process is gone and holds no lock"
ABANDONED_MARKED = "abandoned: its process ended without recording an outcome (killed?)"


def filters(job: str | None, since: datetime | None, mark: str) -> tuple[str, list[Any]]:
    """The WHERE clause (with its parameters, `mark` their placeholder) for a job and a time."""
    where, params = [], []
    if job:
        where.append(f"job = {mark}")
        params.append(job)
    if since:
        where.append(f"started_utc >= {mark}")
        params.append(utc(since))
    return (" WHERE " + " AND ".join(where) if where else ""), params


def totals_sql(table: str, where: str) -> str:
    """Per job: runs, runs that started the agent, tokens, cost and how many were priced."""
    return (
        "SELECT job, COUNT(*) AS runs, SUM(agent_started) AS agent_runs,"
        " SUM(input_tokens + output_tokens) AS tokens, SUM(cost) AS cost,"
        f" COUNT(cost) AS priced FROM {table}{where} GROUP BY job ORDER BY job"
    )


def ledger_url(configured: str | None = None) -> str | None:
    """The PostgreSQL ledger's URL: $TASTY_ONESHOT_LEDGER, else the jobs file's `ledger`;
    None for the SQLite ledger in the state directory."""
    url = os.environ.get(LEDGER_ENV) or configured
    if url and not url.startswith(("postgresql://", "postgres://")):
        from tasty_oneshot.errors import UsageError

        raise UsageError(f"${LEDGER_ENV}: expected a postgresql:// URL")
    return url or None


def open_ledger(state: Path, url: str | None = None, deadline: float | None = None) -> Ledger:
    """The configured ledger, with any outcome an earlier run could not write written in.
    A PostgreSQL ledger connects when first used, not here (a skip may never need it); none
    of its operations outlives `deadline` (monotonic, a run's own) by more than a moment."""
    if url:
        from tasty_oneshot.ledger.postgres import PostgresLedger

        return PostgresLedger(state, url, deadline)  # registers its passwords as secrets
    from tasty_oneshot.ledger.sqlite import SqliteLedger

    ledger = SqliteLedger(state)
    try:
        if _has_kept_outcomes(state):
            from tasty_oneshot.spool import replay

            replay(state, ledger)
    except BaseException:
        ledger.close()
        raise
    return ledger


def _has_kept_outcomes(state: Path) -> bool:
    """Whether STATE/spool holds anything to write in (cheap: most runs find it empty). The
    set-aside damaged files do not count; a reservation does (a dead one is cleaned up)."""
    try:
        with os.scandir(state / "spool") as entries:
            return any(entry.name != "damaged" for entry in entries)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # let the spool module say what is wrong with it


def host_name() -> str:
    return os.uname().nodename


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 with offset, in NYC time, to the second."""
    return moment.astimezone(NYC).isoformat(timespec="seconds") if moment else None


def utc(moment: datetime) -> str:
    """UTC ISO-8601, for comparing times across daylight-saving offsets."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def row_json(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger row as `history --json` gives it."""
    return {
        "id": row["id"],
        "job": row["job"],
        "status": row["status"],
        "reason": row["reason"],
        "slot": row["slot"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "exit_code": row["exit_code"],
        "output": row["output"],
        "model": row["model"],
        "trading": row["trading"],
        "scheduled": bool(row["scheduled"]),
        "host": row["host"],
        "usage": {
            "requests": row["requests"],
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "tool_calls": row["tool_calls"],
        },
        "cost": row["cost"],
        "notify": row["notify"],
    }


def dumps(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2)
