"""The spool: a kept outcome leaves it only once the ledger holds it, and a damaged entry is
set aside, named once, and never stops a command.

The outcomes are kept by real runs whose ledger another process held locked at the end (the
fault of test_faults.py), or by the spool's own code against a real ledger; the damaged entries
are real files in a real state directory. The CLI runs in this process (`ws.call`).
"""

import json
import os
import subprocess
import sys
import threading
from datetime import datetime

import psycopg
import pytest
from test_faults import HOLD_LEDGER, RUN
from test_postgres_ledger import cluster, pg  # noqa: F401 (fixtures)
from test_run_lifecycle import jobs_file, wait_for

from tasty_oneshot.ledger.postgres import PostgresLedger
from tasty_oneshot.ledger.rows import Finish, RunStart, Usage
from tasty_oneshot.ledger.spool import Reservation
from tasty_oneshot.ledger.sqlite import SqliteLedger
from tasty_oneshot.schedule import NYC

AT = datetime(2026, 11, 30, 9, 31, tzinfo=NYC)
SLOT = datetime(2026, 11, 30, 9, 30, tzinfo=NYC)


def kept_files(ws) -> list:
    return sorted((ws.state / "spool").glob("*.json"))


def keep_an_outcome_of_a_real_run(ws, tmp_path) -> None:
    """A run whose ledger is held locked when it finishes: its outcome is kept. The run is in
    this process; a thread has another process take the ledger while the agent waits."""
    go, held, release = tmp_path / "go", tmp_path / "held", tmp_path / "release"
    jobs_file(ws, "--wait-for", str(go))
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "1"
    holders: list[subprocess.Popen] = []
    failed: list[BaseException] = []

    def hold_the_ledger_then_go() -> None:
        try:
            wait_for(lambda: ws.calls(), "the first tool call")
            ledger = ws.state / "ledger.sqlite3"
            command = [sys.executable, "-c", HOLD_LEDGER, str(ledger), held, release]
            holders.append(subprocess.Popen(command))
            wait_for(held.exists, "the ledger to be held")
        except BaseException as exc:  # pytest.fail's too: raised again in the test
            failed.append(exc)
        finally:
            go.write_text("go")  # the agent finishes (while the ledger is held)

    thread = threading.Thread(target=hold_the_ledger_then_go, daemon=True)
    thread.start()
    try:
        result = ws.call(*RUN)
        thread.join(timeout=60)
        if failed:
            raise failed[0]
        assert result.returncode == 0, result.stderr
        assert len(kept_files(ws)) == 1, result.stderr
    finally:
        release.write_text("release")
        thread.join(timeout=60)
        for holder in holders:
            holder.wait(timeout=30)


def test_a_kept_outcome_whose_row_is_gone_is_written_in_whole(ws, tmp_path):
    keep_an_outcome_of_a_real_run(ws, tmp_path)
    [kept] = kept_files(ws)
    # The tool's own advice for a damaged ledger: move it aside; the next run starts anew.
    ledger = ws.state / "ledger.sqlite3"
    ledger.rename(ledger.with_name("ledger.sqlite3.damaged"))
    first = ws.call("history", "--json")
    assert first.returncode == 0, first.stderr
    [row] = json.loads(first.stdout)
    assert row["job"] == "check" and row["status"] == "ok" and row["exit_code"] == 0, row
    assert "account_overview" in row["output"]
    assert row["model"] == "test" and row["trading"] == "read-only" and row["host"], row
    assert row["started_at"] and row["finished_at"] and row["usage"]["requests"] >= 1, row
    assert not kept.exists()
    # Once: the next invocation finds nothing more to write.
    assert ws.history() == [row]
    # The row claims nothing it should not: a run of the job still goes ahead.
    assert ws.call(*RUN).returncode == 0


