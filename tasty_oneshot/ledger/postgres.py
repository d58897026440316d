"""The PostgreSQL ledger: hosts that share it share everything the ledger decides.

- A slot runs once across hosts: a run claims it with a row, unique on (job, slot), inserted
  with ON CONFLICT DO NOTHING. (A lock alone would not do: a second racer that takes it just
  after the first released it would run the slot again.)
- One run of a job at a time anywhere: a session-level advisory lock, held for the whole run
  on the ledger's connection; the server drops it when the connection dies, like flock. The
  same lock tells a live `running` row from an abandoned one (pg_locks).
- Nothing connects before it must: a skip decided before the job's lock (the slot guard, the
  day's cached market session) is kept in the local spool and written in by the next
  invocation that connects, so a skip never waits for the network.
- The schema is created on first use, under an advisory lock, with its version recorded in
  tasty_oneshot_meta for later migrations.
"""

import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tasty_oneshot.errors import StateFault, one_line
from tasty_oneshot.ledger.postgres_url import SECRET_KEYS, shown_url, url_passwords
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
from tasty_oneshot.lock import JobLocked
from tasty_oneshot.secrets import redact, register

SCHEMA_VERSION = 2  # 2: tasty_oneshot_leases
CONNECT_TIMEOUT = 5  # seconds to reach the server before a run gives up (exit 1)
OPERATION_SLACK = 5.0  # seconds an operation may take beyond the ledger's lock wait
AFTER_DEADLINE = 3.0  # seconds an operation still gets once the run's deadline passed
# A peer that vanished (a host or a link down) is noticed by the kernel within seconds.
TCP_BOUNDS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
SCHEMA_LOCK = 0x7461_7374_795F_6F6E  # advisory lock key for creating the schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasty_oneshot_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS tasty_oneshot_runs (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    status text NOT NULL,
    reason text,
    slot text,
    slot_utc text,
    agent_started integer NOT NULL DEFAULT 0,
    started_at text NOT NULL,
    started_utc text NOT NULL,
    finished_at text,
    exit_code integer,
    output text,
    model text,
    trading text,
    scheduled integer NOT NULL DEFAULT 0,
    requests integer NOT NULL DEFAULT 0,
    input_tokens integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    tool_calls integer NOT NULL DEFAULT 0,
    cost double precision,
    pid integer,
    host text,
    notify text,
    source text
);
CREATE UNIQUE INDEX IF NOT EXISTS tasty_oneshot_runs_claim
    ON tasty_oneshot_runs (job, slot_utc) WHERE agent_started = 1 AND slot_utc IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS tasty_oneshot_runs_source
    ON tasty_oneshot_runs (source) WHERE source IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasty_oneshot_runs_job_id ON tasty_oneshot_runs (job, id);
CREATE INDEX IF NOT EXISTS tasty_oneshot_runs_job_slot
    ON tasty_oneshot_runs (job, agent_started, slot_utc);
CREATE INDEX IF NOT EXISTS tasty_oneshot_runs_job_scheduled
    ON tasty_oneshot_runs (job, scheduled, started_utc);
