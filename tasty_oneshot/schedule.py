"""A job's schedule: the familiar flags turned into fire times in New York time.

Every wall-clock time here is America/New_York. A fire time is an aware datetime; they are
compared in UTC, because two NYC datetimes on the fall-back night compare by wall clock only.

Daylight saving: a wall-clock time that does not exist that day (spring forward) is skipped;
one that occurs twice (fall back) fires once, at its first occurrence.
"""

import functools
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

NYC = ZoneInfo("America/New_York")
DAY = 86400
MARKET_OPEN = time(9, 30)

_TIME = re.compile(r"^(\d{1,2})(?::(\d{2}))? ?([ap]m)?$", re.IGNORECASE)


def parse_time(text: str) -> time:
    """`9:30am`, `9:30 AM`, `4pm`, `09:30`, `16:00` -> a time of day (case, one space ignored)."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a time like 9:30am, 4pm or 16:00")
    hour, minute, meridiem = int(match[1]), int(match[2] or 0), (match[3] or "").lower()
    if meridiem:
        if not 1 <= hour <= 12:
            raise ValueError(f"{text!r}: the hour must be 1-12 with am/pm")
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    elif match[2] is None:
        hint = f"{hour}:00 or {hour}am/pm" if 1 <= hour <= 12 else f"{hour}:00"
        raise ValueError(f"{text!r} is ambiguous: write {hint}")
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day")
    return time(hour, minute)


def format_time(at: time) -> str:
    """A time of day the way people write it: 9:30am, 4pm."""
    hour = at.hour % 12 or 12
    suffix = "am" if at.hour < 12 else "pm"
    return f"{hour}{suffix}" if at.minute == 0 else f"{hour}:{at.minute:02d}{suffix}"


def parse_cron(expression: str) -> str:
    """Check a five-field cron expression; return it with its fields single-spaced."""
    from croniter import croniter  # only schedules written in cron pay for the import

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} is not a five-field cron expression (M H DOM MON DOW)")
    normalized = " ".join(fields)
    if not croniter.is_valid(normalized):
        raise ValueError(f"{expression!r} is not a valid cron expression")
    try:  # valid but impossible, like Feb 31: croniter gives up looking
        croniter(normalized, datetime(2026, 1, 1)).get_next(datetime)
    except Exception:
        raise ValueError(f"{expression!r} never fires") from None
    return normalized


def cron_fields(
    expression: str,
) -> tuple[list[int], list[int], list[int] | None, list[int], list[int] | None]:
    """A cron expression's minutes, hours, days of month, months and weekdays (0 = Sunday),
    each a list of numbers; days or weekdays None when unrestricted (`*`)."""
    from croniter import croniter

    # Each field is ["*"] or its values: numbers, or strings like "l" for `L`. (The stubs say
    # list[list[str]]; the wider read-only type lets the numbers be told apart.)
    fields: Sequence[Sequence[int | str]] = croniter(expression).expanded
    if len(fields) != 5:
        raise ValueError(f"{expression!r} is not a five-field cron expression")

    def numbers(index: int) -> list[int] | None:
        """The field's numbers, in order; None when unrestricted (`*`)."""
        field = fields[index]
        if field == ["*"]:
            return None
        values = [v for v in field if isinstance(v, int)]
        if len(values) != len(field):
            raise ValueError(f"{expression!r}: {field} has no plain-number form")
        return sorted({v % 7 if index == 4 else v for v in values})

    def numbers_or_all(index: int, low: int, high: int) -> list[int]:
        """The field's numbers, or every number from low to high when unrestricted."""
        values = numbers(index)
        return list(range(low, high + 1)) if values is None else values

    return (
        numbers_or_all(0, 0, 59),
        numbers_or_all(1, 0, 23),
        numbers(2),
        numbers_or_all(3, 1, 12),
        numbers(4),
    )


CronFields = tuple[list[int], list[int], list[int] | None, list[int], list[int] | None]


@functools.cache
def _plain_cron(expression: str) -> CronFields | None:
    """The expression's fields when they are plain numbers (no L, W or #); else None."""
    from croniter import croniter

    try:
        fields = cron_fields(expression)
    except ValueError:
        return None
    return None if croniter(expression).nth_weekday_of_month else fields


