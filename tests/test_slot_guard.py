"""`run --scheduled`: the slot guard, through the CLI (in this process) with a faked clock.

The clock is faked in UTC. New York is UTC-5 in winter (EST) and UTC-4 in summer (EDT), so a
9:30am NYC slot on 2026-11-30 (a Monday, a trading day) is 14:30 UTC. The jobs are in
tests/fixtures/slot-jobs.yaml.
"""

from pathlib import Path

import pytest

JOBS = (Path(__file__).parent / "fixtures" / "slot-jobs.yaml").read_text()
MONDAY_SLOT = "2026-11-30T09:30:00-05:00"
THANKSGIVING_SLOT = "2026-11-26T09:30:00-05:00"


@pytest.fixture
def jobs(ws):
    """The fixture jobs with `model: test` and the fake MCP server; returns the workspace."""
    ws.write("tasty-oneshot.yaml", "model: test\n" + ws.fake_mcp_yaml() + JOBS)
    return ws


def scheduled(ws, job: str, at: str, *args: str):
    return ws.call("run", "--job", job, "--scheduled", *args, at=at)


def skipped(ws, result, because: str) -> dict:
    """Check a skip: exit 0, recorded as skipped for that reason; return its ledger row."""
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    row = ws.history("--limit", "1")[0]
    assert row["status"] == "skipped" and row["exit_code"] == 0, row
    assert because in row["reason"], row
    assert row["scheduled"] is True
    return row


def test_on_time_run_runs_its_slot_and_a_second_invocation_in_that_slot_is_skipped(jobs):
    first = scheduled(jobs, "morning", "2026-11-30 14:31:00")  # 09:31 NYC
    assert first.returncode == 0, first.stderr
    assert "account_overview" in first.stdout  # the agent's final output
    [row] = jobs.history()
    assert (row["job"], row["status"], row["slot"]) == ("morning", "ok", MONDAY_SLOT)
    assert row["started_at"].startswith("2026-11-30T09:31:")
    assert len(jobs.server_starts()) == 1

    again = scheduled(jobs, "morning", "2026-11-30 14:33:00")  # 09:33, same slot
    row = skipped(jobs, again, "already done")
    assert row["slot"] == MONDAY_SLOT
    assert len(jobs.server_starts()) == 1
    assert [r["status"] for r in jobs.history()] == ["skipped", "ok"]


def test_later_than_max_delay_is_a_stale_skip_that_never_starts_the_agent(jobs):
    result = scheduled(jobs, "morning", "2026-11-30 14:35:30")  # 330 s after 09:30 NYC
    row = skipped(jobs, result, "stale")
    assert row["slot"] is None
    assert jobs.server_starts() == []


def test_max_delay_comes_from_the_job_then_the_command_line(jobs):
    # impatient has max_delay: 60; 90 s late is stale for it, though within the default 300.
    skipped(jobs, scheduled(jobs, "impatient", "2026-11-30 14:31:30"), "stale")
    skipped(jobs, scheduled(jobs, "morning", "2026-11-30 14:31:00", "--max-delay", "30"), "stale")
    assert jobs.server_starts() == []


def test_a_failed_run_still_uses_up_its_slot(ws):
    ws.write("tasty-oneshot.yaml", "model: test\n" + ws.fake_mcp_yaml("--crash") + JOBS)
    first = scheduled(ws, "morning", "2026-11-30 14:31:00")
    assert first.returncode == 1, first.stderr
    [row] = ws.history()
    assert (row["status"], row["slot"], row["exit_code"]) == ("failed", MONDAY_SLOT, 1)

    again = scheduled(ws, "morning", "2026-11-30 14:33:00")
    assert skipped(ws, again, "already done")["slot"] == MONDAY_SLOT


def test_a_market_closed_skip_does_not_use_up_the_slot(jobs):
    # Thanksgiving: the NYSE is closed, so the 9:30am slot is a skip...
    closed = scheduled(jobs, "morning", "2026-11-26 14:31:00")
    row = skipped(jobs, closed, "market closed")
    assert row["slot"] == THANKSGIVING_SLOT
    assert jobs.server_starts() == []

    # ...and the same job may still run that slot (here by ignoring market hours)...
    anyway = scheduled(jobs, "morning", "2026-11-26 14:33:00", "--ignore-market-hours")
    assert anyway.returncode == 0, anyway.stderr
    row = jobs.history("--limit", "1")[0]
    assert (row["status"], row["slot"]) == ("ok", THANKSGIVING_SLOT)
    assert len(jobs.server_starts()) == 1

    # ...once: ignoring market hours does not bypass the slot check.
    again = scheduled(jobs, "morning", "2026-11-26 14:34:00", "--ignore-market-hours")
    assert skipped(jobs, again, "already done")["slot"] == THANKSGIVING_SLOT
    assert len(jobs.server_starts()) == 1


def test_the_slot_check_applies_with_ignore_market_hours_too(jobs):
    # Stale by the command-line flag, on a trading day.
    stale = scheduled(jobs, "morning", "2026-11-30 14:36:00", "--ignore-market-hours")
    skipped(jobs, stale, "stale")
    # Stale by the job's own key, on a Saturday when the market check would not matter.
    skipped(jobs, scheduled(jobs, "morning-anyway", "2026-11-28 14:40:00"), "stale")
    # Not a fire time for weeks.
    skipped(jobs, scheduled(jobs, "new-year", "2026-11-30 15:00:00"), "off schedule")
    assert jobs.server_starts() == []


def test_the_second_130am_on_the_fall_back_night_is_not_a_slot(jobs):
    # 06:31 UTC on 2026-11-01 is 01:31 EST, the second 01:31; the slot was 01:30 EDT.
    row = skipped(jobs, scheduled(jobs, "night", "2026-11-01 06:31:00"), "stale")
    assert "2026-11-01T01:30:00-04:00" in row["reason"]
    assert jobs.server_starts() == []


def test_there_is_no_230am_slot_on_the_spring_forward_night(jobs):
    # 07:31 UTC on 2026-03-08 is 03:31 EDT: the skipped 02:30 must not be run late as 03:30.
    skipped(jobs, scheduled(jobs, "too-early", "2026-03-08 07:31:00"), "")
    assert jobs.server_starts() == []


def test_a_monotonic_period_has_no_slot_check(jobs):
    # period 7000 does not divide 24 hours: every timer firing runs, with no slot.
    result = scheduled(jobs, "drifting", "2026-11-30 17:43:17")
    assert result.returncode == 0, result.stderr
    [row] = jobs.history()
    assert (row["status"], row["slot"]) == ("ok", None)
    assert len(jobs.server_starts()) == 1


@pytest.mark.parametrize("trigger", [None, "tasty-oneshot-morning.timer"])
def test_a_service_started_by_hand_outside_its_window_says_how_to_run_now(jobs, trigger):
    """`systemctl start` of the generated service (systemd sets $INVOCATION_ID, and a timer
    also $TRIGGER_UNIT): an off-schedule skip is no quiet INFO line when a person started it."""
    jobs.env["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
    if trigger:
        jobs.env["TRIGGER_UNIT"] = trigger
    result = scheduled(jobs, "morning", "2026-11-30 15:00:00")  # 10:00 NYC: not a fire time
    skipped(jobs, result, "off schedule")
    by_hand = "WARNING - skipped: off schedule" in result.stderr
    assert by_hand == (trigger is None), result.stderr
    assert ("tasty-oneshot run --job morning" in result.stderr) == (trigger is None)
