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


def test_a_reservation_that_fails_ends_the_run_before_the_agent_and_gives_the_slot_back(ws):
    """No room for the outcome (a file-size limit: posix_fallocate fails as on a full disk):
    exit 1 with one line naming the spool and the fix, before the MCP server or the agent
    starts; no reservation is left behind and the slot is not used up. The real CLI, in a
    process of its own: the limit is its own."""
    import resource

    from tasty_oneshot.ledger.spool import RESERVE

    jobs_file(ws, extra='    schedule: "9:30am"\n    daily: true\n')
    assert ws.call("history").returncode == 0  # the ledger made (its WAL goes on close)
    limit = RESERVE - 1  # room for the ledger's few writes, not for the reservation

    def small_files() -> None:  # Python ignores SIGXFSZ: a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    at = "2026-11-30 14:31:00"  # 09:31 NYC, a minute after the slot
    args = ("run", "--job", "check", "--scheduled", "--ignore-market-hours")
    refused = ws.cli(*args, at=at, preexec_fn=small_files)
    assert refused.returncode == 1, refused.stderr
    assert " - WARNING - " not in refused.stderr  # the slot's claim was given back
    [line] = [line for line in refused.stderr.splitlines() if " - ERROR - " in line]
    spool = ws.state / "spool"
    assert f"{spool}: cannot reserve 256 KiB" in line, line
    assert "free space on its disk" in line and "Traceback" not in line
    assert ws.server_starts() == [] and refused.stdout == ""
    assert list(spool.iterdir()) == []  # the failed reservation is not left behind
    # The slot is still free: the same firing, with room, runs the agent.
    again = ws.cli(*args, at=at)
    assert again.returncode == 0, again.stderr
    assert len(ws.server_starts()) == 1
    assert ws.history()[0]["status"] == "ok"


# --- what is kept, and what is left alone ------------------------------------------------------

PASSWORD = "hunter2-0815-xyz"  # the password of an alert URL: a secret once the URL is known


def test_no_kept_file_holds_a_secret_and_the_ledger_gets_the_masked_text(ws, monkeypatch):
    """An outcome kept for the next run (its output and reason) and a row kept before the
    ledger was reached (its reason) are masked when kept, not only when written in."""
    from tasty_oneshot import secrets
    from tasty_oneshot.ledger.spool import keep_row

    monkeypatch.setattr(secrets, "_values", set())
    secrets.register_urls((f"json://alerts:{PASSWORD}@alerts.example.org/hook",))
    ws.state.mkdir(mode=0o700)
    ledger = SqliteLedger(ws.state)
    start, run_id = claimed_run(ledger)
    finish = FINISH._replace(
        status="failed",
        reason=f"error: json://alerts:{PASSWORD}@alerts.example.org refused",
        exit_code=1,
        output=f"the alert password is {PASSWORD}",
    )
    Reservation(ws.state).keep(ledger.where, run_id, finish, start)
    skipped = RunStart("check", AT, None, "test", "read-only", False, 7, "host-a")
    keep_row(ws.state, ledger.where, skipped, "skipped", f"not today, {PASSWORD}", AT, 0)
    ledger.close()
    files = [path for path in ws.state.rglob("*") if path.is_file()]
    assert len(kept_files(ws)) == 2
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
    for path in kept_files(ws):
        assert path.read_text().count(secrets.MASK) == (2 if path.name[0].isdigit() else 1)
    rows = ws.history()
    assert not kept_files(ws)
    assert {(row["status"], row["reason"], row["output"]) for row in rows} == {
        ("failed", "error: json://alerts:***@alerts.example.org refused",
         "the alert password is ***"),
        ("skipped", "not today, ***", None),
    }  # fmt: skip


