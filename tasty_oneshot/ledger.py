"""The run ledger: one SQLite row per invocation that got past argument checks.

WAL mode and a busy timeout make it safe for several jobs writing at once. A run that starts
the agent is written twice: a 'running' row before the agent starts (so the slot counts as
used even if the process is killed), then its outcome.
"""

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from tasty_oneshot.schedule import NYC
from tasty_oneshot.secrets import redact

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    slot TEXT,
    agent_started INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    exit_code INTEGER,
    output TEXT,
    model TEXT,
    trading TEXT,
    scheduled INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    tool_calls INTEGER NOT NULL DEFAULT 0,
    cost REAL,
    pid INTEGER,
    notify TEXT,
    started_utc TEXT
);
CREATE INDEX IF NOT EXISTS runs_job_slot ON runs (job, slot);
CREATE INDEX IF NOT EXISTS runs_job_id ON runs (job, id);
"""
FILE_NAME = "ledger.sqlite3"


class Usage(NamedTuple):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 with offset, in NYC time, to the second."""
    return moment.astimezone(NYC).isoformat(timespec="seconds") if moment else None


class Ledger:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 30000")
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(SCHEMA)
        # A ledger from an older version lacks the newer columns: add them.
        have = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        for column, kind in (("notify", "TEXT"), ("started_utc", "TEXT")):
            if column not in have:
                self._db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._db.close()

    def record(
        self,
        job: str,
        status: str,
        reason: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        exit_code: int,
        slot: datetime | None = None,
        model: str | None = None,
        scheduled: bool = False,
        **extra: Any,
    ) -> int:
        """Record an invocation that ended without starting the agent (skips, lock refusals)."""
        return self._insert(
            job=job,
            status=status,
            reason=redact(reason),
            slot=iso(slot),
            started_at=iso(started_at),
            started_utc=utc(started_at),
            finished_at=iso(finished_at),
            exit_code=exit_code,
            model=model,
            scheduled=int(scheduled),
            **extra,
        )

    def start(
        self,
        job: str,
        *,
        started_at: datetime,
        slot: datetime | None,
        model: str | None,
        trading: str,
        scheduled: bool,
        pid: int,
    ) -> int:
        """Record that the agent is starting: from now on the slot is used up."""
        return self._insert(
            job=job,
            status="running",
            reason="agent started",
            slot=iso(slot),
            agent_started=1,
            started_at=iso(started_at),
            started_utc=utc(started_at),
            model=model,
            trading=trading,
            scheduled=int(scheduled),
            pid=pid,
        )

    def finish(
        self,
        run_id: int,
        status: str,
        reason: str,
        *,
        finished_at: datetime,
        exit_code: int,
        output: str | None,
        usage: Usage,
        cost: float | None,
    ) -> None:
        self._db.execute(
            "UPDATE runs SET status=?, reason=?, finished_at=?, exit_code=?, output=?,"
            " requests=?, input_tokens=?, output_tokens=?, tool_calls=?, cost=? WHERE id=?",
            (
                status,
                redact(reason),
                iso(finished_at),
                exit_code,
                redact(output),
                usage.requests,
                usage.input_tokens,
                usage.output_tokens,
                usage.tool_calls,
                cost,
                run_id,
            ),
        )

    def note_notify(self, run_id: int, text: str) -> None:
        """What became of the run's own notifications (sent, failed, timed out)."""
        self._db.execute("UPDATE runs SET notify=? WHERE id=?", (redact(text), run_id))

    def last_success(self, job: str) -> tuple[str, str] | None:
        """The finish time and output of the job's latest successful run, if any."""
        row = self._db.execute(
            "SELECT finished_at, output FROM runs WHERE job=? AND status='ok' AND output IS NOT"
            " NULL ORDER BY id DESC LIMIT 1",
            (job,),
        ).fetchone()
        return (row["finished_at"], row["output"]) if row else None

    def totals(self, job: str | None, since: datetime | None) -> list[dict[str, Any]]:
        """Per job: runs, tokens and cost (None when no run's cost is known)."""
        where, params = self._filters(job, since)
        sql = (
            "SELECT job, COUNT(*) AS runs, SUM(input_tokens + output_tokens) AS tokens,"
            " SUM(cost) AS cost, COUNT(cost) AS priced, SUM(agent_started) AS agent_runs"
            " FROM runs" + where + " GROUP BY job ORDER BY job"
        )
        return [dict(row) for row in self._db.execute(sql, params)]

    def slot_used(self, job: str, slot: datetime) -> bool:
        """Whether an earlier invocation of this job started the agent for this slot."""
        row = self._db.execute(
            "SELECT 1 FROM runs WHERE job=? AND slot=? AND agent_started=1 LIMIT 1",
            (job, iso(slot)),
        ).fetchone()
        return row is not None

    def runs(
        self, job: str | None = None, limit: int | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Runs, newest first, as the contract's JSON objects."""
        where, params = self._filters(job, since)
        sql = "SELECT * FROM runs" + where + " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [_as_json(row) for row in self._db.execute(sql, params)]

    @staticmethod
    def _filters(job: str | None, since: datetime | None) -> tuple[str, list[Any]]:
        where, params = [], []
        if job:
            where.append("job = ?")
            params.append(job)
        if since:
            where.append("started_utc >= ?")
            params.append(utc(since))
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def _insert(self, **columns: Any) -> int:
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO runs ({names}) VALUES ({marks})"
        cur = self._db.execute(sql, list(columns.values()))
        if cur.lastrowid is None:
            raise sqlite3.DatabaseError("the ledger gave no id for the row just inserted")
        return cur.lastrowid


def utc(moment: datetime) -> str:
    """UTC ISO-8601, for comparing times across daylight-saving offsets."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _as_json(row: sqlite3.Row) -> dict[str, Any]:
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
