"""The plain `history` table and its per-job totals, read from a real SQLite ledger."""

import json
import sqlite3
from datetime import datetime

from tasty_oneshot.history import history
from tasty_oneshot.ledger.rows import Finish, RunStart, Usage
from tasty_oneshot.ledger.sqlite import SqliteLedger
from tasty_oneshot.schedule import NYC

AT = datetime(2026, 11, 27, 10, 0, tzinfo=NYC)


def agent_run(ledger: SqliteLedger, job: str, tokens: int, cost: float | None) -> None:
    run_id = ledger.claim(RunStart(job, AT, model="m", trading="read-only", pid=1))
    assert run_id is not None
    finish = Finish("ok", "the agent finished", AT, 0, "done", Usage(1, tokens, 0, 0), cost)
    assert ledger.finish(run_id, finish)


def test_totals_say_when_only_some_agent_runs_could_be_priced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TASTY_ONESHOT_STATE_DIR", str(tmp_path))
    ledger = SqliteLedger(tmp_path)
    agent_run(ledger, "priced", 100, 0.5)
    agent_run(ledger, "priced", 50, 0.25)
    agent_run(ledger, "mixed", 10, 0.125)
    agent_run(ledger, "mixed", 20, None)
    ledger.record(RunStart("mixed", AT), "skipped", "market closed", AT, 0)
    agent_run(ledger, "unpriced", 7, None)
    ledger.close()
    assert history(job=None, limit=20, since=None, as_json=False) == 0
    totals = capsys.readouterr().out.split("totals (all time):\n")[1].splitlines()
    assert totals[0].split() == ["job", "runs", "skips", "tokens", "cost"]
    rows = {line.split()[0]: line.split(None, 4)[1:] for line in totals[1:]}
    # Runs of the agent and skips are counted apart: a skip is not a run.
    assert rows["priced"] == ["2", "0", "150", "$0.7500"]
    assert rows["mixed"] == ["2", "1", "30", "$0.1250 (1 of 2 runs priced)"]
    assert rows["unpriced"] == ["1", "0", "7", "unknown"]


def test_a_skip_or_lock_refusal_reason_is_redacted_in_the_ledger(tmp_path, monkeypatch):
    from tasty_oneshot import secrets

    monkeypatch.setattr(secrets, "_values", set())
    secrets.register("tt-refresh-token-789")
    ledger = SqliteLedger(tmp_path)
    for status in ("skipped", "locked"):
        ledger.record(RunStart("job", AT), status, "held by tt-refresh-token-789", AT, 0)
    reasons = [row["reason"] for row in ledger.runs()]
    ledger.close()
    assert reasons == ["held by ***", "held by ***"]


# --- text from outside reaches no terminal raw ----------------------------------------------

# Sets the window title, clears the screen, moves the cursor, and a C1 CSI.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[1;1H\x9b31m\r\nrow two"


def test_history_and_status_tables_escape_control_characters_from_the_ledger(ws):
    """A row written by another host, an import, or an MCP error message may carry terminal
    escape sequences; the tables show them as escapes, `--json` as JSON escapes."""
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n  check:\n    instructions: Check\n",
    )
    assert ws.call("run", "--job", "check", "--ignore-market-hours").returncode == 0
    ledger = sqlite3.connect(ws.state / "ledger.sqlite3")
    with ledger:
        ledger.execute("UPDATE runs SET reason = ?, status = ?", (HOSTILE, "ok\x1b[8m"))
    ledger.close()
    for args in (("history",), ("status",)):
        result = ws.call(*args)
        assert result.returncode == 0, result.stderr
        assert not any(ch in result.stdout for ch in "\x1b\x07\x9b\r"), (args, result.stdout)
    table = ws.call("history").stdout
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in table and "\\x9b31m" in table
    assert "\\x1b[8m" in ws.call("status").stdout
    raw = ws.call("history", "--json").stdout
    assert "\x1b" not in raw and "\\u001b]0;pwned" in raw
    assert json.loads(raw)[0]["reason"] == HOSTILE  # the JSON keeps the text itself


def test_an_agents_output_reaches_stdout_with_its_control_characters_escaped(ws, stub):
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n" + ws.fake_mcp_yaml() + "jobs:\n  check:\n    instructions: C\n",
    )
    stub.mode("answer", "line one\tcell\n" + HOSTILE)
    result = ws.call("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout == "line one\tcell\n\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1;1H\\x9b31m\nrow two\n"
    )
    assert ws.history()[0]["output"] == "line one\tcell\n" + HOSTILE  # the ledger keeps it whole
