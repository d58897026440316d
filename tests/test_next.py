"""`tasty-oneshot next` through the real CLI with a faked clock (read as UTC), and its agreement
with `systemd-analyze calendar` on the units `generate-units` writes for the same job.

Expected instants are written out by hand in UTC: EST is UTC-5, EDT is UTC-4; clocks spring
forward on 2026-03-08 at 02:00 EST and fall back on 2026-11-01 at 02:00 EDT. NYSE facts (the
offline calendar): 2026-11-26 is Thanksgiving (closed), 2026-11-27 closes early at 13:00;
the regular session is 9:30-16:00. Weekdays: 2026-03-06 Fri, 03-07 Sat, 03-08 Sun, 03-09 Mon,
10-30 Fri, 10-31 Sat, 11-01 Sun, 11-02 Mon, 11-25 Wed, 11-28 Sat, 11-29 Sun, 11-30 Mon.
"""

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from test_systemd_units import (
    JOBS,
    fire_times,
    generate,
    make_workspace,
    needs_systemd,
    parse_unit,
)

KEYS = {"at", "utc", "market_open", "will_run"}


def next_json(ws, *args: str, at: str) -> list[dict]:
    result = ws.call("next", *args, "--json", at=at)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == KEYS, row
        assert isinstance(row["market_open"], bool) and isinstance(row["will_run"], bool)
    return rows


def check_times(rows: list[dict], expected: list[tuple[str, int]]) -> None:
    """Each row's `utc` is the expected UTC minute and `at` the same instant in NYC, with the
    expected UTC offset in hours (-5 EST, -4 EDT)."""
    assert len(rows) == len(expected), rows
    for row, (utc_text, offset_hours) in zip(rows, expected, strict=True):
        utc = datetime.fromisoformat(row["utc"])
        at = datetime.fromisoformat(row["at"])
        assert utc.utcoffset() == timedelta(0), row
        assert at.utcoffset() == timedelta(hours=offset_hours), row
        assert utc == datetime.fromisoformat(utc_text).replace(tzinfo=UTC), row
        assert at == utc, row  # the same instant
        assert at.replace(tzinfo=None) == (utc + at.utcoffset()).replace(tzinfo=None)


def flags_of(rows, key):
    return [row[key] for row in rows]


# --- JSON shape, market judgement ----------------------------------------------------------


def test_json_lists_count_fire_times_with_thanksgiving_and_a_weekend_closed(ws):
    rows = next_json(
        ws, "--schedule", "9:30am", "--daily", "--count", "5", at="2026-11-25 15:00:00"
    )  # Wed 10:00 EST: today's 9:30 has passed
    check_times(
        rows,
        [
            ("2026-11-26 14:30", -5),  # Thanksgiving
            ("2026-11-27 14:30", -5),  # early close day, but 9:30 is open
            ("2026-11-28 14:30", -5),  # Saturday
            ("2026-11-29 14:30", -5),  # Sunday
            ("2026-11-30 14:30", -5),
        ],
    )
    assert flags_of(rows, "market_open") == [False, True, False, False, True]
    assert flags_of(rows, "will_run") == [False, True, False, False, True]


def test_ignore_market_hours_runs_whatever_the_market_and_count_defaults_to_10(ws):
    rows = next_json(
        ws, "--schedule", "9:30am", "--daily", "--ignore-market-hours", at="2026-11-25 15:00:00"
    )  # no --count: the README's default of 10, 2026-11-26 ... 2026-12-05
    assert [row["at"][:10] for row in rows] == [f"2026-11-{d}" for d in range(26, 31)] + [
        f"2026-12-0{d}" for d in range(1, 6)
    ]
    # Thu (Thanksgiving), Fri, Sat, Sun, Mon-Fri, Sat.
    assert flags_of(rows, "market_open") == [False, True, False, False] + [True] * 5 + [False]
    assert flags_of(rows, "will_run") == [True] * 10


def test_early_close_closes_the_afternoon(ws):
    rows = next_json(
        ws, "--cron", "30 12,13 * * 1-5", "--count", "4", at="2026-11-27 12:00:00"
    )  # Fri 07:00 EST
    check_times(
        rows,
        [
            ("2026-11-27 17:30", -5),  # 12:30, before the 13:00 early close
            ("2026-11-27 18:30", -5),  # 13:30, after it
            ("2026-11-30 17:30", -5),
            ("2026-11-30 18:30", -5),  # a full day: 13:30 is open
        ],
    )
    assert flags_of(rows, "market_open") == [True, False, True, True]
    assert flags_of(rows, "will_run") == [True, False, True, True]


