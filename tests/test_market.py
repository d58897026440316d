"""The market check: the broker's sessions, the offline NYSE calendar, the day cache.

In process, the real tastytrade SDK runs against a fake TastyTrade API mocked at the HTTP layer
(httpx2.MockTransport), so nothing touches the network. The last tests go through the real CLI.
"""

import asyncio
import json
import logging
import re
import socket
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import httpx2
import pytest

from tasty_oneshot import market
from tasty_oneshot.market import CALENDAR, Credentials, MarketCheckError, check_market
from tasty_oneshot.schedule import NYC

CREDS = Credentials("client-secret-s3cr3t", "refresh-token-t0k3n")
BROKER = market.BROKER

NORMAL_DAY = date(2026, 11, 24)  # a Tuesday
THANKSGIVING = date(2026, 11, 26)
EARLY_CLOSE = date(2026, 11, 27)  # the day after Thanksgiving: the NYSE closes at 13:00
SATURDAY = date(2026, 11, 28)
MONDAY = date(2026, 11, 30)
SUMMER_DAY = date(2026, 7, 15)  # a Wednesday in daylight-saving time


def nyc(day: date, hhmm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), NYC)


def utc(day: date, hhmm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), UTC)


def check(at: datetime, cache: Path, credentials=CREDS, broker=None):
    kwargs = {"transport": broker.transport} if broker is not None else {}
    return asyncio.run(check_market(at, cache, credentials, **kwargs))


# -- a fake TastyTrade API ------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


def snapshot(day: date, opens: str = "09:30", closes: str | None = None) -> dict:
    """A session as the broker writes it in next-session / previous-session."""
    closes = closes or ("13:00" if day == EARLY_CLOSE else "16:00")
    open_at, close_at = nyc(day, opens), nyc(day, closes)
    return {
        "close-at": iso(close_at),
        "close-at-ext": iso(close_at + timedelta(hours=4)),
        "instrument-collection": "Equity",
        "open-at": iso(open_at),
        "session-date": day.isoformat(),
        "start-at": iso(open_at - timedelta(minutes=75)),
    }


def current(state: str, today: dict | None = None, *, next=None, previous=None) -> dict:
    """The broker's current equity session: today's times, or nulls when none is current."""
    item = {
        "close-at": None,
        "close-at-ext": None,
        "instrument-collection": "Equity",
        "open-at": None,
        "start-at": None,
        "state": state,
        "next-session": next,
        "previous-session": previous,
    }
    if today is not None:
        item.update({k: v for k, v in today.items() if k != "session-date"})
    return item


def sessions_body(*items: dict) -> dict:
    return {"data": {"items": list(items)}, "context": "/market-time/sessions/current"}


class Broker:
    """Answers POST /oauth/token and GET /market-time/sessions/current; records every request."""

    def __init__(self, item: dict | None = None, *, fail=None) -> None:
        self.item = item
        self.fail = fail  # a callable(request) -> Response, or an exception to raise
        self.requests: list[httpx2.Request] = []

    @property
    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if isinstance(self.fail, BaseException):
            raise self.fail
        if self.fail is not None:
            response = self.fail(request)
            if response is not None:
                return response
        if request.method == "POST" and request.url.path == "/oauth/token":
            body = json.loads(request.content)
            assert body["client_secret"] == CREDS.client_secret
            assert body["refresh_token"] == CREDS.refresh_token
            return httpx2.Response(200, json={"access_token": "access-1", "expires_in": 900})
        if request.method == "GET" and request.url.path == "/market-time/sessions/current":
            assert request.headers["authorization"] == "Bearer access-1"
            assert request.url.params.get_list("instrument-collections[]") == ["Equity"]
            return httpx2.Response(200, json=sessions_body(self.item))
        return httpx2.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    @property
    def session_requests(self) -> int:
        return sum(r.url.path == "/market-time/sessions/current" for r in self.requests)


def broker_reports(day: date, where: str, opens="09:30", closes=None) -> dict:
    """A realistic current-session payload whose session for `day` sits in `where`.

    The broker rolls its "current" session over at its own times: before the open today's
    session may still be the next one, after the close the previous one.
    """
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    today = snapshot(day, opens, closes)
    if where == "current":
        return current("Open", today, next=snapshot(after), previous=snapshot(before))
    if where == "next":
        return current("Closed", next=today, previous=snapshot(before))
    if where == "previous":
        return current("Closed", next=snapshot(after), previous=today)
    raise AssertionError(where)


