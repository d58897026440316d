"""`ledger import FILE` checks every row first: a bad one is exit 2 naming its id and column,
and nothing is imported; a good file is copied in and `history` reads it back.

Each file is a real SQLite ledger written by the ledger's own code, then damaged in one
column with SQL, as a hand-edited or hostile file would be.
"""

import json
import sqlite3
from datetime import datetime

import pytest

from tasty_oneshot.ledger.rows import Finish, RunStart, Usage
from tasty_oneshot.ledger.sqlite import SqliteLedger
from tasty_oneshot.schedule import NYC

AT = datetime(2026, 11, 30, 9, 31, tzinfo=NYC)
SLOT = datetime(2026, 11, 30, 9, 30, tzinfo=NYC)


@pytest.fixture
def source(tmp_path):
    """A real ledger of three rows (ids 1 to 3) in a state directory of its own."""
    state = tmp_path / "other-host"
    state.mkdir(mode=0o700)
    ledger = SqliteLedger(state)
    run_id = ledger.claim(RunStart("check", AT, SLOT, "test", "read-only", True, 41, "host-b"))
    assert run_id is not None
    finish = Finish("ok", "the agent finished", AT, 0, "all calm", Usage(1, 2, 3, 4), 0.5)
    assert ledger.finish(run_id, finish)
    ledger.record(RunStart("check", AT, pid=42, host="host-b"), "skipped", "stale", AT, 0)
    ledger.record(RunStart("other", AT, pid=43, host="host-b"), "locked", "held", AT, 75)
    ledger.close()
    return state / "ledger.sqlite3"


def damage(file, sql: str, *params) -> None:
    db = sqlite3.connect(file, isolation_level=None)
    db.execute(sql, params)
    db.close()


def imported(ws, file):
    return ws.call("ledger", "import", str(file))


def test_a_good_ledger_is_imported_once_and_reads_back(ws, source):
    first, again = imported(ws, source), imported(ws, source)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.startswith("3 of 3 rows copied") and again.stdout.startswith("0 of 3")
    rows = ws.history()
    assert [(row["job"], row["status"]) for row in rows] == [
        ("other", "locked"), ("check", "skipped"), ("check", "ok"),
    ]  # fmt: skip
    assert rows[2]["slot"] == SLOT.isoformat() and rows[2]["cost"] == 0.5


BAD_ROWS = {
    # column: (SQL value for row 2, a word of the message)
    "slot": ("'tomorrow'", "ISO-8601"),
    "slot without offset": ("'2026-11-30T09:30:00'", "offset"),
    "job": ("X'636865636b'", "BLOB"),
    "job name": ("'../../etc'", "job name"),
    "status": ("'great'", "not one of"),
    "started_at": ("'noon'", "ISO-8601"),
    "finished_at": ("'yesterday'", "ISO-8601"),
    "exit_code": ("1000000000000", "out of range"),
    "requests": ("-1", "out of range"),
    "input_tokens": ("'many'", "whole number"),
    "cost": ("'cheap'", "dollars"),
    "cost inf": ("9e999", "dollars"),
    "pid": ("4294967296", "out of range"),
    "scheduled": ("7", "0 or 1"),
    "agent_started": ("'yes'", "0 or 1"),
    "trading": ("'yolo'", "not one of"),
    "output": ("printf('%.*c', 1100000, 'x')", "longer than"),
    "model": ("CAST(X'FFFE' AS TEXT)", "not UTF-8"),
    "host": ("printf('%.*c', 5000, 'h')", "longer than"),
    "reason": ("X'00'", "BLOB"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_bad_row_is_exit_2_naming_its_id_and_column_and_nothing_is_imported(ws, source, case):
    column = case.split()[0]
    value, word = BAD_ROWS[case]
    damage(source, f"UPDATE runs SET {column} = {value} WHERE id = 2")
    result = imported(ws, source)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "Traceback" not in line and "internal error" not in line
    assert f"row 2: {column}: " in line and word in line, line
    assert str(source) in line and "nothing was imported" in line
    assert ws.history() == []  # not even the good row 1


@pytest.mark.parametrize("missing", ["job", "started_at", "status"])
def test_a_runs_table_without_a_needed_column_is_exit_2_naming_it(ws, tmp_path, missing):
    file = tmp_path / "old.sqlite3"
    columns = [c for c in ("job", "status", "started_at") if c != missing]
    damage(file, f"CREATE TABLE runs (id INTEGER PRIMARY KEY, {', '.join(columns)})")
    result = imported(ws, file)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert f"no {missing} column" in line and str(file) in line, line


def test_a_file_without_a_runs_table_is_exit_2(ws, tmp_path):
    file = tmp_path / "notes.sqlite3"
    damage(file, "CREATE TABLE notes (text)")
    result = imported(ws, file)
    assert result.returncode == 2 and "no runs table" in result.stderr, result.stderr


def test_history_reads_an_imported_ledger_back_in_full(ws, source):
    """What import lets in, history and status can read: the JSON of every row parses."""
    assert imported(ws, source).returncode == 0
    result = ws.call("history", "--json")
    assert result.returncode == 0, result.stderr
    assert {row["id"] for row in json.loads(result.stdout)} == {1, 2, 3}


def test_a_slot_both_ledgers_ran_is_imported_as_a_run_that_claims_nothing(ws, source):
    """This host ran the 9:30 slot too: the other host's run of it is copied (history and
    the totals count both runs), the slot stays claimed by this ledger's row, and a second
    import copies nothing."""
    ws.state.mkdir(mode=0o700)
    here = SqliteLedger(ws.state)
    run_id = here.claim(RunStart("check", AT, SLOT, "test", "read-only", True, 7, "host-a"))
    assert run_id is not None
    assert here.finish(run_id, Finish("ok", "done", AT, 0, "here", Usage(1, 1, 1, 1), 0.25))
    here.close()
    first, again = imported(ws, source), imported(ws, source)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.startswith("3 of 3 rows copied") and again.stdout.startswith("0 of 3")
    ran = [row for row in ws.history() if row["status"] == "ok"]
    assert sorted((row["host"], row["output"]) for row in ran) == [
        ("host-a", "here"), ("host-b", "all calm"),
    ]  # fmt: skip
    [mine] = [row for row in ran if row["host"] == "host-a"]
    assert mine["slot"] == SLOT.isoformat()
    ledger = SqliteLedger(ws.state)
    try:
        assert ledger.slot_used("check", SLOT)
        [totals] = ledger.totals("check", None)
        assert totals["agent_runs"] == 2 and totals["cost"] == 0.75, totals
    finally:
        ledger.close()
