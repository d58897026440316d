"""Is the NYSE regular session open at a given moment?

The broker's market sessions decide when TastyTrade credentials are set; without them, or when
the broker cannot be reached, the offline NYSE calendar (exchange_calendars, holidays and early
closes included) decides. Each day's session is cached in the state directory, so repeated runs
on the same day neither call the broker nor import pandas again.
"""

import functools
import json
import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tasty_oneshot import paths
from tasty_oneshot.errors import UsageError, one_line
from tasty_oneshot.schedule import NYC

if TYPE_CHECKING:  # imports pandas: only when the calendar is asked
    from exchange_calendars import ExchangeCalendar

log = logging.getLogger(__name__)

BROKER = "broker"
CALENDAR = "offline NYSE calendar"
BROKER_TIMEOUT = 10.0  # seconds for each HTTP request to the broker


class MarketCheckError(Exception):
    """Neither the broker nor the calendar could say whether the market is open."""


class Credentials(NamedTuple):
    client_secret: str
    refresh_token: str

    @classmethod
    def from_env(cls) -> "Credentials | None":
        secret = os.environ.get("TASTYTRADE_CLIENT_SECRET")
        token = os.environ.get("TASTYTRADE_REFRESH_TOKEN")
        return cls(secret, token) if secret and token else None


class MarketDay(NamedTuple):
    """The NYSE regular session of one NYC day: open_at/close_at in UTC, or None when closed."""

    day: date
    open_at: datetime | None
    close_at: datetime | None
    source: str

    def is_open(self, at: datetime) -> bool:
        if self.open_at is None or self.close_at is None:
            return False
        return self.open_at <= at.astimezone(UTC) < self.close_at

    def describe(self) -> str:
        if self.open_at is None or self.close_at is None:
            return f"no regular session on {self.day}"
        opens = self.open_at.astimezone(NYC).strftime("%H:%M")
        closes = self.close_at.astimezone(NYC).strftime("%H:%M")
        return f"regular session {self.day} {opens}-{closes} NYC"

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "open_at": self.open_at.isoformat() if self.open_at else None,
            "close_at": self.close_at.isoformat() if self.close_at else None,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MarketDay":
        def moment(text: str | None) -> datetime | None:
            return datetime.fromisoformat(text).astimezone(UTC) if text else None

        return cls(
            date.fromisoformat(data["day"]),
            moment(data["open_at"]),
            moment(data["close_at"]),
            data["source"],
        )


class Verdict(NamedTuple):
    open: bool
    source: str
    session: MarketDay

    def describe(self) -> str:
        state = "open" if self.open else "closed"
        return f"market {state} (decided by {self.source}: {self.session.describe()})"


def cached_verdict(
    at: datetime, cache_dir: Path, credentials: Credentials | None
) -> "Verdict | None":
    """The verdict from today's cache alone, if the source that would decide has cached it.

    Cheap and synchronous: a skip decided here never imports asyncio, pandas or the SDK.
    """
    day = at.astimezone(NYC).date()
    session = _read_cache(cache_dir, day, BROKER if credentials else CALENDAR)
    if session is None:
        return None
    return Verdict(open=session.is_open(at), source=session.source, session=session)


async def check_market(
    at: datetime, cache_dir: Path, credentials: Credentials | None, **broker_client: Any
) -> Verdict:
    """Whether the NYSE regular session is open at `at`, and who decided."""
    day = at.astimezone(NYC).date()
    session = None
    if credentials is not None:
        session = _read_cache(cache_dir, day, BROKER)
        if session is None:
            try:
                session = await broker_day(day, credentials, **broker_client)
            except Exception as exc:  # any broker failure falls back to the calendar
                log.warning(
                    "broker market sessions unavailable (%s); using the %s", one_line(exc), CALENDAR
                )
            else:
                _write_cache(cache_dir, session)
    if session is None:
        session = _read_cache(cache_dir, day, CALENDAR)
        if session is None:
            try:
                session = calendar_day(day)
            except Exception as exc:
                raise MarketCheckError(f"the {CALENDAR} cannot say: {one_line(exc)}") from exc
            _write_cache(cache_dir, session)
    return Verdict(open=session.is_open(at), source=session.source, session=session)