def no_session_today(day: date, next_day: date, previous_day: date, stale: bool) -> dict:
    """A holiday or weekend: nothing current (or, `stale`, the previous session still current)."""
    previous, nxt = snapshot(previous_day), snapshot(next_day)
    if stale:
        return current("Closed", previous, next=nxt, previous=snapshot(previous_day - timedelta(1)))
    return current("Closed", next=nxt, previous=previous)


# -- the offline calendar ---------------------------------------------------------------------


def test_calendar_day_normal_early_close_holiday_weekend():
    normal = market.calendar_day(NORMAL_DAY)
    assert (normal.open_at, normal.close_at) == (utc(NORMAL_DAY, "14:30"), utc(NORMAL_DAY, "21:00"))
    assert normal.source == CALENDAR
    early = market.calendar_day(EARLY_CLOSE)
    assert (early.open_at, early.close_at) == (utc(EARLY_CLOSE, "14:30"), utc(EARLY_CLOSE, "18:00"))
    summer = market.calendar_day(SUMMER_DAY)
    assert (summer.open_at, summer.close_at) == (utc(SUMMER_DAY, "13:30"), utc(SUMMER_DAY, "20:00"))
    for closed in (THANKSGIVING, SATURDAY, date(2026, 11, 29)):
        day = market.calendar_day(closed)
        assert (day.open_at, day.close_at) == (None, None), closed


CASES = [
    (NORMAL_DAY, "08:00", False),
    (NORMAL_DAY, "09:29", False),
    (NORMAL_DAY, "09:30", True),
    (NORMAL_DAY, "10:00", True),
    (NORMAL_DAY, "15:59", True),
    (NORMAL_DAY, "16:00", False),
    (NORMAL_DAY, "20:30", False),  # already the next day in UTC
    (THANKSGIVING, "08:00", False),
    (THANKSGIVING, "12:00", False),
    (EARLY_CLOSE, "10:00", True),
    (EARLY_CLOSE, "12:59", True),
    (EARLY_CLOSE, "13:00", False),
    (EARLY_CLOSE, "13:30", False),
    (SATURDAY, "12:00", False),
    (SUMMER_DAY, "09:45", True),
    (SUMMER_DAY, "16:15", False),
]
CASE_IDS = [f"{day}-{hhmm}" for day, hhmm, _ in CASES]


@pytest.mark.parametrize(("day", "hhmm", "is_open"), CASES, ids=CASE_IDS)
def test_without_credentials_the_calendar_decides(tmp_path, day, hhmm, is_open):
    broker = Broker(fail=AssertionError("the broker must not be asked without credentials"))
    verdict = check(nyc(day, hhmm), tmp_path, credentials=None, broker=broker)
    assert verdict.open is is_open
    assert verdict.source == CALENDAR and verdict.session.day == day
    assert (
        CALENDAR in verdict.describe() and ("open" if is_open else "closed") in verdict.describe()
    )
    assert broker.requests == []


def test_credentials_come_from_both_variables(monkeypatch):
    monkeypatch.delenv("TASTYTRADE_CLIENT_SECRET", raising=False)
    monkeypatch.delenv("TASTYTRADE_REFRESH_TOKEN", raising=False)
    assert Credentials.from_env() is None
    monkeypatch.setenv("TASTYTRADE_CLIENT_SECRET", "s")
    assert Credentials.from_env() is None
    monkeypatch.setenv("TASTYTRADE_REFRESH_TOKEN", "")
    assert Credentials.from_env() is None
    monkeypatch.setenv("TASTYTRADE_REFRESH_TOKEN", "t")
    assert Credentials.from_env() == Credentials("s", "t")


# -- the broker decides ------------------------------------------------------------------------


BROKER_CASES = [
    (day, hhmm, is_open, where)
    for day, hhmm, is_open in CASES
    for where in ("current", "next", "previous")
    if day not in (THANKSGIVING, SATURDAY)
]


@pytest.mark.parametrize(
    ("day", "hhmm", "is_open", "where"),
    BROKER_CASES,
    ids=[f"{d}-{h}-in-{w}" for d, h, _, w in BROKER_CASES],
)
def test_broker_decides_a_trading_day_wherever_it_reports_it(tmp_path, day, hhmm, is_open, where):
    broker = Broker(broker_reports(day, where))
    verdict = check(nyc(day, hhmm), tmp_path, broker=broker)
    assert (verdict.open, verdict.source, verdict.session.day) == (is_open, BROKER, day)
    assert "broker" in verdict.describe()
    assert [(r.method, r.url.path) for r in broker.requests] == [
        ("POST", "/oauth/token"),
        ("GET", "/market-time/sessions/current"),
    ]


