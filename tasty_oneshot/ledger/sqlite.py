"""The SQLite ledger: STATE/ledger.sqlite3, one host; its job lock is a flock (lock.py).

WAL mode and a bounded busy wait make it safe for several jobs writing at once. The file
(and its -wal and -shm) must be a regular file of ours, like everything in the state
directory. Every SQLite failure becomes one line naming the file and what to do.
"""

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tasty_oneshot import paths
from tasty_oneshot.errors import StateFault
from tasty_oneshot.ledger.rows import (
    ABANDONED_MARKED,
    ABANDONED_SHOWN,
    COLUMNS,
    FINISH_COLUMNS,
    Finish,
    RunStart,
    StatusFacts,
    filters,
    finish_values,
    iso,
    row_json,
    start_columns,
    totals_sql,
    utc,
)
from tasty_oneshot.ledger.wait import wait_seconds
from tasty_oneshot.lock import JobLock, is_held, lock_path
from tasty_oneshot.secrets import redact

FILE_NAME = "ledger.sqlite3"
SCHEMA_VERSION = 4

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
    started_utc TEXT,
    host TEXT,
    slot_utc TEXT,
    source TEXT
);
CREATE INDEX IF NOT EXISTS runs_job_slot ON runs (job, slot);
CREATE INDEX IF NOT EXISTS runs_job_id ON runs (job, id);
CREATE INDEX IF NOT EXISTS runs_started_utc ON runs (started_utc);
"""
# Indexes on columns an older ledger gains in _migrate.
LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS runs_job_slot_utc ON runs (job, agent_started, slot_utc);
CREATE INDEX IF NOT EXISTS runs_job_scheduled ON runs (job, scheduled, started_utc);
CREATE UNIQUE INDEX IF NOT EXISTS runs_source ON runs (source) WHERE source IS NOT NULL;
"""
# Columns added since the first version, for ledgers written by it.
ADDED_COLUMNS = (
    ("notify", "TEXT"),
    ("started_utc", "TEXT"),
    ("host", "TEXT"),
    ("slot_utc", "TEXT"),
    ("source", "TEXT"),
)

T = TypeVar("T")