CREATE INDEX IF NOT EXISTS tasty_oneshot_runs_started ON tasty_oneshot_runs (started_utc);
CREATE TABLE IF NOT EXISTS tasty_oneshot_leases (
    job text PRIMARY KEY,
    holder text NOT NULL,
    backend_pid integer NOT NULL,
    backend_start timestamptz,
    expires_at timestamptz NOT NULL
);
"""

T = TypeVar("T")


def lock_key(job: str) -> int:
    """The advisory lock key of a job: 64 bits of a hash of its name, signed."""
    digest = hashlib.sha256(f"tasty-oneshot:{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLedger:
    def __init__(self, state: Path, url: str, deadline: float | None = None) -> None:
        import threading

        self.state, self.url = state, url
        self.where = shown_url(url)
        register(*url_passwords(url))  # before any message could name the URL
        self.deadline = deadline  # the run's own (monotonic): no operation outlives it
        self._db: Any = None
        self._io = threading.RLock()  # one operation at a time (the lease's renewal too)
        self._stalled: str | None = None  # why the server counts as gone for this process

    # --- the connection ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._db is not None

    def connect(self) -> Any:
        """The connection, made on first use, with the schema ready and kept outcomes in."""
        if self._db is not None:
            return self._db
        import psycopg

        try:
            self._db = self._open()
            self._within(self._db, self._ensure_schema)
        except psycopg.Error as exc:
            self.close()
            raise StateFault(self._describe(exc)) from None
        from tasty_oneshot.ledger.spool import replay

        replay(self.state, self)
        return self._db

    def _open(self) -> Any:
        """A new connection, each step bounded: libpq's connect timeout, TCP keepalives and
        a TCP user timeout (a peer gone silent), then server-side lock and statement
        timeouts."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
        from psycopg.rows import dict_row

        # libpq's own reading of the URL: whatever it takes for a password is a secret too.
        given = conninfo_to_dict(self.url)
        register(*(str(given.get(key) or "") for key in SECRET_KEYS))
        db = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(2, min(CONNECT_TIMEOUT, int(self._limit()))),
            application_name="tasty-oneshot",
            row_factory=dict_row,
            **TCP_BOUNDS,
        )
        wait = int(wait_seconds() * 1000)
        self._within(
            db, lambda: db.execute(f"SET lock_timeout = {wait}; SET statement_timeout = {wait * 3}")
        )
        return db

    def _limit(self) -> float:
        """Seconds the next operation may take: what a lock wait needs, never past the run's
        deadline (but a moment even after it, to record a run that passed its timeout)."""
        limit = wait_seconds() + OPERATION_SLACK
        if self.deadline is not None:
            limit = min(limit, self.deadline - time.monotonic())
        return max(limit, AFTER_DEADLINE)

    def _within(self, db: Any, action: Callable[[], T]) -> T:
        """`action()` on `db`, given `_limit()` seconds: then the connection's socket is shut
        down from a timer thread, which ends any wait in libpq (a server that stopped
        answering without closing, which no timeout of libpq's or the server's would end),
        and this process counts the server as gone."""
        import threading

        seconds, fd = self._limit(), db.pgconn.socket
        state = {"done": False, "cut": False}
        guard = threading.Lock()

        def cut() -> None:
            with guard:  # never once the action is over (the descriptor may be reused)
                if not state["done"]:
                    state["cut"] = True
                    _shut_down(fd)

        timer = threading.Timer(seconds, cut)
        timer.daemon = True
        timer.start()
        try:
            return action()
        finally:
            with guard:
                state["done"] = True
            timer.cancel()
            if state["cut"]:
                self._stalled = f"no answer within {seconds:.0f}s"

    def _ensure_schema(self) -> None:
        db = self._db
        row = db.execute("SELECT to_regclass('tasty_oneshot_meta') AS meta").fetchone()
        if row["meta"] is not None:
            version = db.execute(
                "SELECT value FROM tasty_oneshot_meta WHERE key='schema_version'"
            ).fetchone()
            if version is not None and int(version["value"]) >= SCHEMA_VERSION:
                return
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            db.execute(SCHEMA)
            db.execute(
                "INSERT INTO tasty_oneshot_meta (key, value) VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )

    def _guard(self, action: Callable[[Any], T]) -> T:
        """One operation, bounded (see _within); any failure is one line (StateFault). A
        connection that broke is dropped, so the next operation connects again; a server
        that stopped answering is not asked again by this process."""
        import psycopg

        with self._io:
            if self._stalled is not None:
                raise StateFault(self._describe(self._stalled))
            db = self.connect()
            try:
                return self._within(db, lambda: action(db))
            except psycopg.Error as exc:
                if db.broken or db.closed or self._stalled is not None:
                    self.close()
                raise StateFault(self._describe(self._stalled or exc)) from None

    def _describe(self, exc: BaseException | str) -> str:
        problem = redact(exc if isinstance(exc, str) else one_line(exc)) or type(exc).__name__
        return (
            f"{self.where}: the PostgreSQL ledger cannot be used ({problem}); check that the "
            "server is up and reachable from this host"
        )

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):  # a connection already broken
                self._db.close()
            self._db = None

    # --- the job lock and the slot -----------------------------------------------------------

    def job_lock(self, job: str) -> "AdvisoryLock":
        return AdvisoryLock(self, job)

    def claim(self, start: RunStart) -> int | None:
        conflict = (
            "ON CONFLICT (job, slot_utc) WHERE agent_started = 1 AND slot_utc IS NOT NULL"
            " DO NOTHING"
        )
        sql, values = self._insert(
            start_columns(start, "running", "agent started", agent=1), conflict
        )
        row = self._guard(lambda db: db.execute(sql, values).fetchone())
        return None if row is None else int(row["id"])

    def give_back(self, run_id: int) -> None:
        """A claim whose run ended before its agent started: the slot is free again."""
        sql = "DELETE FROM tasty_oneshot_runs WHERE id=%s AND status IN ('running', 'abandoned')"
        self._guard(lambda db: db.execute(sql, (run_id,)))

    def slot_used(self, job: str, slot: datetime) -> bool:
        sql = (
            "SELECT 1 FROM tasty_oneshot_runs WHERE job=%s AND agent_started=1 AND slot_utc=%s"
            " LIMIT 1"
        )
        return self._guard(lambda db: db.execute(sql, (job, utc(slot))).fetchone()) is not None

    def abandon_dead(self, job: str, pid: int, host: str) -> int:
        """With the job's lock held (on any host): its other `running` rows are dead."""
        sql = (
            "UPDATE tasty_oneshot_runs SET status='abandoned', reason=%s WHERE job=%s"
            " AND status='running' AND NOT (pid IS NOT DISTINCT FROM %s"
            " AND host IS NOT DISTINCT FROM %s)"
        )
        reason = ABANDONED_MARKED
        return int(self._guard(lambda db: db.execute(sql, (reason, job, pid, host)).rowcount))

    # --- writing -----------------------------------------------------------------------------

    def record(
        self, start: RunStart, status: str, reason: str, finished_at: datetime, exit_code: int
    ) -> int:
        """A skip or a lock refusal. Decided before this invocation connected (the slot guard,
        the cached market day): kept locally, written in by the next that connects."""
        if not self.connected:
            from tasty_oneshot.ledger.spool import keep_row

            keep_row(self.state, self.where, start, status, reason, finished_at, exit_code)
            return 0
        row = start_columns(
            start, status, reason, finished_at=iso(finished_at), exit_code=exit_code
        )
        sql, values = self._insert(row)
        return int(self._guard(lambda db: db.execute(sql, values).fetchone())["id"])

    def record_kept(
        self, start: RunStart, status: str, reason: str, finished_at: datetime, exit_code: int
    ) -> None:
        """A row kept in the spool: written now (the spool's replay), once, even when two
        invocations of the host replay the same file at the same time: it is keyed by the
        invocation that kept it."""
        identity = f"{start.host}|{start.pid}|{start.job}|{start.started_at.isoformat()}"
        source = "kept:" + hashlib.sha256(identity.encode()).hexdigest()[:32]
        row = start_columns(
            start, status, reason, finished_at=iso(finished_at), exit_code=exit_code, source=source
        )
        sql, values = self._insert(row, "ON CONFLICT (source) WHERE source IS NOT NULL DO NOTHING")
        self._guard(lambda db: db.execute(sql, values))

    def finish(self, run_id: int, finish: Finish) -> bool:
        assignments = ", ".join(f"{column}=%s" for column in FINISH_COLUMNS)
        sql = (
            f"UPDATE tasty_oneshot_runs SET {assignments}"
            " WHERE id=%s AND status IN ('running', 'abandoned')"
        )
        values = (*finish_values(finish), run_id)
        return int(self._guard(lambda db: db.execute(sql, values).rowcount)) == 1

    def note_notify(self, run_id: int, text: str) -> None:
        sql = "UPDATE tasty_oneshot_runs SET notify=%s WHERE id=%s"
        self._guard(lambda db: db.execute(sql, (redact(text), run_id)))

    def import_rows(self, rows: list[dict[str, Any]]) -> int:
        """Rows of another ledger, each once (keyed by `source`); how many were new."""
        conflict = "ON CONFLICT (source) WHERE source IS NOT NULL DO NOTHING"

        # Hosts that each had a ledger may both have run a slot: the second copy of the claim
        # is kept as a run (in history and the totals) but no longer claims the slot.
        claimed = (
            "SELECT 1 FROM tasty_oneshot_runs WHERE job=%s AND agent_started=1 AND slot_utc=%s"
            " AND source IS DISTINCT FROM %s LIMIT 1"
        )

        def write(db: Any) -> int:
            added = 0
            with db.transaction():
                for row in rows:
                    given = {c: row[c] for c in COLUMNS if row.get(c) is not None}
                    if given.get("agent_started") and given.get("slot_utc"):
                        key = (given["job"], given["slot_utc"], given.get("source"))
                        if db.execute(claimed, key).fetchone() is not None:
                            del given["slot_utc"]
                    sql, values = self._insert(given, conflict)
                    added += db.execute(sql, values).rowcount
            return added

        return int(self._guard(write))

    @staticmethod
    def _insert(columns: dict[str, Any], conflict: str = "") -> tuple[str, list[Any]]:
        """An INSERT of the columns given (the others take their defaults)."""
        names, marks = ", ".join(columns), ", ".join("%s" for _ in columns)
        sql = f"INSERT INTO tasty_oneshot_runs ({names}) VALUES ({marks}) {conflict} RETURNING id"
        return sql, list(columns.values())

    # --- reading ---------------------------------------------------------------------------

    def last_success(self, job: str) -> tuple[str, str] | None:
        sql = (
            "SELECT finished_at, output FROM tasty_oneshot_runs WHERE job=%s AND status='ok'"
            " AND output IS NOT NULL ORDER BY id DESC LIMIT 1"
        )
        row = self._guard(lambda db: db.execute(sql, (job,)).fetchone())
        return (row["finished_at"], row["output"]) if row else None

    def runs(
        self,
        job: str | None = None,
        limit: int | None = None,
        since: datetime | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        where, params = filters(job, since, "%s")
        if status is not None:
            where += (" AND " if where else " WHERE ") + "status = %s"
            params.append(status)
        sql = "SELECT * FROM tasty_oneshot_runs" + where + " ORDER BY id DESC"
        if limit:
            sql += " LIMIT %s"
            params.append(limit)
        rows = self._guard(lambda db: db.execute(sql, params).fetchall())
        return self._shown([row_json(row) for row in rows])

    def _shown(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A `running` row whose job's lock no session holds, and whose job has no live lease,
        shows as `abandoned`."""
        running = {row["job"] for row in rows if row["status"] == "running"}
        if not running:
            return rows
        keys = {job: lock_key(job) for job in running}
        held = self._guard(
            lambda db: {
                (int(r["classid"]) << 32) | int(r["objid"])
                for r in db.execute(
                    "SELECT classid, objid FROM pg_locks WHERE locktype='advisory'"
                    " AND objsubid=1 AND granted AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchall()
            }
        )
        leased = self._guard(
            lambda db: {
                r["job"] for r in db.execute(f"SELECT job FROM tasty_oneshot_leases l WHERE {LIVE}")
            }
        )
        for row in rows:
            if row["status"] != "running" or row["job"] in leased:  # across a restart
                continue
            if keys[row["job"]] & 0xFFFFFFFFFFFFFFFF not in held:
                row["status"] = "abandoned"
                row["reason"] = ABANDONED_SHOWN
        return rows

    def totals(self, job: str | None, since: datetime | None) -> list[dict[str, Any]]:
        where, params = filters(job, since, "%s")
        sql = totals_sql("tasty_oneshot_runs", where)
        rows = self._guard(lambda db: db.execute(sql, params).fetchall())
        return [
            {**row, "runs": int(row["runs"]), "agent_runs": int(row["agent_runs"] or 0),
             "tokens": int(row["tokens"] or 0), "priced": int(row["priced"])}
            for row in rows
        ]  # fmt: skip

    def status_facts(self, job: str, since: datetime) -> StatusFacts:
        def read(db: Any) -> StatusFacts:
            newest = db.execute(
                "SELECT * FROM tasty_oneshot_runs WHERE job=%s ORDER BY id DESC LIMIT 1", (job,)
            ).fetchone()
            last = self._shown([row_json(newest)])[0] if newest else None
            ok = db.execute(
                "SELECT finished_at FROM tasty_oneshot_runs WHERE job=%s AND status='ok'"
                " ORDER BY id DESC LIMIT 1",
                (job,),
            ).fetchone()
            ran = []
            for row in db.execute(
                "SELECT status FROM tasty_oneshot_runs WHERE job=%s AND agent_started=1"
                " ORDER BY id DESC LIMIT 1000",
                (job,),
            ):
                ran.append(row["status"])
                if row["status"] == "ok":
                    break
            first = db.execute(
                "SELECT MIN(started_utc) AS first FROM tasty_oneshot_runs"
                " WHERE job=%s AND scheduled=1",
                (job,),
            ).fetchone()["first"]
            used = {
                row["slot_utc"]
                for row in db.execute(
                    "SELECT slot_utc FROM tasty_oneshot_runs WHERE job=%s AND agent_started=1"
                    " AND slot_utc >= %s",
                    (job, utc(since)),
                )
            }
            if ran and ran[0] == "running" and last is not None and last["status"] == "abandoned":
                ran[0] = "abandoned"
            return StatusFacts(last, ok["finished_at"] if ok else None, ran, first, used)

        return self._guard(read)

    def restore(self, row: dict[str, Any]) -> None:
        """A claimed run's outcome kept in the spool: its `running` row is finished; when that
        row is gone, the whole row goes in, once (keyed by its `source`). A slot another row
        claimed meanwhile stays that row's."""
        same_run = (
            "SELECT id, status FROM tasty_oneshot_runs WHERE (job=%s AND started_at=%s"
            " AND pid IS NOT DISTINCT FROM %s AND host IS NOT DISTINCT FROM %s"
            " AND agent_started=1) OR source=%s LIMIT 1 FOR UPDATE"
        )
        key = (row["job"], row["started_at"], row["pid"], row["host"], row["source"])
        claimed = (
            "SELECT 1 FROM tasty_oneshot_runs WHERE job=%s AND agent_started=1 AND slot_utc=%s"
        )
        assignments = ", ".join(f"{column}=%s" for column in FINISH_COLUMNS)
        once = "ON CONFLICT (source) WHERE source IS NOT NULL DO NOTHING"

        def write(db: Any) -> None:
            with db.transaction():
                found = db.execute(same_run, key).fetchone()
                if found is None:
                    given = dict(row)
                    slot = (row["job"], row["slot_utc"])
                    if row["slot_utc"] and db.execute(claimed, slot).fetchone() is not None:
                        given["slot_utc"] = None
                    db.execute(*self._insert(given, once))
                elif found["status"] in ("running", "abandoned"):
                    values = [row[column] for column in FINISH_COLUMNS]
                    sql = f"UPDATE tasty_oneshot_runs SET {assignments} WHERE id=%s"
                    db.execute(sql, [*values, found["id"]])

        self._guard(write)


def _shut_down(fd: int) -> None:
    """Shut a socket down for both directions (by a duplicate: the connection's owner
    closes its own descriptor)."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


# A job's lease, held while a run holds the job's advisory lock. A restart of the server
# drops every advisory lock; the lease outlives it: it is live until it expires (on the
# server's clock) unless the session that last renewed it is gone from this very server's
# life (its run ended, or was killed: no need to wait for the expiry then).
LEASE_SECONDS = 60
RENEW_EVERY = 10.0
RETRY_EVERY = 1.0  # while the server cannot be reached (restarting)
LIVE = (
    "l.expires_at > now() AND (l.backend_start < pg_postmaster_start_time() OR EXISTS"
    " (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.backend_pid"
    " AND a.backend_start = l.backend_start))"
)
THIS_SESSION = (
    "pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),"
    " now() + make_interval(secs => %s)"
)
TAKE_LEASE = (
    "INSERT INTO tasty_oneshot_leases AS l (job, holder, backend_pid, backend_start, expires_at)"
    f" VALUES (%s, %s, {THIS_SESSION}) ON CONFLICT (job) DO UPDATE SET"
    " holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid,"
    " backend_start = EXCLUDED.backend_start, expires_at = EXCLUDED.expires_at"
    f" WHERE NOT ({LIVE}) OR l.holder = EXCLUDED.holder RETURNING holder"
)
RENEW_LEASE = (
    "UPDATE tasty_oneshot_leases SET (backend_pid, backend_start, expires_at) ="
    f" ({THIS_SESSION}) WHERE job = %s AND holder = %s RETURNING holder"
)


class AdvisoryLock:
    """A job's lock across every host that shares the ledger: the advisory lock (the fast
    path, dropped with the session) and the job's lease (which survives a restart of the
    server), renewed by a thread that connects again when the connection is lost."""

    def __init__(self, ledger: PostgresLedger, job: str) -> None:
        import uuid

        self.ledger, self.job, self.key = ledger, job, lock_key(job)
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._held = False
        self._renewal: Any = None
        self._stop: Any = None

    def acquire(self) -> None:
        sql = "SELECT pg_try_advisory_lock(%s) AS taken"
        row = self.ledger._guard(lambda db: db.execute(sql, (self.key,)).fetchone())
        if not row["taken"]:
            raise self._locked()
        self._held = True
        values = (self.job, self.holder, LEASE_SECONDS)
        if self.ledger._guard(lambda db: db.execute(TAKE_LEASE, values).fetchone()) is None:
            self.release()  # a run elsewhere holds the lease: the server lost its lock
            raise self._locked()
        import threading

        self._stop = threading.Event()
        self._renewal = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._renewal.start()

    def _locked(self) -> JobLocked:
        """The refusal, naming the holder from the job's lease (HOST:PID:TOKEN) when it has
        one; what another host wrote is shown, never trusted."""
        sql = "SELECT holder FROM tasty_oneshot_leases WHERE job = %s"
        row = None
        with contextlib.suppress(StateFault):  # the refusal stands without its holder
            row = self.ledger._guard(lambda db: db.execute(sql, (self.job,)).fetchone())
        host, _, rest = str(row["holder"]).rpartition(":")[0].rpartition(":") if row else ("",) * 3
        holder = f"pid {rest} on {host}" if rest.isdigit() and host else None
        return JobLocked(f"the advisory lock of {self.job} in {self.ledger.where}", holder)

    def _renew(self) -> None:
        """Every RENEW_EVERY seconds, the lease again (from a new connection if need be)."""
        values = (LEASE_SECONDS, self.job, self.holder)
        delay = RENEW_EVERY
        while not self._stop.wait(delay):
            try:
                row = self.ledger._guard(lambda db: db.execute(RENEW_LEASE, values).fetchone())
            except StateFault:
                delay = RETRY_EVERY
                continue
            if row is None:
                import logging

                logging.getLogger("tasty_oneshot").warning(
                    "job %s: its lease in %s expired and was taken", self.job, self.ledger.where
                )
                return
            delay = RENEW_EVERY

    def release(self) -> None:
        if self._renewal is not None:
            self._stop.set()
            self._renewal.join(timeout=AFTER_DEADLINE + OPERATION_SLACK)
            self._renewal = None
        if self._held and self.ledger.connected:
            drop = "DELETE FROM tasty_oneshot_leases WHERE job = %s AND holder = %s"
            with contextlib.suppress(StateFault):  # the connection is gone: so is the lock
                self.ledger._guard(lambda db: db.execute(drop, (self.job, self.holder)))
                self.ledger._guard(
                    lambda db: db.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                )
        self._held = False