def test_the_regular_session_is_open_from_9_30_until_before_16_00(ws):
    rows = next_json(
        ws, "--market-open", "--period", "1800", "--count", "16", at="2026-11-30 13:50:00"
    )  # Mon 08:50 EST: 09:00, 09:30, ..., 16:30
    assert rows[0]["at"].startswith("2026-11-30T09:00")
    assert rows[-1]["at"].startswith("2026-11-30T16:30")
    assert flags_of(rows, "market_open") == [False] + [True] * 13 + [False, False]


def test_a_monotonic_period_counts_from_now(ws):
    rows = next_json(ws, "--period", "7000", "--count", "3", at="2026-11-30 15:00:00")
    times = [datetime.fromisoformat(row["utc"]) for row in rows]
    start = datetime(2026, 11, 30, 15, tzinfo=UTC) + timedelta(seconds=7000)
    assert start <= times[0] < start + timedelta(seconds=10), rows
    assert [b - a for a, b in pairwise(times)] == [timedelta(seconds=7000)] * 2


# --- DST weeks -----------------------------------------------------------------------------


def test_spring_forward_week(ws):
    rows = next_json(
        ws, "--schedule", "9:30am", "--daily", "--count", "4", at="2026-03-06 15:00:00"
    )
    check_times(
        rows,
        [
            ("2026-03-07 14:30", -5),
            ("2026-03-08 13:30", -4),
            ("2026-03-09 13:30", -4),
            ("2026-03-10 13:30", -4),
        ],
    )
    assert flags_of(rows, "will_run") == [False, False, True, True]


def test_fall_back_week(ws):
    rows = next_json(
        ws, "--schedule", "9:30am", "--daily", "--count", "4", at="2026-10-30 15:00:00"
    )
    check_times(
        rows,
        [
            ("2026-10-31 13:30", -4),
            ("2026-11-01 14:30", -5),
            ("2026-11-02 14:30", -5),
            ("2026-11-03 14:30", -5),
        ],
    )
    assert flags_of(rows, "will_run") == [False, False, True, True]


def test_the_fall_back_hour_fires_once_and_the_spring_forward_hour_not_at_all(ws):
    rows = next_json(
        ws, "--hourly", "--ignore-market-hours", "--count", "4", at="2026-11-01 03:10:00"
    )  # 23:10 EDT on Saturday
    check_times(
        rows,
        [
            ("2026-11-01 04:00", -4),
            ("2026-11-01 05:00", -4),  # 01:00 EDT; 01:00 EST (06:00 UTC) is not listed
            ("2026-11-01 07:00", -5),
            ("2026-11-01 08:00", -5),
        ],
    )
    assert flags_of(rows, "market_open") == [False] * 4
    assert flags_of(rows, "will_run") == [True] * 4
    rows = next_json(
        ws, "--schedule", "2:30am", "--daily", "--ignore-market-hours", "--count", "2",
        at="2026-03-07 12:00:00",
    )  # fmt: skip
    check_times(rows, [("2026-03-09 06:30", -4), ("2026-03-10 06:30", -4)])


# --- plain table, jobs, bad input ----------------------------------------------------------


