"""Fire times and the slot guard, in process.

Every expected instant below is written out by hand in UTC from the facts of New York time:
EST is UTC-5, EDT is UTC-4; in 2026 clocks spring forward on 2026-03-08 at 02:00 EST (02:00-02:59
does not exist that day) and fall back on 2026-11-01 at 02:00 EDT (01:00-01:59 happens twice:
first as EDT, 05:xx UTC, then as EST, 06:xx UTC). 2026-11-27 is a Friday.
"""

from datetime import UTC, datetime, time, timedelta
from itertools import islice

import pytest

from tasty_oneshot.jobs import schedule_from
from tasty_oneshot.schedule import NYC, Schedule, check_slot, parse_time

HOURLY, DAILY = 3600, 86400


def utc(text: str) -> datetime:
    """'2026-11-27 14:31' or '2026-11-27 14:31:05' as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(schedule: Schedule, after: str, count: int = 10, **kwargs) -> list[str]:
    """The first `count` fire times strictly after the UTC time `after`, as UTC strings."""
    found = islice(schedule.fire_times(utc(after), **kwargs), count)
    return [f.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") for f in found]


def slot_utc(check) -> datetime | None:
    """The slot as UTC: an aware NYC datetime in the fall-back fold never compares equal to
    another zone's datetime (PEP 495), so compare instants in UTC."""
    return check.slot.astimezone(UTC) if check.slot else None


# --- parse_time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9:30am", time(9, 30)),
        ("9:30 AM", time(9, 30)),
        ("9:30Am", time(9, 30)),
        ("4pm", time(16, 0)),
        ("4 PM", time(16, 0)),
        ("09:30", time(9, 30)),
        ("16:00", time(16, 0)),
        ("0:05", time(0, 5)),
        ("12am", time(0, 0)),
        ("12:15am", time(0, 15)),
        ("12pm", time(12, 0)),
        ("11:59pm", time(23, 59)),
    ],
)
def test_parse_time_accepts_the_documented_spellings(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "25:99",  # no such hour or minute
        "24:00",
        "9:60",
        "13pm",  # am/pm hours are 1-12
        "0am",
        "16",  # a bare hour is ambiguous: 16:00? 4pm?
        "",
        "   ",
        "9:30  am",  # one space is ignored, not two
        "9.30am",
        "9:3am",
        "noon",
        "9:30xm",
    ],
)
def test_parse_time_rejects_what_is_not_a_time_of_day(text):
    with pytest.raises(ValueError):
        parse_time(text)


# --- schedule only: once -------------------------------------------------------------------


def test_schedule_alone_fires_later_today_when_the_time_is_still_ahead_then_never_again():
    # 14:00 UTC is 09:00 NYC: 9:30am is still ahead today. The generator ends after one.
    assert fires(Schedule(at=time(9, 30)), "2026-11-27 14:00") == ["2026-11-27 14:30:00"]


def test_schedule_alone_fires_tomorrow_when_the_time_has_passed_then_never_again():
    # 14:31 UTC is 09:31 NYC: 9:30am has passed today.
    assert fires(Schedule(at=time(9, 30)), "2026-11-27 14:31") == ["2026-11-28 14:30:00"]


def test_schedule_alone_reads_today_in_nyc_even_when_utc_is_already_tomorrow():
    # 2026-11-28 02:00 UTC is 2026-11-27 21:00 NYC: 10pm is still ahead *today in NYC*.
    assert fires(Schedule(at=time(22, 0)), "2026-11-28 02:00") == ["2026-11-28 03:00:00"]
    # ...and 8pm has passed in NYC (though in UTC terms 01:00 would still be ahead).
    assert fires(Schedule(at=time(20, 0)), "2026-11-28 02:00") == ["2026-11-29 01:00:00"]


def test_schedule_alone_at_exactly_the_time_waits_for_tomorrow():
    assert fires(Schedule(at=time(9, 30)), "2026-11-27 14:30") == ["2026-11-28 14:30:00"]


# --- period only: aligned to NYC midnight --------------------------------------------------


def test_hourly_fires_at_every_hour_aligned_to_nyc_midnight():
    assert fires(Schedule(period=HOURLY), "2026-11-27 14:31", 3) == [
        "2026-11-27 15:00:00",
        "2026-11-27 16:00:00",
        "2026-11-27 17:00:00",
    ]


def test_hourly_continues_through_nyc_midnight():
    # 03:30 UTC is 22:30 NYC.
    assert fires(Schedule(period=HOURLY), "2026-11-28 03:30", 3) == [
        "2026-11-28 04:00:00",  # 23:00 NYC
        "2026-11-28 05:00:00",  # 00:00 NYC
        "2026-11-28 06:00:00",  # 01:00 NYC
    ]


