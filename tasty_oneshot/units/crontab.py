"""crontab lines for a job, for a cron daemon that runs in `--cron-tz` and ignores CRON_TZ.

Debian's and Ubuntu's cron fire in the host's zone. New York's offset from that zone moves
with either zone's daylight saving, so every New York fire time gets a line for each offset
the two zones can have between them. The surplus firings are harmless: every line calls
`run --scheduled`, whose slot guard runs each slot once and skips the rest.
"""

import functools
import itertools
import math
import os
import shlex
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasty_oneshot.jobs import Job
from tasty_oneshot.schedule import DAY, NYC, Schedule, cron_fields, localize
from tasty_oneshot.units import hours_by_pattern

# Periods cron can say: whole minutes that divide a day.
CRON_PERIODS = [p for p in range(60, DAY + 1, 60) if DAY % p == 0]


class CannotExpress(ValueError):
    """The schedule has no crontab form."""


def cron_daemon_zone(
    localtime: Path = Path("/etc/localtime"), timezone: Path = Path("/etc/timezone")
) -> str:
    """The zone the cron daemon runs in: the system's, /etc/localtime named by its link's
    target, else by /etc/timezone, else UTC. Not this shell's $TZ: cron never sees it."""
    target = os.path.realpath(localtime)
    if "zoneinfo/" in target:
        return target.split("zoneinfo/", 1)[1]
    try:
        return timezone.read_text().strip() or "UTC"
    except (OSError, UnicodeDecodeError):
        return "UTC"


def shell_zone() -> str | None:
    """The zone this shell's $TZ names (None: $TZ is not set)."""
    tz = os.environ.get("TZ")
    if tz is None:
        return None
    tz = tz.removeprefix(":")
    if tz.startswith("/"):
        target = os.path.realpath(tz)
        return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else tz
    return tz or "UTC"  # an empty TZ is UTC to the C library


def same_clock(a: str, b: str, start: datetime) -> bool:
    """Whether two zones show the same time over the year from `start` (UTC is Etc/UTC)."""
    try:
        first, second = ZoneInfo(a), ZoneInfo(b)
    except (ZoneInfoNotFoundError, ValueError):
        return a == b
    for hours in range(0, 366 * 24, 6):
        moment = start + timedelta(hours=hours)
        if moment.astimezone(first).utcoffset() != moment.astimezone(second).utcoffset():
            return False
    return True


@functools.cache
def _sample_days(zone: ZoneInfo, start: date, years: int = 2) -> tuple[date, ...]:
    """Days on which to read the zone shift: each day around a UTC-offset change of either
    zone, and one day between changes. The shift is constant in between."""
    changes = []
    moment = datetime.combine(start, datetime.min.time(), UTC)
    previous = None
    for hour in range(years * 366 * 24):
        at = moment + timedelta(hours=hour)
        offsets = (at.astimezone(zone).utcoffset(), at.astimezone(NYC).utcoffset())
        if offsets != previous:
            changes.append(at.date())
            previous = offsets
    changes.append(start + timedelta(days=years * 366))
    days = set()
    for first, second in itertools.pairwise(changes):
        days |= {first - timedelta(days=1), first, first + timedelta(days=1)}
        days.add(first + (second - first) / 2)
    return tuple(sorted(days))


# (hour, minute, fold) on the cron zone's clock, by the days it moves (-1, 0, +1).
ZoneTimes = dict[int, set[tuple[int, int, int]]]


def zone_times(times: list[tuple[int, int]], zone: ZoneInfo, start: date) -> ZoneTimes:
    """Where each New York (hour, minute) falls on `zone`'s clock on any day of the coming
    years, grouped by how many days it moves (-1, 0, +1), as (hour, minute, fold): fold 1
    where it can fall in the second pass of an hour the zone's clock repeats (fall back)."""
    return _zone_times(tuple(sorted(set(times))), zone, start)