@pytest.mark.parametrize("stale", [False, True], ids=["nothing-current", "yesterday-current"])
@pytest.mark.parametrize(
    ("day", "next_day", "previous_day"),
    [(THANKSGIVING, EARLY_CLOSE, date(2026, 11, 25)), (SATURDAY, MONDAY, EARLY_CLOSE)],
    ids=["thanksgiving", "saturday"],
)
@pytest.mark.parametrize("hhmm", ["08:00", "10:00", "12:59", "15:00"])
def test_broker_says_no_session_on_a_holiday_or_weekend(
    tmp_path, day, next_day, previous_day, stale, hhmm
):
    broker = Broker(no_session_today(day, next_day, previous_day, stale))
    verdict = check(nyc(day, hhmm), tmp_path, broker=broker)
    assert (verdict.open, verdict.source) == (False, BROKER)
    assert verdict.session.open_at is None and verdict.session.close_at is None
    assert broker.session_requests == 1


def test_broker_early_close_on_the_day_after_thanksgiving():
    broker = Broker(broker_reports(EARLY_CLOSE, "current"))
    session = asyncio.run(market.broker_day(EARLY_CLOSE, CREDS, transport=broker.transport))
    assert (session.open_at, session.close_at) == (
        utc(EARLY_CLOSE, "14:30"),
        utc(EARLY_CLOSE, "18:00"),
    )
    assert session.describe() == "regular session 2026-11-27 09:30-13:00 NYC"


def test_broker_overrules_the_calendar(tmp_path):
    """An unscheduled closure (say, a national day of mourning) the calendar cannot know."""
    day = date(2026, 12, 1)
    assert market.calendar_day(day).open_at is not None  # the calendar thinks it is a normal day
    broker = Broker(no_session_today(day, date(2026, 12, 2), MONDAY, stale=False))
    verdict = check(nyc(day, "10:00"), tmp_path, broker=broker)
    assert (verdict.open, verdict.source) == (False, BROKER)
    # And a broker-only early close: its own close time decides.
    broker = Broker(broker_reports(date(2026, 12, 2), "current", closes="14:00"))
    later = tmp_path / "other"
    assert check(nyc(date(2026, 12, 2), "13:59"), later, broker=broker).open is True
    assert check(nyc(date(2026, 12, 2), "14:00"), later, broker=broker).open is False


# -- the broker fails: the calendar decides, never "proceed anyway" ---------------------------


def error_body(status: int):
    return lambda request: httpx2.Response(
        status, json={"error": {"code": "oops", "message": "something broke"}}
    )


def on_path(path: str, respond):
    return lambda request: respond(request) if request.url.path == path else None