def _cron_walls(fields: CronFields, start: datetime) -> Iterator[datetime]:
    """Naive wall-clock times of a plain cron at or after `start`, day by day (far quicker
    than asking croniter for each: `status` walks a week of a minutely cron for every job).
    Like cron, a day matches its day of month or its weekday when both are restricted."""
    minutes, hours, days, months, weekdays = fields
    times = [time(h, m) for h in hours for m in minutes]
    day = start.date()
    while True:
        weekday = (day.weekday() + 1) % 7  # cron counts from Sunday
        by_day = days is not None and day.day in days
        by_weekday = weekdays is not None and weekday in weekdays
        every_day = days is None and weekdays is None
        if day.month in months and (every_day or by_day or by_weekday):
            for at in times:
                wall = datetime.combine(day, at)
                if wall >= start:
                    yield wall
        day += timedelta(days=1)


class Schedule(NamedTuple):
    """When a job fires. Empty (all None) means: only when started by hand."""

    at: time | None = None  # --schedule / --market-open
    period: int | None = None  # seconds: --hourly / --daily / --period
    cron: str | None = None

    @property
    def is_empty(self) -> bool:
        return self.at is None and self.period is None and self.cron is None

    @property
    def is_once(self) -> bool:
        """A schedule time alone: one fire time, then never again."""
        return self.at is not None and self.period is None and self.cron is None

    @property
    def is_wall_clock(self) -> bool:
        """Whether the fire times are pinned to the NYC wall clock (and so have slots)."""
        if self.cron is not None or self.is_once:
            return True
        return self.period is not None and DAY % self.period == 0

    @property
    def is_monotonic(self) -> bool:
        """A period that does not divide 24 hours: every PERIOD from whenever it started."""
        return self.period is not None and not self.is_wall_clock

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} (NYC)"
        if self.period is None:  # a schedule time alone, or nothing at all
            return "no schedule" if self.at is None else f"once at {format_time(self.at)} NYC"
        every = {3600: "hourly", DAY: "daily"}.get(self.period, f"every {self.period}s")
        if self.is_monotonic:
            return f"{every} (monotonic, not pinned to the wall clock)"
        anchor = f"anchored at {format_time(self.at)}" if self.at else "from midnight"
        return f"{every} NYC, {anchor}"

    def flags(self) -> list[str]:
        """The command-line flags that say this schedule."""
        if self.cron is not None:
            return ["--cron", self.cron]
        out = ["--schedule", format_time(self.at)] if self.at else []
        if self.period == 3600:
            out.append("--hourly")
        elif self.period == DAY:
            out.append("--daily")
        elif self.period is not None:
            out += ["--period", str(self.period)]
        return out

    def offsets(self) -> list[int]:
        """Seconds after NYC midnight of each daily fire time (wall-clock periods and once)."""
        anchor = self.at.hour * 3600 + self.at.minute * 60 if self.at else 0
        if self.period is None:
            return [anchor]
        return list(range(anchor % self.period, DAY, self.period))

    def _wall_times(self, start: datetime) -> Iterator[datetime]:
        """Naive NYC wall-clock fire times at or after naive `start`, ascending, forever."""
        if self.cron is not None:
            fields = _plain_cron(self.cron)
            if fields is None:  # L, W or #: croniter knows them
                from croniter import croniter

                it = croniter(self.cron, start - timedelta(seconds=1))
                while True:
                    yield it.get_next(datetime)
            yield from _cron_walls(fields, start)
        offsets = self.offsets()
        day = start.date()
        while True:
            midnight = datetime.combine(day, time())
            for offset in offsets:
                wall = midnight + timedelta(seconds=offset)
                if wall >= start:
                    yield wall
            day += timedelta(days=1)

    def fire_times(self, after: datetime, *, recurring: bool = False) -> Iterator[datetime]:
        """Fire times strictly after `after`, in NYC, ascending.

        A schedule time alone fires once; `recurring=True` treats it as daily instead, which is
        what the slot guard needs (it asks "was there a fire time just now?").
        A monotonic period yields after + k * period.
        """
        if self.is_empty:
            return
        period = self.period
        if period is not None and self.is_monotonic:
            k, after = 1, after.replace(microsecond=0)
            while True:
                yield (after + timedelta(seconds=k * period)).astimezone(NYC)
                k += 1
        after_utc = after.astimezone(UTC)
        # Start a little before `after` on the wall clock: around a DST change the wall time
        # of an instant is up to an hour off from what a naive reading suggests.
        start = after_utc.astimezone(NYC).replace(tzinfo=None) - timedelta(hours=2)
        for wall in self._wall_times(start.replace(microsecond=0)):
            fire = localize(wall)
            if fire is None or fire.astimezone(UTC) <= after_utc:
                continue
            yield fire
            if self.is_once and not recurring:
                return

    def last_fire_time(self, now: datetime, lookback: timedelta) -> datetime | None:
        """The latest fire time at or before `now`, looking back at most `lookback`."""
        if not self.is_wall_clock:
            return None
        now_utc = now.astimezone(UTC)
        last = None
        for fire in self.fire_times(now - lookback, recurring=True):
            if fire.astimezone(UTC) > now_utc:
                break
            last = fire
        return last


