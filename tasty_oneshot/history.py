"""`tasty-oneshot history`: the run ledger, newest first."""

import sys
from datetime import UTC, datetime
from typing import Any

from tasty_oneshot import paths
from tasty_oneshot.errors import EXIT_OK, UsageError
from tasty_oneshot.ledger import dumps, open_ledger
from tasty_oneshot.schedule import NYC

COLUMNS = ("id", "job", "status", "started_at", "slot", "exit", "tokens", "reason")


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


def history(job: str | None, limit: int, since: str | None, as_json: bool) -> int:
    since_at = parse_since(since) if since else None  # before the ledger: a bad --since
    ledger = open_ledger(paths.state_dir())  # leaves no state directory or ledger behind
    try:
        rows = ledger.runs(job=job, limit=limit, since=since_at)
        totals = ledger.totals(job=job, since=since_at)
    finally:
        ledger.close()
    if as_json:
        sys.stdout.write(dumps(rows) + "\n")
        return EXIT_OK
    table = [COLUMNS] + [
        (
            str(r["id"]),
            r["job"],
            r["status"],
            r["started_at"],
            r["slot"] or "-",
            "-" if r["exit_code"] is None else str(r["exit_code"]),
            str(r["usage"]["input_tokens"] + r["usage"]["output_tokens"]),
            (r["reason"] or "")[:80],
        )
        for r in rows
    ]
    _write_table(table)
    period = f"since {since_at.isoformat(timespec='minutes')}" if since_at else "all time"
    sys.stdout.write(f"\ntotals ({period}):\n")
    _write_table(
        [("job", "runs", "tokens", "cost")]
        + [
            (
                t["job"],
                str(t["runs"]),
                str(t["tokens"] or 0),
                _cost(t),
            )
            for t in totals
        ]
    )
    return EXIT_OK


def _cost(total: dict[str, Any]) -> str:
    """A job's total cost, saying so when some of its agent runs could not be priced."""
    if total["cost"] is None:
        return "unknown"
    text = f"${total['cost']:.4f}"
    if total["priced"] < total["agent_runs"]:
        text += f" ({total['priced']} of {total['agent_runs']} runs priced)"
    return text


def _write_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")