def test_period_1800_fires_at_every_hour_and_half_hour():
    assert fires(Schedule(period=1800), "2026-11-27 14:31", 4) == [
        "2026-11-27 15:00:00",
        "2026-11-27 15:30:00",
        "2026-11-27 16:00:00",
        "2026-11-27 16:30:00",
    ]


def test_period_is_aligned_to_nyc_midnight_not_utc_midnight():
    # Every 2 h from NYC midnight: 10:00, 12:00 NYC (= 15:00, 17:00 UTC in winter); aligned to
    # UTC midnight it would be 16:00 and 18:00 UTC.
    assert fires(Schedule(period=7200), "2026-11-27 14:31", 2) == [
        "2026-11-27 15:00:00",
        "2026-11-27 17:00:00",
    ]
    # Every 90 min from NYC midnight: ..., 09:00, 10:30, 12:00 NYC.
    assert fires(Schedule(period=5400), "2026-11-27 14:31", 2) == [
        "2026-11-27 15:30:00",
        "2026-11-27 17:00:00",
    ]


def test_daily_fires_at_nyc_midnight():
    assert fires(Schedule(period=DAILY), "2026-11-27 14:31", 2) == [
        "2026-11-28 05:00:00",  # 00:00 EST
        "2026-11-29 05:00:00",
    ]
    assert fires(Schedule(period=DAILY), "2026-07-01 12:00", 1) == ["2026-07-02 04:00:00"]  # EDT


# --- schedule and period: anchored at the schedule time ------------------------------------


def test_schedule_930am_hourly_fires_at_every_half_past_including_before_930():
    schedule = Schedule(at=time(9, 30), period=HOURLY)
    assert fires(schedule, "2026-11-27 14:31", 2) == ["2026-11-27 15:30:00", "2026-11-27 16:30:00"]
    # 04:50 UTC is 23:50 NYC: the next is 00:30 NYC, long before 9:30.
    assert fires(schedule, "2026-11-28 04:50", 2) == ["2026-11-28 05:30:00", "2026-11-28 06:30:00"]


def test_market_open_every_1800_fires_on_the_hour_and_half_hour():
    schedule = schedule_from({"market_open": True, "period": 1800}, "")
    assert schedule == Schedule(at=time(9, 30), period=1800)
    # 14:20 UTC is 09:20 NYC: 9:30, 10:00, 10:30 NYC.
    assert fires(schedule, "2026-11-27 14:20", 3) == [
        "2026-11-27 14:30:00",
        "2026-11-27 15:00:00",
        "2026-11-27 15:30:00",
    ]


def test_schedule_daily_keeps_the_nyc_wall_clock_time_across_both_dst_changes():
    schedule = Schedule(at=time(9, 30), period=DAILY)
    assert fires(schedule, "2026-03-06 15:00", 3) == [
        "2026-03-07 14:30:00",  # EST
        "2026-03-08 13:30:00",  # EDT from 2026-03-08
        "2026-03-09 13:30:00",
    ]
    assert fires(schedule, "2026-10-30 14:00", 3) == [
        "2026-10-31 13:30:00",  # EDT
        "2026-11-01 14:30:00",  # EST from 2026-11-01
        "2026-11-02 14:30:00",
    ]


# --- cron, read in NYC ---------------------------------------------------------------------


def test_cron_is_read_in_nyc_time():
    # Weekdays at 10:00 NYC. 2026-11-27 is a Friday; the next are Monday and Tuesday.
    assert fires(Schedule(cron="0 10 * * 1-5"), "2026-11-27 14:31", 3) == [
        "2026-11-27 15:00:00",
        "2026-11-30 15:00:00",
        "2026-12-01 15:00:00",
    ]
    # In summer 10:00 NYC is 14:00 UTC.
    assert fires(Schedule(cron="0 10 * * *"), "2026-07-01 12:00", 1) == ["2026-07-01 14:00:00"]


def test_cron_skips_a_time_that_does_not_exist_and_fires_a_repeated_time_once():
    assert fires(Schedule(cron="30 2 * * *"), "2026-03-07 00:00", 2) == [
        "2026-03-07 07:30:00",  # 02:30 EST
        "2026-03-09 06:30:00",  # 02:30 EDT; 2026-03-08 02:30 does not exist
    ]
    assert fires(Schedule(cron="30 1 * * *"), "2026-10-31 00:00", 3) == [
        "2026-10-31 05:30:00",
        "2026-11-01 05:30:00",  # the first 01:30 (EDT), not also 06:30 (EST)
        "2026-11-02 06:30:00",
    ]