def localize(wall: datetime) -> datetime | None:
    """A naive NYC wall-clock time as an aware one: None in a spring-forward gap, the first
    occurrence in a fall-back fold."""
    aware = wall.replace(tzinfo=NYC, fold=0)
    back = aware.astimezone(UTC).astimezone(NYC)
    if back.replace(tzinfo=None) != wall:
        return None
    return back


def now_nyc() -> datetime:
    return datetime.now(UTC).astimezone(NYC)


class SlotCheck(NamedTuple):
    """The slot guard's answer for `run --scheduled`."""

    slot: datetime | None  # the fire time this invocation runs, if any
    skip_reason: str | None  # why it must not run, if it must not


SURPLUS_TOLERANCE = 30  # seconds after its minute a surplus crontab firing may start


def check_slot(schedule: Schedule, now: datetime, max_delay: int) -> SlotCheck:
    """Is `now` at most `max_delay` seconds after a fire time of `schedule`?

    Schedules with no wall-clock fire times (none, or a monotonic period) have no slots:
    every timer firing may run. A firing that is not a fire time at all is "off schedule"
    (with the next fire time), such as the surplus crontab line for the other New York
    offset, an hour off; one that comes too long after a fire time is "stale" (a late
    catch-up, after the host was off).
    """
    if not schedule.is_wall_clock:
        return SlotCheck(None, None)
    # Look back max_delay first (cheap even for a minutely cron), then far enough to say
    # which fire time was missed.
    last = schedule.last_fire_time(now, timedelta(seconds=max_delay + 1))
    if last is None:
        last = schedule.last_fire_time(now, timedelta(days=8))
    late = (now.astimezone(UTC) - last.astimezone(UTC)).total_seconds() if last else None
    if last is not None and late is not None and late <= max_delay:
        return SlotCheck(last, None)
    upcoming = next(schedule.fire_times(now, recurring=True), None)
    after = f"; the next is {upcoming.isoformat(timespec='minutes')}" if upcoming else ""
    # A firing half an hour or an hour off a fire time, to the minute, is a crontab line
    # for the other offset between the host's zone and New York's, not a late run.
    shifted = (now + timedelta(minutes=m) for m in (-60, 60, -30, 30))
    window = timedelta(seconds=min(SURPLUS_TOLERANCE, max_delay))
    if any(schedule.last_fire_time(t, window) for t in shifted):
        wall = now.astimezone(NYC)
        return SlotCheck(None, f"off schedule: {wall:%H:%M} is not a fire time in New York{after}")
    if last is None:
        return SlotCheck(None, f"off schedule: no fire time in the last 8 days{after}")
    return SlotCheck(
        None,
        f"stale: the last fire time {last.isoformat(timespec='seconds')} was {late:.0f}s "
        f"ago, more than the max delay of {max_delay}s",
    )
