"""A ledger row, as both ledgers write and read it: what a run is known by when it starts,
how it ended, the columns they set, and the row as `history --json` shows it."""

import json
import os
from datetime import UTC, datetime
from typing import Any, NamedTuple

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


# Every column a row may be given (all but its id), for a row written whole (an import).
COLUMNS = [
    "job",
    "status",
    "reason",
    "slot",
    "slot_utc",
    "agent_started",
    "started_at",
    "started_utc",
    "finished_at",
    "exit_code",
    "output",
    "model",
    "trading",
    "scheduled",
    "requests",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "cost",
    "pid",
    "host",
    "notify",
    "source",
]


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
