"""`tasty-oneshot ledger import FILE`: a SQLite ledger's rows into the configured ledger.

Each row is copied once: it carries a key made of what identifies it in the file it came
from (its job, start, pid and id), so running the import twice copies nothing twice.

Every row is checked before anything is written (types, times with their offsets, statuses,
job names, integers in range, bounded text): one bad row is exit 2 naming it and its column,
and nothing is imported. A bad row let in would break `history` and `status` for good.
"""

import hashlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

import tasty_oneshot.ledger.row_checks as check
from tasty_oneshot import paths
from tasty_oneshot.errors import EXIT_OK, StateFault, UsageError
from tasty_oneshot.ledger import open_ledger
from tasty_oneshot.ledger.rows import utc

REQUIRED = ("id", "job", "status", "started_at")  # in every version's runs table
USAGE_COLUMNS = ("requests", "input_tokens", "output_tokens", "tool_calls")


def import_ledger(file: Path, url: str | None) -> int:
    rows = read_rows(file)
    ledger = open_ledger(paths.state_dir(), url)
    try:
        if Path(ledger.where).resolve() == file.resolve():
            raise UsageError(f"{file}: is the configured ledger itself")
        added = ledger.import_rows(rows)
        where = ledger.where
    finally:
        ledger.close()
    sys.stdout.write(f"{added} of {len(rows)} rows copied into {where}\n")
    return EXIT_OK


class NotUtf8(bytes):
    """Text in the file that is not UTF-8."""


def _text(data: bytes) -> str | NotUtf8:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return NotUtf8(data)


def read_rows(file: Path) -> list[dict[str, Any]]:
    """Every row of a SQLite ledger, checked and keyed for an idempotent copy."""
    if not file.is_file():
        raise UsageError(f"{file}: no such ledger file")
    try:
        db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            db.text_factory = _text
            db.row_factory = sqlite3.Row
            have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            if not have:
                raise UsageError(f"{file}: has no runs table: not a run ledger")
            for column in REQUIRED:
                if column not in have:
                    raise UsageError(f"{file}: the runs table has no {column} column; not imported")
            found = [dict(row) for row in db.execute("SELECT * FROM runs ORDER BY rowid")]
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StateFault(f"{file}: cannot be read as a run ledger ({exc})") from None
    rows = []
    for number, row in enumerate(found, start=1):
        try:
            rows.append(checked(row))
        except check.BadValue as exc:
            name = f"row {row['id']}" if type(row["id"]) is int else f"row {number} of the file"
            raise UsageError(f"{file}: {name}: {exc}; nothing was imported") from None
    return rows


def checked(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the file as the ledger will hold it; BadValue names the column at fault."""
    for column, value in row.items():
        if isinstance(value, NotUtf8):
            raise check.BadValue(column, "text that is not UTF-8")
    run_id = check.whole("id", row["id"], 1, check.BIGINT)
    started_at = check.moment("started_at", row["started_at"])
    slot = check.moment("slot", row.get("slot"), optional=True)
    assert started_at is not None
    copied: dict[str, Any] = {
        "job": check.job_name("job", row["job"]),
        "status": check.status("status", row["status"]),
        "reason": check.text("reason", row.get("reason")),
        "slot": row.get("slot"),
        "slot_utc": utc(slot) if slot else None,
        "agent_started": check.flag("agent_started", _or_zero(row.get("agent_started"))),
        "started_at": row["started_at"],
        "started_utc": utc(started_at),
        "finished_at": row.get("finished_at"),
        "exit_code": check.whole("exit_code", row.get("exit_code"), 0, 255, optional=True),
        "output": check.text("output", row.get("output")),
        "model": check.model("model", row.get("model")),
        "trading": check.trading("trading", row.get("trading")),
        "scheduled": check.flag("scheduled", _or_zero(row.get("scheduled"))),
        "cost": check.cost("cost", row.get("cost")),
        "pid": check.whole("pid", row.get("pid"), 0, check.INT32, optional=True),
        "host": check.text("host", row.get("host"), check.SHORT_TEXT),
        "notify": check.text("notify", row.get("notify")),
    }
    check.moment("finished_at", row.get("finished_at"), optional=True)
    for column in USAGE_COLUMNS:
        copied[column] = check.whole(column, row.get(column), 0, check.BIGINT, optional=True)
    identity = f"{row['job']}|{row['started_at']}|{row.get('pid')}|{run_id}"
    source = check.text("source", row.get("source"), check.SHORT_TEXT)
    copied["source"] = source or "sqlite:" + hashlib.sha256(identity.encode()).hexdigest()[:32]
    return copied


def _or_zero(value: Any) -> Any:
    """NULL in a column the ledger defaults to 0."""
    return 0 if value is None else value