@functools.cache
def _zone_times(times: tuple[tuple[int, int], ...], zone: ZoneInfo, start: date) -> ZoneTimes:
    out: ZoneTimes = {}
    for day in _sample_days(zone, start):
        midnight = datetime.combine(day, datetime.min.time())
        if _steady(day, zone):  # one shift for the whole day: move the times by it
            first = _nyc_midnight(day).astimezone(zone)
            shift = int((first.replace(tzinfo=None) - midnight).total_seconds()) // 60
            for hour, minute in times:
                day_shift, minute_of_day = divmod(hour * 60 + minute + shift, 1440)
                out.setdefault(day_shift, set()).add((*divmod(minute_of_day, 60), 0))
            continue
        for hour, minute in times:
            fire = localize(midnight.replace(hour=hour, minute=minute))
            if fire is None:  # a spring-forward gap: no fire time that day
                continue
            there = fire.astimezone(zone)
            out.setdefault((there.date() - day).days, set()).add(
                (there.hour, there.minute, there.fold)
            )
    return dict(sorted(out.items()))


def _steady(day: date, zone: ZoneInfo) -> bool:
    """Whether neither zone changes its UTC offset during this New York day."""
    start = _nyc_midnight(day)
    end = start + timedelta(days=1)
    return all(
        start.astimezone(z).utcoffset() == end.astimezone(z).utcoffset() for z in (zone, NYC)
    )


def _nyc_midnight(day: date) -> datetime:
    """The start of a New York day, aware. It always exists: New York's clocks change at 2am."""
    midnight = localize(datetime.combine(day, datetime.min.time()))
    if midnight is None:
        raise ValueError(f"midnight of {day} does not exist in New York")
    return midnight


def check_expressible(schedule: Schedule) -> None:
    """Refuse what cron cannot say, naming the reason and the nearest periods that work."""
    period = schedule.period
    if period is not None and period not in CRON_PERIODS:
        lower = max((p for p in CRON_PERIODS if p < period), default=None)
        higher = min((p for p in CRON_PERIODS if p > period), default=None)
        nearest = " or ".join(str(p) for p in (lower, higher) if p is not None)
        why = (
            "is under a minute, cron's smallest step"
            if period < 60
            else "is not a whole number of minutes"
            if period % 60
            else "does not divide 24 hours, so it cannot be pinned to the wall clock"
        )
        raise CannotExpress(f"period {period}s {why}; nearest periods cron can keep: {nearest}")


def cron_lines(job: Job, zone: ZoneInfo, command: str, now: datetime) -> list[str]:
    """The crontab lines for `job` on a cron daemon running in `zone`."""
    entry = _escape(command)
    return [f"{fields} {entry}" for fields in cron_schedules(job, zone, now)]