def test_a_kept_outcome_stays_while_the_new_ledger_cannot_take_it(ws, tmp_path):
    keep_an_outcome_of_a_real_run(ws, tmp_path)
    [kept] = kept_files(ws)
    ledger = ws.state / "ledger.sqlite3"
    ledger.rename(ledger.with_name("ledger.sqlite3.damaged"))
    held, release = tmp_path / "held2", tmp_path / "release2"
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "0.5"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEDGER, str(ledger), held, release])
    try:
        wait_for(held.exists, "the new ledger to be held")
        assert ws.call("history", "--json").returncode == 1
        assert kept.exists()  # not written: not removed
    finally:
        release.write_text("release")
        holder.wait(timeout=30)
    [row] = ws.history()
    assert row["status"] == "ok" and not kept.exists()


def claimed_run(ledger, job: str = "check") -> tuple[RunStart, int]:
    start = RunStart(job, AT, SLOT, "test", "read-only", True, os.getpid(), "host-a")
    run_id = ledger.claim(start)
    assert run_id is not None
    return start, run_id


FINISH = Finish("ok", "the agent finished", AT, 0, "all calm", Usage(2, 30, 40, 1), 0.25)


def test_an_outcome_kept_by_an_older_version_whose_row_is_gone_is_set_aside(ws):
    """Without the run's start, its row cannot be rebuilt: the file is set aside, not lost."""
    ws.state.mkdir(mode=0o700)
    ledger = SqliteLedger(ws.state)
    _start, run_id = claimed_run(ledger)
    kept = Reservation(ws.state).keep(ledger.where, run_id, FINISH)  # no start: as before
    ledger.close()
    (ws.state / "ledger.sqlite3").rename(ws.state / "ledger.sqlite3.damaged")
    result = ws.call("history", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    aside = ws.state / "spool" / "damaged" / kept.name
    assert not kept.exists() and aside.exists()
    [warning] = [line for line in result.stderr.splitlines() if kept.name in line]
    assert "WARNING" in warning and "cannot write the whole row" in warning


def test_a_kept_outcome_whose_row_is_gone_is_written_in_whole_with_postgresql(ws, pg):  # noqa: F811
    ws.state.mkdir(mode=0o700)
    ledger = PostgresLedger(ws.state, pg)
    start, run_id = claimed_run(ledger)
    kept = Reservation(ws.state).keep(ledger.where, run_id, FINISH, start)
    ledger.close()
    with psycopg.connect(pg, autocommit=True) as db:  # the row is gone
        db.execute("DELETE FROM tasty_oneshot_runs")
    [row] = ws.history()
    assert not kept.exists()
    assert (row["job"], row["status"], row["output"], row["host"]) == (
        "check", "ok", "all calm", "host-a",
    )  # fmt: skip
    assert row["slot"] == SLOT.isoformat() and row["cost"] == 0.25
    assert row["usage"] == {"requests": 2, "input_tokens": 30, "output_tokens": 40, "tool_calls": 1}
    # Its slot is used again: a scheduled run of it is `already done`.
    again = PostgresLedger(ws.state, pg)
    try:
        assert again.slot_used("check", SLOT)
    finally:
        again.close()
    assert len(ws.history()) == 1


# --- damaged entries ---------------------------------------------------------------------------


def outcome(ws, **changes) -> bytes:
    """A kept outcome for this workspace's ledger, with `changes`."""
    record = {
        "ledger": str(ws.state / "ledger.sqlite3"),
        "run_id": 1,
        "status": "ok",
        "reason": "the agent finished",
        "finished_at": AT.isoformat(),
        "exit_code": 0,
        "output": "x",
        "usage": [0, 0, 0, 0],
        "cost": None,
        "start": {
            "job": "check",
            "started_at": AT.isoformat(),
            "slot": None,
            "model": "test",
            "trading": "read-only",
            "scheduled": False,
            "pid": 1,
            "host": "h",
        },
        **changes,
    }
    return json.dumps(record).encode()


DAMAGES = {
    "deep nesting": lambda ws: b"[" * 100_000 + b"]" * 100_000,
    "1e999": lambda ws: outcome(ws).replace(b'"cost": null', b'"cost": 1e999'),
    "a huge integer": lambda ws: outcome(ws, exit_code=10**30),
    "an integer too long to parse": lambda ws: b'{"run_id": ' + b"9" * 5000 + b"}",
    "not JSON": lambda ws: b"hello, spool",
    "not UTF-8": lambda ws: b'{"ledger": "\xff\xfe"}',
    "wrong types": lambda ws: outcome(ws, status=["ok"], run_id="1"),
    "a time without offset": lambda ws: outcome(ws, finished_at="2026-11-30T09:31:00"),
    "a status the contract does not know": lambda ws: outcome(ws, status="great"),
    "a bad job name": lambda ws: outcome(ws).replace(b'"job": "check"', b'"job": "../x"'),
    "a JSON array": lambda ws: b"[1, 2]",
}
COMMANDS = {
    "run": (RUN, 0),
    "history": (("history", "--json"), 0),
    "status": (("status", "--json"), 0),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_damaged_spool_entries_are_set_aside_and_named_once(ws, command):
    """Each damage in a file of its own: each is named once, in one warning, and set aside."""
    jobs_file(ws)
    ws.state.mkdir(mode=0o700, exist_ok=True)
    (ws.state / "spool").mkdir(mode=0o700)
    entries = {f"{n}.json": make(ws) for n, make in enumerate(DAMAGES.values(), start=100)}
    for name, data in entries.items():
        (ws.state / "spool" / name).write_bytes(data)
    args, code = COMMANDS[command]
    result = ws.call(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    aside = ws.state / "spool" / "damaged"
    assert oct(aside.stat().st_mode & 0o777) == oct(0o700)
    for name, damage in zip(entries, DAMAGES, strict=True):
        [warning] = [line for line in result.stderr.splitlines() if f"/{name}:" in line]
        assert " - WARNING - " in warning and "set aside" in warning, (damage, warning)
        assert not (ws.state / "spool" / name).exists(), damage
        assert oct((aside / name).stat().st_mode & 0o777) == oct(0o600), damage
    # Once: a later command names none of them again, and the ledger reads back.
    later = ws.call("history", "--json")
    assert later.returncode == 0 and "set aside" not in later.stderr, later.stderr
    assert all(row["job"] == "check" for row in json.loads(later.stdout))


def test_set_aside_files_alone_do_not_send_every_run_through_the_spool(tmp_path):
    """spool/damaged is for a person to look at: a ledger that finds only it does not import
    the spool module or scan it on every run (the skip path stays light)."""
    state = tmp_path / "state"
    damaged = state / "spool" / "damaged"
    damaged.mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    (state / "spool").chmod(0o700)
    (damaged / "7.json").write_text("not json")
    probe = (
        "import sys; from pathlib import Path; from tasty_oneshot.ledger import open_ledger; "
        "open_ledger(Path(sys.argv[1])).close(); print('tasty_oneshot.ledger.spool' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(state)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    (state / "spool" / "row-1-1.json").write_text("{}")  # something to write in: it looks
    result = subprocess.run(
        [sys.executable, "-c", probe, str(state)], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "True", result.stderr


def test_a_long_non_ascii_output_is_cut_to_fit_and_written_in(ws):
    """300,000 `é` take six bytes each in JSON: the kept file is cut until it fits its 256 KiB,
    so the next invocation reads it and writes the outcome in (not set aside as damaged)."""
    from tasty_oneshot.ledger.spool import RESERVE

    ws.state.mkdir(mode=0o700)
    ledger = SqliteLedger(ws.state)
    start, run_id = claimed_run(ledger)
    finish = FINISH._replace(output="é" * 300_000)
    kept = Reservation(ws.state).keep(ledger.where, run_id, finish, start)
    ledger.close()
    assert kept.stat().st_size <= RESERVE
    result = ws.call("history", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["status"] == "ok" and row["output"].startswith("é" * 1000)
    assert row["output"].endswith("[... cut: the ledger was unavailable]")
    assert not kept.exists() and not (ws.state / "spool" / "damaged").exists()
