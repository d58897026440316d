"""The plain `history` table and its per-job totals, read from a real SQLite ledger."""

from datetime import datetime

from tasty_oneshot.history import history
from tasty_oneshot.ledger import Ledger, Usage
from tasty_oneshot.schedule import NYC

AT = datetime(2026, 11, 27, 10, 0, tzinfo=NYC)


def agent_run(ledger: Ledger, job: str, tokens: int, cost: float | None) -> None:
    run_id = ledger.start(
        job, started_at=AT, slot=None, model="m", trading="read-only", scheduled=False, pid=1
    )
    ledger.finish(
        run_id,
        "ok",
        "the agent finished",
        finished_at=AT,
        exit_code=0,
        output="done",
        usage=Usage(1, tokens, 0, 0),
        cost=cost,
    )


def test_totals_say_when_only_some_agent_runs_could_be_priced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TASTY_ONESHOT_STATE_DIR", str(tmp_path))
    ledger = Ledger(tmp_path)
    agent_run(ledger, "priced", 100, 0.5)
    agent_run(ledger, "priced", 50, 0.25)
    agent_run(ledger, "mixed", 10, 0.125)
    agent_run(ledger, "mixed", 20, None)
    ledger.record("mixed", "skipped", "market closed", started_at=AT, finished_at=AT, exit_code=0)
    agent_run(ledger, "unpriced", 7, None)
    ledger.close()
    assert history(job=None, limit=20, since=None, as_json=False) == 0
    totals = capsys.readouterr().out.split("totals (all time):\n")[1].splitlines()
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in totals[1:]}
    assert rows["priced"] == ["2", "150", "$0.7500"]
    assert rows["mixed"] == ["3", "30", "$0.1250 (1 of 2 runs priced)"]
    assert rows["unpriced"] == ["1", "7", "unknown"]


def test_a_skip_or_lock_refusal_reason_is_redacted_in_the_ledger(tmp_path, monkeypatch):
    from tasty_oneshot import secrets

    monkeypatch.setattr(secrets, "_values", set())
    secrets.register("tt-refresh-token-789")
    ledger = Ledger(tmp_path)
    for status in ("skipped", "locked"):
        ledger.record(
            "job",
            status,
            "held by tt-refresh-token-789",
            started_at=AT,
            finished_at=AT,
            exit_code=0,
        )
    reasons = [row["reason"] for row in ledger.runs()]
    ledger.close()
    assert reasons == ["held by ***", "held by ***"]