# --- daylight saving -----------------------------------------------------------------------


def test_daily_230am_is_skipped_on_the_spring_forward_day():
    schedule = Schedule(at=time(2, 30), period=DAILY)
    assert fires(schedule, "2026-03-07 00:00", 2) == [
        "2026-03-07 07:30:00",  # 02:30 EST
        "2026-03-09 06:30:00",  # 02:30 EDT; none on 2026-03-08
    ]


def test_once_at_230am_on_the_spring_forward_day_fires_the_next_day():
    # 05:00 UTC is 00:00 EST on 2026-03-08: 02:30 is "ahead" but does not exist today.
    assert fires(Schedule(at=time(2, 30)), "2026-03-08 05:00") == ["2026-03-09 06:30:00"]


def test_daily_130am_fires_once_on_the_fall_back_day_at_the_first_occurrence():
    schedule = Schedule(at=time(1, 30), period=DAILY)
    assert fires(schedule, "2026-10-31 00:00", 3) == [
        "2026-10-31 05:30:00",  # 01:30 EDT
        "2026-11-01 05:30:00",  # the first 01:30 (EDT); the second (06:30 UTC) does not fire
        "2026-11-02 06:30:00",  # 01:30 EST
    ]


def test_once_at_130am_on_the_fall_back_day_fires_at_the_first_occurrence():
    # 04:00 UTC is 00:00 EDT on 2026-11-01.
    assert fires(Schedule(at=time(1, 30)), "2026-11-01 04:00") == ["2026-11-01 05:30:00"]
    # Between the two occurrences (05:45 UTC is 01:45 EDT), the second does not count.
    assert fires(Schedule(at=time(1, 30)), "2026-11-01 05:45") == ["2026-11-02 06:30:00"]


def test_hourly_fires_the_repeated_1am_once_on_the_fall_back_night():
    # 03:30 UTC is 23:30 EDT on 2026-10-31.
    assert fires(Schedule(period=HOURLY), "2026-11-01 03:30", 4) == [
        "2026-11-01 04:00:00",  # 00:00 EDT
        "2026-11-01 05:00:00",  # 01:00 EDT; 01:00 EST (06:00 UTC) is the same wall time
        "2026-11-01 07:00:00",  # 02:00 EST
        "2026-11-01 08:00:00",
    ]


def test_hourly_has_no_2am_on_the_spring_forward_night():
    # 04:30 UTC is 23:30 EST on 2026-03-07.
    assert fires(Schedule(period=HOURLY), "2026-03-08 04:30", 4) == [
        "2026-03-08 05:00:00",  # 00:00 EST
        "2026-03-08 06:00:00",  # 01:00 EST
        "2026-03-08 07:00:00",  # 03:00 EDT
        "2026-03-08 08:00:00",  # 04:00 EDT
    ]


def test_fire_times_are_given_in_nyc_time():
    [fire] = Schedule(at=time(9, 30)).fire_times(utc("2026-11-27 14:00"))
    assert fire.isoformat() == "2026-11-27T09:30:00-05:00"
    [fire] = Schedule(at=time(1, 30)).fire_times(utc("2026-11-01 04:00"))
    assert fire.isoformat() == "2026-11-01T01:30:00-04:00"


# --- wall clock or monotonic ---------------------------------------------------------------


@pytest.mark.parametrize("period", [60, 1800, 3600, 5400, 7200, 21600, 43200, 86400])
def test_a_period_that_divides_24_hours_is_pinned_to_the_wall_clock(period):
    schedule = Schedule(period=period)
    assert schedule.is_wall_clock and not schedule.is_monotonic


@pytest.mark.parametrize("period", [7000, 7, 25 * 3600, 2 * 86400])
def test_a_period_that_does_not_divide_24_hours_is_monotonic(period):
    schedule = Schedule(period=period)
    assert schedule.is_monotonic and not schedule.is_wall_clock
    assert schedule.is_monotonic == Schedule(at=time(9, 30), period=period).is_monotonic


def test_monotonic_period_counts_from_its_start_not_from_the_wall_clock():
    schedule = Schedule(period=7000)
    # 7000 s = 1 h 56 min 40 s after whenever it started.
    assert fires(schedule, "2026-11-27 14:31", 2) == ["2026-11-27 16:27:40", "2026-11-27 18:24:20"]
    assert fires(schedule, "2026-11-27 14:32:05", 1) == ["2026-11-27 16:28:45"]