def calendar_cached(day: date, cache_dir: Path) -> MarketDay:
    """The offline calendar's session for the day, through the day cache (the calendar's
    own entries only); ValueError beyond the calendar's range."""
    session = _read_cache(cache_dir, day, CALENDAR)
    if session is None:
        session = calendar_day(day)
        _write_cache(cache_dir, session)
    return session


def known_day(day: date, cache_dir: Path) -> MarketDay:
    """The day's session for looking back (`status`): as cached by the runs of that day (the
    broker's first), else the offline calendar's, cached for the next look. A day neither
    can say counts as closed, so nothing is reported missed on a guess."""
    for source in (BROKER, CALENDAR):
        session = _read_cache(cache_dir, day, source)
        if session is not None:
            return session
    try:
        session = calendar_day(day)
    except Exception:  # outside the calendar's range
        return MarketDay(day, None, None, CALENDAR)
    _write_cache(cache_dir, session)
    return session


async def broker_day(day: date, credentials: Credentials, **client_kwargs: Any) -> MarketDay:
    """The day's regular session according to TastyTrade's market sessions."""
    from tastytrade import Session
    from tastytrade.market_sessions import ExchangeType, get_market_sessions

    client_kwargs.setdefault("timeout", BROKER_TIMEOUT)
    async with Session(
        credentials.client_secret, credentials.refresh_token, **client_kwargs
    ) as session:
        sessions = await get_market_sessions(session, [ExchangeType.NYSE])
    if not sessions:
        raise MarketCheckError("the broker returned no equity market session")
    current = sessions[0]
    # The current session, or the next or previous one, may be today's; if none is, today
    # has no regular session (a weekend or holiday).
    candidates = [(current.open_at, current.close_at)]
    for snapshot in (current.next_session, current.previous_session):
        if snapshot is not None and snapshot.session_date == day:
            candidates.append((snapshot.open_at, snapshot.close_at))
    for open_at, close_at in candidates:
        if open_at and close_at and open_at.astimezone(NYC).date() == day:
            return MarketDay(day, open_at.astimezone(UTC), close_at.astimezone(UTC), BROKER)
    return MarketDay(day, None, None, BROKER)


def calendar_day(day: date) -> MarketDay:
    """The day's regular session according to the offline NYSE calendar."""
    calendar = _xnys()
    if not calendar.is_session(day):
        return MarketDay(day, None, None, CALENDAR)
    open_at = calendar.session_open(day).to_pydatetime().astimezone(UTC)
    close_at = calendar.session_close(day).to_pydatetime().astimezone(UTC)
    return MarketDay(day, open_at, close_at, CALENDAR)


@functools.cache
def _xnys() -> "ExchangeCalendar":
    import exchange_calendars

    return exchange_calendars.get_calendar("XNYS")


def _cache_path(cache_dir: Path, day: date, source: str) -> Path:
    tag = "broker" if source == BROKER else "calendar"
    return cache_dir / f"{day.isoformat()}.{tag}.json"


def _read_cache(cache_dir: Path, day: date, source: str) -> MarketDay | None:
    """The cached session, if a file of ours holds one for that day and source. A cache
    refused by the state directory's rules (a link, a FIFO, not ours) stops the run."""
    try:
        data = paths.read_private(_cache_path(paths.private_dir(cache_dir), day, source), 4096)
        cached = MarketDay.from_json(json.loads(data or b""))
    except paths.Untrusted:
        raise
    except (OSError, ValueError, KeyError, TypeError, UsageError):
        return None
    # A file that describes another day or source is as good as corrupt: ignore it.
    return cached if (cached.day, cached.source) == (day, source) else None


def _write_cache(cache_dir: Path, session: MarketDay) -> None:
    path = _cache_path(cache_dir, session.day, session.source)
    try:
        paths.write_private(path, json.dumps(session.to_json()))
    except paths.Untrusted:
        raise
    except (OSError, UsageError) as exc:  # a cache that cannot be written costs time only
        log.warning("could not cache the market session in %s: %s", cache_dir, exc)