class SqliteLedger:
    def __init__(self, state: Path) -> None:
        wait_seconds()  # a bad $TASTY_ONESHOT_LEDGER_WAIT is exit 2 before any file is made
        self.state = state
        self.path = state / FILE_NAME
        self.where = str(self.path)
        self._db: sqlite3.Connection | None = None
        paths.check_private_file(self.path, create=True)
        for suffix in ("-wal", "-shm", "-journal"):
            paths.check_private_file(self.path.with_name(FILE_NAME + suffix))
        self._guard(self._open)
        # SQLite made them: private too, whatever the umask. Never open and close them here:
        # closing any descriptor of a file drops this process's POSIX locks on it, SQLite's
        # included, and another process would then rebuild the -shm under our mmap (SIGBUS).
        for suffix in ("-wal", "-shm"):
            paths.make_private(self.path.with_name(FILE_NAME + suffix))

    def _open(self) -> None:
        wait = wait_seconds()
        db = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        self._db = db
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._migrate(db)

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.executescript(SCHEMA)
        have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
        for column, kind in ADDED_COLUMNS:
            if column not in have:
                db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
        rows = db.execute("SELECT id, slot FROM runs WHERE slot IS NOT NULL AND slot_utc IS NULL")
        for run_id, slot in rows.fetchall():
            db.execute(
                "UPDATE runs SET slot_utc=? WHERE id=?", (utc(datetime.fromisoformat(slot)), run_id)
            )
        db.executescript(LATE_INDEXES)
        # A slot is claimed once; an old ledger may already hold two claims of one (on one
        # host the job lock keeps it so anyway).
        with contextlib.suppress(sqlite3.IntegrityError):
            db.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS runs_slot_claim ON runs (job, slot)"
                " WHERE agent_started = 1 AND slot IS NOT NULL"
            )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateFault(f"{self.path}: the run ledger is not open")
        return self._db

    def _guard(self, action: Callable[[], T]) -> T:
        """Run `action`, turning any SQLite failure into one line with what to do."""
        try:
            return action()
        except sqlite3.Error as exc:
            raise StateFault(describe(self.path, exc)) from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- the job lock and the slot ---------------------------------------------------------

    def job_lock(self, job: str) -> JobLock:
        return JobLock(self.state, job)

    def claim(self, start: RunStart) -> int | None:
        """A `running` row for a run that starts the agent: its slot is used from now on.
        None when an earlier run already claimed the slot."""
        try:
            return self._insert(start, "running", "agent started", agent=1)
        except sqlite3.IntegrityError:
            return None  # the unique claim of (job, slot): an earlier run has it
        except sqlite3.Error as exc:
            raise StateFault(describe(self.path, exc)) from None

    def give_back(self, run_id: int) -> None:
        """A claim whose run ended before its agent started: the slot is free again."""
        sql = "DELETE FROM runs WHERE id=? AND status IN ('running', 'abandoned')"
        self._guard(lambda: self.db.execute(sql, (run_id,)))

    def slot_used(self, job: str, slot: datetime) -> bool:
        """Whether an earlier invocation of this job started the agent for this slot."""
        sql = "SELECT 1 FROM runs WHERE job=? AND slot=? AND agent_started=1 LIMIT 1"
        return self._guard(lambda: self.db.execute(sql, (job, iso(slot))).fetchone()) is not None

    def abandon_dead(self, job: str, pid: int, host: str) -> int:
        """With the job's lock held: its other `running` rows belong to dead processes."""
        sql = (
            "UPDATE runs SET status='abandoned', reason=? WHERE job=? AND status='running'"
            " AND NOT (pid IS ? AND host IS ?)"
        )
        reason = ABANDONED_MARKED
        return self._guard(lambda: self.db.execute(sql, (reason, job, pid, host)).rowcount)

    # --- writing ------------------------------------------------------------------------------

    def record(
        self, start: RunStart, status: str, reason: str, finished_at: datetime, exit_code: int
    ) -> int:
        """An invocation that ended without starting the agent (a skip, a lock refusal)."""
        return self._guard(
            lambda: self._insert(
                start, status, reason, finished_at=iso(finished_at), exit_code=exit_code
            )
        )

    def record_kept(
        self, start: RunStart, status: str, reason: str, finished_at: datetime, exit_code: int
    ) -> None:
        self.record(start, status, reason, finished_at, exit_code)

    def import_rows(self, rows: list[dict[str, Any]]) -> int:
        """Rows of another ledger, each once (keyed by `source`); how many were new."""
        # Hosts that each had a ledger may both have run a slot: the second copy of the claim
        # is kept as a run (in history and the totals) but no longer claims the slot.
        claimed = (
            "SELECT 1 FROM runs WHERE job=? AND slot=? AND agent_started=1 AND source IS NOT ?"
            " LIMIT 1"
        )

        def write() -> int:
            added = 0
            with self.db:
                self.db.execute("BEGIN")
                for row in rows:
                    given = {c: row[c] for c in COLUMNS if row.get(c) is not None}
                    if given.get("agent_started") and given.get("slot"):
                        key = (given["job"], given["slot"], given.get("source"))
                        if self.db.execute(claimed, key).fetchone() is not None:
                            given = {**given, "slot": None, "slot_utc": None}
                    names, marks = ", ".join(given), ", ".join("?" for _ in given)
                    sql = f"INSERT OR IGNORE INTO runs ({names}) VALUES ({marks})"
                    added += self.db.execute(sql, list(given.values())).rowcount
            return added

        return self._guard(write)

    def finish(self, run_id: int, finish: Finish) -> bool:
        """The outcome of a claimed run; False when that row is no longer `running`."""
        assignments = ", ".join(f"{column}=?" for column in FINISH_COLUMNS)
        sql = f"UPDATE runs SET {assignments} WHERE id=? AND status IN ('running', 'abandoned')"
        values = (*finish_values(finish), run_id)
        return self._guard(lambda: self.db.execute(sql, values).rowcount) == 1

    def restore(self, row: dict[str, Any]) -> None:
        """A claimed run's outcome kept in the spool: its `running` row is finished; when that
        row is gone (the ledger was moved aside), the whole row goes in, once (keyed by its
        `source`). A slot another row claimed meanwhile stays that row's."""
        same_run = (
            "SELECT id, status FROM runs WHERE (job=? AND started_at=? AND pid IS ? AND host IS ?"
            " AND agent_started=1) OR source=? LIMIT 1"
        )
        key = [row["job"], row["started_at"], row["pid"], row["host"], row["source"]]
        assignments = ", ".join(f"{column}=?" for column in FINISH_COLUMNS)

        def write() -> None:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")  # one replay at a time decides
                found = self.db.execute(same_run, key).fetchone()
                if found is None:
                    try:
                        self._insert_row(row)
                    except sqlite3.IntegrityError:  # its slot was claimed since
                        self._insert_row({**row, "slot": None, "slot_utc": None})
                elif found["status"] in ("running", "abandoned"):
                    values = [row[column] for column in FINISH_COLUMNS]
                    self.db.execute(
                        f"UPDATE runs SET {assignments} WHERE id=?", [*values, found[0]]
                    )

        self._guard(write)

    def _insert_row(self, row: dict[str, Any]) -> None:
        names, marks = ", ".join(row), ", ".join("?" for _ in row)
        self.db.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", list(row.values()))

    def note_notify(self, run_id: int, text: str) -> None:
        """What became of the run's own notifications (sent, failed, timed out)."""
        sql = "UPDATE runs SET notify=? WHERE id=?"
        self._guard(lambda: self.db.execute(sql, (redact(text), run_id)))

    def _insert(self, start: RunStart, status: str, reason: str, **extra: Any) -> int:
        columns = start_columns(start, status, reason, **extra)
        names, marks = ", ".join(columns), ", ".join("?" for _ in columns)
        sql = f"INSERT INTO runs ({names}) VALUES ({marks})"
        cursor = self.db.execute(sql, list(columns.values()))
        if cursor.lastrowid is None:
            raise sqlite3.DatabaseError("no id for the row just inserted")
        return cursor.lastrowid

    # --- reading ------------------------------------------------------------------------------

    def last_success(self, job: str) -> tuple[str, str] | None:
        """The finish time and output of the job's latest successful run, if any."""
        sql = (
            "SELECT finished_at, output FROM runs WHERE job=? AND status='ok'"
            " AND output IS NOT NULL ORDER BY id DESC LIMIT 1"
        )
        row = self._guard(lambda: self.db.execute(sql, (job,)).fetchone())
        return (row["finished_at"], row["output"]) if row else None

    def runs(
        self,
        job: str | None = None,
        limit: int | None = None,
        since: datetime | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, as the contract's JSON objects; a `running` row whose job lock
        nobody holds shows as `abandoned`."""
        where, params = filters(job, since, "?")
        if status is not None:
            where += (" AND " if where else " WHERE ") + "status = ?"
            params.append(status)
        sql = "SELECT * FROM runs" + where + " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._guard(lambda: self.db.execute(sql, params).fetchall())
        return [self._shown(row_json(dict(row))) for row in rows]

    def status_facts(self, job: str, since: datetime) -> StatusFacts:
        """What `status` needs of one job's rows (indexed: fast with many rows)."""

        def read() -> StatusFacts:
            db = self.db
            newest = db.execute(
                "SELECT * FROM runs WHERE job=? ORDER BY id DESC LIMIT 1", (job,)
            ).fetchone()
            last = self._shown(row_json(dict(newest))) if newest else None
            ok = db.execute(
                "SELECT finished_at FROM runs WHERE job=? AND status='ok' ORDER BY id DESC LIMIT 1",
                (job,),
            ).fetchone()
            ran = []  # newest first, up to the first ok: all that failures_in_a_row needs
            for (status,) in db.execute(
                "SELECT status FROM runs WHERE job=? AND agent_started=1 ORDER BY id DESC",
                (job,),
            ):
                ran.append(status)
                if status == "ok" or len(ran) >= 1000:
                    break
            first = db.execute(
                "SELECT MIN(started_utc) FROM runs WHERE job=? AND scheduled=1", (job,)
            ).fetchone()[0]
            used = {
                row[0]
                for row in db.execute(
                    "SELECT slot_utc FROM runs WHERE job=? AND agent_started=1 AND slot_utc >= ?",
                    (job, utc(since)),
                )
            }
            if ran and ran[0] == "running" and last is not None and last["status"] == "abandoned":
                ran[0] = "abandoned"
            return StatusFacts(last, ok[0] if ok else None, ran, first, used)

        return self._guard(read)

    def _shown(self, row: dict[str, Any]) -> dict[str, Any]:
        """A `running` row whose job lock nobody holds shows as `abandoned`."""
        if row["status"] == "running" and is_held(lock_path(self.state, row["job"])) is False:
            row["status"] = "abandoned"
            row["reason"] = ABANDONED_SHOWN
        return row

    def totals(self, job: str | None, since: datetime | None) -> list[dict[str, Any]]:
        """Per job: runs, tokens and cost (None when no run's cost is known)."""
        where, params = filters(job, since, "?")
        sql = totals_sql("runs", where)
        return [dict(row) for row in self._guard(lambda: self.db.execute(sql, params))]


def describe(path: Path, exc: sqlite3.Error) -> str:
    """One line: what is wrong with the ledger file, and what to do about it."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = message.lower()
    if "locked" in lowered or "busy" in lowered:
        return (
            f"{path}: the run ledger has been locked by another process for over "
            f"{wait_seconds():g}s; find it with: fuser {path}"
        )
    if "full" in lowered:
        return f"{path}: no space left for the run ledger ({message}); free space on its disk"
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return (
            f"{path}: the run ledger is damaged ({message}); move it aside "
            f"(mv {path} {path}.damaged) and the next run starts a new one"
        )
    return f"{path}: the run ledger cannot be used ({message})"