# --- check_slot ----------------------------------------------------------------------------

MORNING = Schedule(at=time(9, 30), period=DAILY)  # 9:30am NYC = 14:30 UTC in winter


def test_check_slot_on_time_runs_the_fire_time_just_passed():
    check = check_slot(MORNING, utc("2026-11-30 14:30"), 300)
    assert check.skip_reason is None
    assert check.slot.isoformat() == "2026-11-30T09:30:00-05:00"


def test_check_slot_accepts_nyc_or_utc_now_alike():
    now = utc("2026-11-30 14:31").astimezone(NYC)
    assert slot_utc(check_slot(MORNING, now, 300)) == utc("2026-11-30 14:30")


@pytest.mark.parametrize("now", ["2026-11-30 14:31", "2026-11-30 14:34:59", "2026-11-30 14:35:00"])
def test_check_slot_within_max_delay_runs_the_slot(now):
    check = check_slot(MORNING, utc(now), 300)
    assert check.skip_reason is None
    assert slot_utc(check) == utc("2026-11-30 14:30")


@pytest.mark.parametrize("now", ["2026-11-30 14:35:01", "2026-11-30 18:00", "2026-12-01 14:29:59"])
def test_check_slot_later_than_max_delay_is_stale(now):
    check = check_slot(MORNING, utc(now), 300)
    assert check.slot is None
    assert "stale" in check.skip_reason


def test_check_slot_honours_a_longer_max_delay():
    assert slot_utc(check_slot(MORNING, utc("2026-11-30 15:29"), 3600)) == utc("2026-11-30 14:30")
    assert "stale" in check_slot(MORNING, utc("2026-11-30 15:31"), 3600).skip_reason


def test_check_slot_picks_the_latest_fire_time_of_a_recurring_schedule():
    check = check_slot(Schedule(period=HOURLY), utc("2026-11-30 15:02"), 300)
    assert slot_utc(check) == utc("2026-11-30 15:00")


def test_check_slot_of_a_schedule_alone_is_its_time_on_whichever_day_the_timer_fires():
    check = check_slot(Schedule(at=time(9, 30)), utc("2026-12-03 14:31"), 300)
    assert slot_utc(check) == utc("2026-12-03 14:30")


def test_check_slot_on_the_fall_back_day_only_the_first_occurrence_is_a_slot():
    schedule = Schedule(at=time(1, 30), period=DAILY)
    first = check_slot(schedule, utc("2026-11-01 05:31"), 300)  # 01:31 EDT
    assert slot_utc(first) == utc("2026-11-01 05:30")
    assert first.slot.isoformat() == "2026-11-01T01:30:00-04:00"
    second = check_slot(schedule, utc("2026-11-01 06:31"), 300)  # 01:31 EST
    assert second.slot is None and "stale" in second.skip_reason


def test_check_slot_on_the_spring_forward_day_has_no_230am_slot():
    schedule = Schedule(at=time(2, 30), period=DAILY)
    # 07:31 UTC is 03:31 EDT, one wall-clock hour after the 02:30 that never was.
    check = check_slot(schedule, utc("2026-03-08 07:31"), 300)
    assert check.slot is None and check.skip_reason
    # 06:31 UTC is 01:31 EST: nothing just passed either.
    assert check_slot(schedule, utc("2026-03-08 06:31"), 300).slot is None


def test_check_slot_of_a_cron_that_has_not_fired_lately_is_off_schedule():
    check = check_slot(Schedule(cron="0 10 1 1 *"), utc("2026-11-30 15:00"), 300)
    assert check.slot is None
    assert "off schedule" in check.skip_reason


def test_check_slot_of_a_cron_runs_its_nyc_fire_time():
    check = check_slot(Schedule(cron="0 10 * * 1-5"), utc("2026-11-30 15:01"), 300)
    assert slot_utc(check) == utc("2026-11-30 15:00")


@pytest.mark.parametrize("schedule", [Schedule(period=7000), Schedule(at=time(9, 30), period=7000)])
def test_check_slot_of_a_monotonic_period_has_no_slot_and_never_skips(schedule):
    for now in ("2026-11-30 14:31", "2026-11-30 03:17:42", "2026-03-08 07:00"):
        check = check_slot(schedule, utc(now), 1)
        assert check.slot is None and check.skip_reason is None
    assert schedule.last_fire_time(utc("2026-11-30 14:31"), timedelta(days=8)) is None


def test_check_slot_of_no_schedule_never_skips():
    check = check_slot(Schedule(), utc("2026-11-30 14:31"), 300)
    assert check.slot is None and check.skip_reason is None