def test_plain_table_shows_each_fire_time_in_nyc_and_utc_and_whether_it_runs(ws):
    result = ws.cli(
        "next", "--schedule", "9:30am", "--daily", "--count", "5", at="2026-11-25 15:00:00"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    runs = {"2026-11-26": False, "2026-11-27": True, "2026-11-28": False, "2026-11-29": False}
    runs["2026-11-30"] = True
    assert sum(1 for line in lines if "09:30" in line) == 5, result.stdout
    for day, will_run in runs.items():
        [line] = [line for line in lines if f"{day} 09:30" in line]
        assert f"{day} 14:30" in line, line  # the UTC time beside it
        assert bool(re.search(r"skip|closed", line, re.I)) is not will_run, line


@pytest.mark.parametrize(
    "args",
    [
        ["--hourly", "--daily"],
        ["--hourly", "--count", "0"],
        ["--job", "nope", "--config", "jobs.yaml"],
        ["--cron", "0 9 * *"],
        ["--cron", "0 10 2 1 *", "--count", "3"],  # the third is beyond the offline calendar
    ],
)
def test_bad_input_is_exit_2_with_one_line(ws, args):
    shutil.copy(JOBS, ws.root / "jobs.yaml")
    result = ws.call("next", *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr


# --- agreement with systemd ----------------------------------------------------------------

# Each job's next `count` fire times from a base time (UTC, away from any fire time) must span
# a daylight-saving change: sub-daily schedules from the evening before each change (the
# Friday before, for weekdays only), daily-ish ones from 2026-03-01 on, far enough to pass
# both changes. `next` imports the offline calendar (~1 s a call), so the cases are few;
# `--hourly` and `--daily` are covered by the half-hourly and 9:30/1:30/2:30 daily jobs.
SPRING, FALL, MARCH = "2026-03-07 22:07:00", "2026-10-31 22:07:00", "2026-03-01 12:07:00"
FALL_FRIDAY = "2026-10-30 19:07:00"  # 15:07 EDT
AGREE = [
    ("iv-watch", SPRING, 40),
    ("iv-watch", FALL, 40),
    ("ninety-minutes", SPRING, 40),
    ("ninety-minutes", FALL, 40),
    ("half-past-hourly", FALL, 40),
    ("quarter-hours", FALL_FRIDAY, 40),
    ("morning-check", MARCH, 250),
    ("night", MARCH, 250),
    ("too-early", MARCH, 250),
    ("dom-or-dow", MARCH, 60),
    ("odd-days-or-monday", MARCH, 160),
    ("second-friday", MARCH, 12),
]
AGREE_JOBS = sorted({job for job, _, _ in AGREE})


@pytest.fixture(scope="module")
def file_units(tmp_path_factory):
    """The fixture jobs file's units, generated once; returns (workspace, job -> OnCalendar)."""
    ws = make_workspace(tmp_path_factory.mktemp("next-agree"))
    shutil.copy(JOBS, ws.root / "jobs.yaml")
    out = ws.root / "units"
    result = ws.cli(
        "generate-units", "--no-env-file", "--all", "--config", "jobs.yaml", "--target", "systemd",
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calendars = {}
    for name in AGREE_JOBS:
        timer = parse_unit((out / f"tasty-oneshot-{name}.timer").read_text())
        calendars[name] = timer["Timer"]["OnCalendar"]
    return ws, calendars


def utc_minutes(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        utc = datetime.fromisoformat(row["utc"])
        assert utc.second == 0 and utc.microsecond == 0, row
        out.append(utc.strftime("%Y-%m-%d %H:%M"))
    return out


@needs_systemd
@pytest.mark.parametrize(("job", "base", "count"), AGREE)
def test_next_agrees_with_systemd_calendar(file_units, job, base, count):
    ws, calendars = file_units
    rows = next_json(ws, "--job", job, "--config", "jobs.yaml", "--count", str(count), at=base)
    assert len(rows) == count
    listed = utc_minutes(rows)
    if base == MARCH:
        assert listed[-1] > "2026-11-02", "the window must span both changes"
    else:
        change = "2026-03-08 07:00" if base[:7] == "2026-03" else "2026-11-01 06:00"
        assert listed[0] < change < listed[-1]
    assert listed == fire_times(calendars[job], base[:16], count)


@needs_systemd
@pytest.mark.parametrize(
    ("base", "expected", "offset"),
    [
        ("2026-11-27 14:31:00", "2026-11-27 21:00", -5),  # 09:31 EST: later today
        ("2026-03-07 22:07:00", "2026-03-08 20:00", -4),  # 17:07 EST: tomorrow, in EDT
    ],
)
def test_a_schedule_alone_fires_once_as_systemd_says(ws, base, expected, offset):
    flags = ["Check", "--name", "once", "--schedule", "4pm"]
    units = generate(ws, ws.root / "out", *flags, at=base)
    timer = parse_unit(units["tasty-oneshot-once.timer"])
    rows = next_json(ws, *flags, "--count", "3", at=base)
    check_times(rows, [(expected, offset)])
    assert rows[0]["market_open"] is False  # after the 13:00 early close; a Sunday
    assert utc_minutes(rows) == fire_times(timer["Timer"]["OnCalendar"], base[:16], 3)