def cron_schedules(job: Job, zone: ZoneInfo, now: datetime) -> list[str]:
    """The five time and date fields of each of `job`'s lines for a cron in `zone` (in New
    York's own zone: exactly the job's fire times, what a Kubernetes CronJob needs)."""
    schedule = job.schedule
    check_expressible(schedule)
    days: list[int] | None
    months: list[int] | None
    weekdays: list[int] | None
    if schedule.cron is not None:
        minutes, hours, days, months, weekdays = cron_fields(schedule.cron)
        nyc_times = [(h, m) for h in hours for m in minutes]
    elif schedule.is_once:
        # One instant: its time on the cron zone's clock is known exactly.
        fire = next(schedule.fire_times(now)).astimezone(zone)
        fire_time = {(fire.hour, fire.minute)}
        make_fields = _repeated_hour_fields if fire.fold else _minute_hour_fields
        [(minute_field, hour_field)] = make_fields(fire_time)
        return [f"{minute_field} {hour_field} {fire.day} {fire.month} *"]
    else:
        nyc_times = [(offset // 3600, offset % 3600 // 60) for offset in schedule.offsets()]
        days = months = weekdays = None
    shifted = zone_times(nyc_times, zone, now.astimezone(NYC).date())
    if days is None and weekdays is None and months is None:
        # Every day alike: the day a time moves to does not matter.
        shifted = {0: set[tuple[int, int, int]]().union(*shifted.values())}
    lines = []
    for day_shift, there in shifted.items():
        dom, month = _shift_days(days, months, day_shift)
        dow = "*" if weekdays is None else _field([(w + day_shift) % 7 for w in weekdays], 7)
        there_times = {(h, m) for h, m, _ in there}
        fields = _minute_hour_fields(there_times)
        # Debian's cron runs only "wildcard" lines (minute or hour field starting with `*`) in
        # the second pass of an hour its clock repeats: an hour with a time that can fall there
        # gets one, and no other line, so no two lines fire at once.
        repeated = {h for h, _, fold in there if fold}
        if repeated and not all(m[0] == "*" or h[0] == "*" for m, h in fields):
            plain = {(h, m) for h, m in there_times if h not in repeated}
            fields = _minute_hour_fields(plain) + _repeated_hour_fields(there_times - plain)
        for minute_field, hour_field in fields:
            lines.append(f"{minute_field} {hour_field} {dom} {month} {dow}")
    return lines


def _minute_hour_fields(times: set[tuple[int, int]]) -> list[tuple[str, str]]:
    """(hour, minute) pairs as (minute field, hour field) pairs: hours sharing the same
    minutes share a line, so no line fires at a time not in the set."""
    return [(_field(minutes, 60), _field(hours, 24)) for minutes, hours in hours_by_pattern(times)]


def _repeated_hour_fields(times: Iterable[tuple[int, int]]) -> list[tuple[str, str]]:
    """(minute field, hour field) pairs covering `times` whose minute field starts with `*`:
    `*/STEP` through each hour's minutes. The slot guard skips the extra minutes."""
    steps: dict[int, int] = {}
    for hour, minute in times:
        steps[hour] = math.gcd(steps.get(hour, 60), minute)
    by_step: dict[int, list[int]] = {}
    for hour, step in sorted(steps.items()):
        # `*/60` is outside the minute field's range: `*/30` says minute 0 with one extra.
        by_step.setdefault(30 if step == 60 else step, []).append(hour)
    return [(f"*/{step}", _field(hours, 24)) for step, hours in by_step.items()]


def _shift_days(
    days: list[int] | None, months: list[int] | None, day_shift: int
) -> tuple[str, str]:
    """Day-of-month and month fields moved by `day_shift` days (-1, 0, +1): a superset where
    the move crosses a month's end. None is unrestricted (`*`)."""
    if days is None:
        if months is None:
            return "*", "*"
        # Near a month's end the move can cross into the month next to it.
        moved = {(m + day_shift - 1) % 12 + 1 for m in months} if day_shift else set()
        return "*", _field(sorted(set(months) | moved), 12, start=1)
    if months is None:  # every month
        months = list(range(1, 13))
    if day_shift == 0:
        new_days, new_months = set(days), set(months)
    elif day_shift > 0:
        new_days = {d + 1 for d in days if d < 31}
        new_months = set(months)
        if any(d >= 28 for d in days):  # the last day of a month moves to the 1st of the next
            new_days.add(1)
            new_months |= {m % 12 + 1 for m in months}
    else:
        new_days = {d - 1 for d in days if d > 1}
        new_months = set(months)
        if 1 in days:  # the 1st moves back to the last day of the month before
            new_days |= {28, 29, 30, 31}
            new_months |= {(m - 2) % 12 + 1 for m in months}
    return _field(sorted(new_days), 31, start=1), _field(sorted(new_months), 12, start=1)


def _field(values: list[int], size: int | None = None, start: int = 0) -> str:
    values = sorted(set(values))
    if size is not None and values == list(range(start, start + size)):
        return "*"
    return ",".join(str(v) for v in values)


def _escape(command: str) -> str:
    """cron turns an unescaped % into a line break and `\\%` into `%`: escape each % so the
    agent gets a %. cron has no way to say a backslash followed by a % (`\\\\%` is a kept
    backslash, then a bare %), and shlex puts every backslash inside single quotes, so there
    the quotes are closed around the %: `'a\\'\\%'b'` reaches sh as `'a\\'%'b'`."""
    return "".join(
        ("'\\%'" if command[i - 1 : i] == "\\" else "\\%") if c == "%" else c
        for i, c in enumerate(command)
    )


def crontab_command(words: list[str]) -> str:
    if any("\n" in word or "\r" in word for word in words):
        raise CannotExpress(
            "a crontab line cannot hold a line break: put the instructions in "
            "a jobs file and generate with --job"
        )
    return shlex.join(words)
