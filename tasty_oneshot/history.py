"""`tasty-oneshot history`: the run ledger, newest first."""

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from tasty_oneshot import paths
from tasty_oneshot.errors import EXIT_OK, UsageError
from tasty_oneshot.ledger import open_ledger
from tasty_oneshot.ledger.rows import dumps
from tasty_oneshot.schedule import NYC
from tasty_oneshot.terminal import write_table

COLUMNS = ("id", "job", "status", "started_at", "took", "slot", "exit", "tokens", "reason")
REASON_WIDTH = 80
log = logging.getLogger("tasty_oneshot")


def parse_since(text: str) -> datetime:
    """A date (midnight NYC) or an ISO-8601 time (NYC if it has no offset)."""
    try:
        moment = datetime.fromisoformat(text)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=NYC)
        moment.astimezone(UTC)  # 0001-01-01T00:00+14:00 has no UTC time
    except (ValueError, OverflowError):
        raise UsageError(
            f"--since {text[:40]!r}: expected YYYY-MM-DD or ISO-8601, from year 1 to 9999"
        ) from None
    return moment


def history(
    job: str | None,
    limit: int,
    since: str | None,
    as_json: bool,
    status: str | None = None,
    ledger: str | None = None,
) -> int:
    since_at = parse_since(since) if since else None  # before the ledger: a bad --since
    opened = open_ledger(paths.state_dir(), ledger)  # leaves no state dir or ledger behind
    try:
        rows = opened.runs(job=job, limit=limit, since=since_at, status=status)
        totals = opened.totals(job=job, since=since_at)
        where = opened.where
    finally:
        opened.close()
    if not rows:  # say which ledger was read: the wrong state directory is the usual cause
        log.warning("no runs in %s", where)
    if as_json:
        sys.stdout.write(dumps(rows) + "\n")
        return EXIT_OK
    table = [COLUMNS] + [
        (
            str(r["id"]),
            r["job"],
            r["status"],
            r["started_at"],
            _duration(r),
            r["slot"] or "-",
            "-" if r["exit_code"] is None else str(r["exit_code"]),
            str(r["usage"]["input_tokens"] + r["usage"]["output_tokens"]),
            _cut(r["reason"] or "", REASON_WIDTH),
        )
        for r in rows
    ]
    write_table(table)
    period = f"since {since_at.isoformat(timespec='minutes')}" if since_at else "all time"
    sys.stdout.write(f"\ntotals ({period}):\n")
    write_table(
        [("job", "runs", "skips", "tokens", "cost")]
        + [
            (
                t["job"],
                str(t["agent_runs"] or 0),
                str(t["runs"] - (t["agent_runs"] or 0)),
                str(t["tokens"] or 0),
                _cost(t),
            )
            for t in totals
        ]
    )
    return EXIT_OK


def _duration(row: dict[str, Any]) -> str:
    if not row["finished_at"]:
        return "-"
    seconds = (
        datetime.fromisoformat(row["finished_at"]) - datetime.fromisoformat(row["started_at"])
    ).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _cut(text: str, width: int) -> str:
    """At most `width` characters, cut at a word, never in the middle of one."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 3].rsplit(" ", 1)[0]
    return cut + " ..."


def _cost(total: dict[str, Any]) -> str:
    """A job's total cost, saying so when some of its agent runs could not be priced."""
    if total["cost"] is None:
        return "unknown" if total["agent_runs"] else "-"
    text = f"${total['cost']:.4f}"
    if total["priced"] < total["agent_runs"]:
        text += f" ({total['priced']} of {total['agent_runs']} runs priced)"
    return text