FAILURES = {
    "token-500": on_path("/oauth/token", error_body(500)),
    "token-401": on_path("/oauth/token", error_body(401)),
    "sessions-500": on_path("/market-time/sessions/current", error_body(500)),
    "sessions-502-html": on_path(
        "/market-time/sessions/current",
        lambda r: httpx2.Response(502, text="<html>Bad Gateway</html>"),
    ),
    "sessions-not-json": on_path(
        "/market-time/sessions/current", lambda r: httpx2.Response(200, text="maintenance")
    ),
    "sessions-empty": on_path(
        "/market-time/sessions/current", lambda r: httpx2.Response(200, json=sessions_body())
    ),
    "sessions-malformed": on_path(
        "/market-time/sessions/current",
        lambda r: httpx2.Response(200, json=sessions_body({"state": "Open"})),
    ),
    "connect-error": httpx2.ConnectError("Name or service not known"),
    "read-timeout": httpx2.ReadTimeout("timed out"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize(
    ("at", "is_open"),
    [(nyc(THANKSGIVING, "12:00"), False), (nyc(EARLY_CLOSE, "12:59"), True)],
    ids=["thanksgiving-noon", "early-close-12:59"],
)
def test_broker_failure_falls_back_to_the_calendar(tmp_path, caplog, failure, at, is_open):
    # The broker's data, were it served, would say the opposite of the calendar.
    broker = Broker(broker_reports(at.date(), "current", opens="00:00", closes="23:59"))
    broker.fail = FAILURES[failure]
    if is_open:
        broker.item = no_session_today(at.date(), MONDAY, THANKSGIVING, stale=False)
    with caplog.at_level(logging.WARNING, logger="tasty_oneshot"):
        verdict = check(at, tmp_path, broker=broker)
    assert broker.requests, "the broker was never asked"
    assert (verdict.open, verdict.source) == (is_open, CALENDAR)
    assert CALENDAR in verdict.describe()
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "broker" in warning.getMessage() and CALENDAR in warning.getMessage()
    assert CREDS.client_secret not in caplog.text and CREDS.refresh_token not in caplog.text


def test_broker_and_calendar_both_failing_is_an_error_not_an_open_market(tmp_path, monkeypatch):
    def broken(day):
        raise RuntimeError("no calendar data")

    monkeypatch.setattr(market, "calendar_day", broken)
    broker = Broker(fail=httpx2.ConnectError("unreachable"))
    with pytest.raises(MarketCheckError, match="no calendar data"):
        check(nyc(NORMAL_DAY, "10:00"), tmp_path, broker=broker)
    with pytest.raises(MarketCheckError):
        check(nyc(NORMAL_DAY, "10:00"), tmp_path / "b", credentials=None)


def test_a_failed_broker_is_asked_again_later_the_same_day(tmp_path):
    broker = Broker(fail=httpx2.ConnectError("unreachable"))
    first = check(nyc(EARLY_CLOSE, "10:00"), tmp_path, broker=broker)
    assert (first.open, first.source) == (True, CALENDAR)
    broker = Broker(broker_reports(EARLY_CLOSE, "current"))
    second = check(nyc(EARLY_CLOSE, "12:00"), tmp_path, broker=broker)
    assert (second.open, second.source) == (True, BROKER)
    assert broker.session_requests == 1


# -- the day cache ---------------------------------------------------------------------------


def test_broker_session_is_cached_for_the_day(tmp_path):
    broker = Broker(broker_reports(NORMAL_DAY, "current"))
    assert check(nyc(NORMAL_DAY, "10:00"), tmp_path, broker=broker).open is True
    assert len(broker.requests) == 2
    later = check(nyc(NORMAL_DAY, "16:00"), tmp_path, broker=broker)
    assert (later.open, later.source) == (False, BROKER)
    earlier = check(nyc(NORMAL_DAY, "09:00"), tmp_path, broker=broker)
    assert (earlier.open, earlier.source) == (False, BROKER)
    assert len(broker.requests) == 2, "a second check on the same day asked the broker again"
    # Another day is another session: the broker is asked again.
    broker.item = broker_reports(date(2026, 11, 25), "current")
    assert check(nyc(date(2026, 11, 25), "10:00"), tmp_path, broker=broker).open is True
    assert broker.session_requests == 2


def test_calendar_session_is_cached_for_the_day(tmp_path, monkeypatch):
    assert check(nyc(EARLY_CLOSE, "10:00"), tmp_path, credentials=None).open is True

    def no_calendar(day):
        raise AssertionError("the calendar was consulted again")

    monkeypatch.setattr(market, "calendar_day", no_calendar)
    assert check(nyc(EARLY_CLOSE, "12:59"), tmp_path, credentials=None).open is True
    assert check(nyc(EARLY_CLOSE, "13:00"), tmp_path, credentials=None).open is False
    with pytest.raises(MarketCheckError):  # another day is not cached: the stub is in force
        check(nyc(NORMAL_DAY, "10:00"), tmp_path, credentials=None)


def test_with_credentials_a_cached_calendar_day_never_decides_without_the_broker(tmp_path):
    # The calendar's cache says open; with credentials only the broker's cache may decide the
    # cheap, synchronous verdict: none is cached, so the broker must be asked.
    at = nyc(NORMAL_DAY, "10:00")
    assert check(at, tmp_path, credentials=None).source == CALENDAR
    assert market.cached_verdict(at, tmp_path, None).source == CALENDAR
    assert market.cached_verdict(at, tmp_path, CREDS) is None
    # Once the broker's day is cached, it decides, even against the calendar's.
    broker = Broker(no_session_today(NORMAL_DAY, date(2026, 11, 25), date(2026, 11, 23), False))
    check(at, tmp_path, broker=broker)
    verdict = market.cached_verdict(at, tmp_path, CREDS)
    assert (verdict.open, verdict.source) == (False, BROKER)
    assert market.cached_verdict(at, tmp_path, None).open is True


def test_a_cached_broker_session_is_not_used_without_credentials(tmp_path):
    # The broker says "closed all day"; without credentials the calendar ("open") decides.
    broker = Broker(no_session_today(NORMAL_DAY, date(2026, 11, 25), date(2026, 11, 23), False))
    assert check(nyc(NORMAL_DAY, "10:00"), tmp_path, broker=broker).source == BROKER
    verdict = check(nyc(NORMAL_DAY, "10:00"), tmp_path, credentials=None)
    assert (verdict.open, verdict.source) == (True, CALENDAR)


CHILD = """
import asyncio, sys
from datetime import datetime
from pathlib import Path

import httpx2

from tasty_oneshot import market
from tasty_oneshot.schedule import NYC

mode, cache = sys.argv[1], Path(sys.argv[2])
at = datetime(2026, 11, 27, 12, 59, tzinfo=NYC)
if mode == "calendar":
    verdict = asyncio.run(market.check_market(at, cache, None))
else:
    calls = []

    def handler(request):
        calls.append(request.url.path)
        if request.url.path == "/oauth/token":
            return httpx2.Response(200, json={"access_token": "a", "expires_in": 900})
        return httpx2.Response(200, json=%(BODY)s)

    credentials = market.Credentials("s", "t")
    verdict = asyncio.run(
        market.check_market(at, cache, credentials, transport=httpx2.MockTransport(handler))
    )
    print("calls", len(calls), file=sys.stderr)
expected = market.CALENDAR if mode == "calendar" else market.BROKER
assert verdict.open and verdict.source == expected, verdict
heavy = ("pandas", "numpy", "exchange_calendars", "tastytrade", "pydantic")
print(",".join(sorted(m for m in heavy if m in sys.modules)))
"""


@pytest.mark.parametrize(
    ("mode", "first_imports"),
    [
        ("calendar", "exchange_calendars,numpy,pandas"),
        ("broker", "pydantic,tastytrade"),
    ],
)
def test_a_cached_day_imports_nothing_heavy_in_the_next_process(tmp_path, mode, first_imports):
    body = sessions_body(broker_reports(EARLY_CLOSE, "current"))
    code = CHILD % {"BODY": repr(body)}

    def child() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, mode, str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = child()
    assert first.returncode == 0, first.stderr
    assert set(first_imports.split(",")) <= set(first.stdout.strip().split(","))
    second = child()
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "", f"imported again: {second.stdout.strip()}"
    if mode == "broker":
        assert "calls 2" in first.stderr and "calls 0" in second.stderr


GARBAGE = [
    "",
    "{",
    "null",
    "[]",
    '"2026-11-27"',
    '{"day": "2026-11-27"}',
    '{"day": "2026-11-27", "open_at": "yesterday", "close_at": null, "source": "broker"}',
    '{"day": 20261127, "open_at": null, "close_at": null, "source": "broker"}',
    "\x00\xff binary",
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("with_broker", [True, False], ids=["broker", "calendar"])
def test_a_corrupt_cache_file_is_ignored(tmp_path, garbage, with_broker):
    broker = Broker(broker_reports(EARLY_CLOSE, "current"))
    credentials = CREDS if with_broker else None
    source = BROKER if with_broker else CALENDAR
    cache = tmp_path / "cache"
    assert check(nyc(EARLY_CLOSE, "10:00"), cache, credentials, broker).open is True
    files = list(cache.iterdir())
    assert files, "nothing was cached"
    for path in files:
        path.write_text(garbage, errors="surrogateescape")
    verdict = check(nyc(EARLY_CLOSE, "12:59"), cache, credentials, broker)
    assert (verdict.open, verdict.source) == (True, source)
    assert check(nyc(EARLY_CLOSE, "13:00"), cache, credentials, broker).open is False
    if with_broker:
        # Asked again once after the corruption, then the rewritten cache serves.
        assert broker.session_requests == 2


@pytest.mark.parametrize("with_broker", [True, False], ids=["broker", "calendar"])
def test_a_cache_file_holding_another_day_is_ignored(tmp_path, with_broker):
    """Each day's file must describe that day, not whatever day it happens to hold."""
    credentials = CREDS if with_broker else None
    wednesday = date(2026, 11, 25)
    cache = tmp_path / "cache"
    broker = Broker(broker_reports(wednesday, "current"))
    assert check(nyc(wednesday, "10:00"), cache, credentials, broker).open is True
    [wednesday_file] = list(cache.iterdir())
    broker.item = no_session_today(THANKSGIVING, EARLY_CLOSE, wednesday, stale=False)
    assert check(nyc(THANKSGIVING, "10:00"), cache, credentials, broker).open is False
    [thanksgiving_file] = [p for p in cache.iterdir() if p != wednesday_file]
    wednesday_file.write_text(thanksgiving_file.read_text())  # a day's file, the wrong day
    broker.item = broker_reports(wednesday, "current")
    verdict = check(nyc(wednesday, "10:00"), cache, credentials, broker)
    assert verdict.open is True, verdict.describe()
    assert verdict.session.day == wednesday


def test_an_unwritable_cache_does_not_stop_the_check(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    broker = Broker(broker_reports(NORMAL_DAY, "current"))
    verdict = check(nyc(NORMAL_DAY, "10:00"), blocker / "market", broker=broker)
    assert (verdict.open, verdict.source) == (True, BROKER)
    verdict = check(nyc(NORMAL_DAY, "16:00"), blocker / "market", credentials=None)
    assert (verdict.open, verdict.source) == (False, CALENDAR)


# -- through the CLI ---------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (INFO|WARNING|ERROR|DEBUG) - (.*)$")


def jobs_file(ws) -> None:
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n  check:\n    instructions: Check\n",
    )


def unreachable_broker(ws) -> None:
    """Dummy credentials, and every HTTPS request sent through a proxy port nobody listens on:
    the broker cannot be reached, quickly, on any host, and nothing leaves the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws.env.update(
        TASTYTRADE_CLIENT_SECRET=CREDS.client_secret,
        TASTYTRADE_REFRESH_TOKEN=CREDS.refresh_token,
        HTTPS_PROXY=f"http://127.0.0.1:{port}",
        https_proxy=f"http://127.0.0.1:{port}",
        ALL_PROXY=f"http://127.0.0.1:{port}",
        NO_PROXY="",
    )


def log_messages(stderr: str) -> list[str]:
    messages = []
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if match:
            messages.append(match.group(2))
    return messages


def test_cli_log_says_the_offline_calendar_decided_after_the_early_close(ws):
    jobs_file(ws)
    result = ws.call("run", "--job", "check", at="2026-11-27 18:30:00")  # 13:30 NYC
    assert result.returncode == 0, result.stderr
    decided = [m for m in log_messages(result.stderr) if "offline NYSE calendar" in m]
    assert decided and any("closed" in m for m in decided), result.stderr
    assert ws.server_starts() == []
    [row] = ws.history()
    assert row["status"] == "skipped" and "market closed" in row["reason"]


@pytest.mark.parametrize(
    "at",
    ["2026-11-26 15:00:00", "2026-11-27 18:00:00"],
    ids=["thanksgiving", "early-close-13:00"],
)
def test_cli_unreachable_broker_falls_back_to_the_calendar_and_skips(ws, at):
    jobs_file(ws)
    unreachable_broker(ws)
    result = ws.call("run", "--job", "check", at=at, timeout=60)
    assert result.returncode == 0, result.stderr
    messages = log_messages(result.stderr)
    assert any("broker" in m and "unavailable" in m for m in messages), result.stderr
    assert any("closed" in m and "offline NYSE calendar" in m for m in messages), result.stderr
    assert ws.server_starts() == [], "the agent ran at a closed time"
    [row] = ws.history()
    assert row["status"] == "skipped" and "market closed" in row["reason"]
    everything = result.stdout + result.stderr + json.dumps(row)
    assert CREDS.client_secret not in everything and CREDS.refresh_token not in everything


def test_cli_unreachable_broker_calendar_open_runs_the_agent(ws):
    jobs_file(ws)
    unreachable_broker(ws)
    result = ws.call("run", "--job", "check", at="2026-11-27 17:59:00", timeout=90)  # 12:59 NYC
    assert result.returncode == 0, result.stderr
    messages = log_messages(result.stderr)
    assert any("broker" in m and "unavailable" in m for m in messages), result.stderr
    assert any("open" in m and "offline NYSE calendar" in m for m in messages), result.stderr
    assert len(ws.server_starts()) == 1
    [row] = ws.history()
    assert row["status"] == "ok"
    assert CREDS.client_secret not in result.stderr + json.dumps(row)
