"""`tasty-oneshot ledger import FILE`: a SQLite ledger's rows into the configured ledger.

Each row is copied once: it carries a key made of what identifies it in the file it came
from (its job, start, pid and id), so running the import twice copies nothing twice.
"""

import hashlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tasty_oneshot import paths
from tasty_oneshot.errors import EXIT_OK, StateFault, UsageError
from tasty_oneshot.ledger import open_ledger
from tasty_oneshot.ledger.postgres import COLUMNS


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


def read_rows(file: Path) -> list[dict[str, Any]]:
    """Every row of a SQLite ledger, keyed for an idempotent copy."""
    if not file.is_file():
        raise UsageError(f"{file}: no such ledger file")
    try:
        db = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        found = [dict(row) for row in db.execute("SELECT * FROM runs ORDER BY id")]
        db.close()
    except sqlite3.Error as exc:
        raise StateFault(f"{file}: cannot be read as a run ledger ({exc})") from None
    rows = []
    for row in found:
        identity = f"{row['job']}|{row['started_at']}|{row.get('pid')}|{row['id']}"
        copied = {column: row.get(column) for column in COLUMNS}
        copied["source"] = (
            row.get("source") or "sqlite:" + hashlib.sha256(identity.encode()).hexdigest()[:32]
        )
        copied["slot_utc"] = row.get("slot_utc") or _utc(row.get("slot"))
        copied["started_utc"] = row.get("started_utc") or _utc(row["started_at"])
        rows.append(copied)
    return rows


def _utc(text: str | None) -> str | None:
    from datetime import datetime

    from tasty_oneshot.ledger import utc

    return utc(datetime.fromisoformat(text)) if text else None
