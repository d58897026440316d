"""The run ledger: one row per invocation that got past argument checks.

One small interface, two implementations chosen once, in `open_ledger`: SQLite in the state
directory (the default, one host) and PostgreSQL (hosts that share it share everything the
ledger decides). The runner never learns which it has.

A run that starts the agent is written twice: a `running` row that claims its slot before
the agent starts (so the slot counts as used even if the process is killed), then its outcome.
A `running` row whose process is gone is reported as `abandoned` once nobody holds the job's
lock; the next run of the job, holding that lock, records it so.
"""

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tasty_oneshot.ledger.rows import Finish, RunStart, StatusFacts


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
    def restore(self, row: dict[str, Any]) -> None: ...  # a kept outcome (ledger/spool.py)
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
            from tasty_oneshot.ledger.spool import replay

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