def test_outcomes_kept_for_another_ledger_are_left_for_it(ws):
    """The configuration changed (another ledger file, or PostgreSQL): what was kept for the
    other ledger stays in the spool, untouched and unnamed, and is not written into this one."""
    from tasty_oneshot.ledger.spool import keep_row

    ws.state.mkdir(mode=0o700)
    other = "postgresql://tasty@db.example.org/tasty"
    start = RunStart("check", AT, SLOT, "test", "read-only", True, 7, "host-a")
    outcome = Reservation(ws.state).keep(other, 12, FINISH, start)
    row = keep_row(ws.state, other, start._replace(pid=8), "skipped", "stale", AT, 0)
    before = {path: path.read_bytes() for path in (outcome, row)}
    result = ws.call("history", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    assert [line for line in result.stderr.splitlines() if "no runs in" not in line] == []
    assert {path: path.read_bytes() for path in kept_files(ws)} == before
    assert not (ws.state / "spool" / "damaged").exists()


def test_a_dead_runs_reservation_is_removed_and_a_live_ones_kept(ws):
    """A run killed after it reserved space leaves `.reserved-PID-...` behind: the next
    invocation removes it once that process is gone; a running one's reservation stays."""
    ws.state.mkdir(mode=0o700)
    live = Reservation(ws.state)  # this process's: alive
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    dead = live.path.with_name(f".reserved-{gone.pid}-0badf00d")
    dead.write_bytes(b"\0" * 4096)
    dead.chmod(0o600)
    try:
        assert ws.call("history", "--json").returncode == 0
        assert not dead.exists()
        assert live.path.exists()
    finally:
        live.discard()


def test_an_output_cut_to_fit_keeps_its_beginning(ws):
    """An output too long for the reserved space keeps its first part and says it was cut."""
    from tasty_oneshot.ledger.spool import RESERVE

    ws.state.mkdir(mode=0o700)
    ledger = SqliteLedger(ws.state)
    start, run_id = claimed_run(ledger)
    output = "HEAD of the answer\n" + "x" * (RESERVE * 2) + "\nTAIL of the answer"
    kept = Reservation(ws.state).keep(ledger.where, run_id, FINISH._replace(output=output), start)
    ledger.close()
    assert kept.stat().st_size <= RESERVE
    [row] = ws.history()
    assert row["output"].startswith("HEAD of the answer\nxxx"), row["output"][:40]
    assert row["output"].endswith("x\n[... cut: the ledger was unavailable]")
    assert "TAIL" not in row["output"] and len(row["output"]) > RESERVE // 4


def test_unreadable_spool_entries_are_set_aside_named_once_and_never_followed(ws, tmp_path):
    """A link, a FIFO, a directory or another user's file where a kept outcome belongs is
    not read (a link's target stays as it was and is not written in): each is set aside,
    named once in a warning, and the run goes ahead."""
    jobs_file(ws)
    ws.state.mkdir(mode=0o700)
    spool = ws.state / "spool"
    spool.mkdir(mode=0o700)
    planted = tmp_path / "planted.json"
    planted.write_bytes(outcome(ws))
    (spool / "5.json").symlink_to(planted)
    os.mkfifo(spool / "6.json", 0o600)
    (spool / "7.json").mkdir(mode=0o700)
    (spool / "8.json").write_bytes(outcome(ws))
    (spool / "8.json").chmod(0o600)
    os.chown(spool / "8.json", 65534, 65534)  # nobody's (the tests run as root)
    kinds = {
        "5.json": "symbolic link",
        "6.json": "FIFO",
        "7.json": "directory",
        "8.json": "belongs to uid 65534",
    }
    result = ws.call(*RUN)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for name, kind in kinds.items():
        [warning] = [line for line in result.stderr.splitlines() if f"/{name}:" in line]
        assert " - WARNING - " in warning and "set aside" in warning, warning
        assert kind in warning, warning
        assert not os.path.lexists(spool / name) and os.path.lexists(spool / "damaged" / name)
    assert planted.read_bytes() == outcome(ws)
    [row] = ws.history()  # the run's own: nothing was written in from the entries
    assert row["status"] == "ok" and row["host"] != "h", row
    later = ws.call("history", "--json")
    assert later.returncode == 0 and "set aside" not in later.stderr, later.stderr
