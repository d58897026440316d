"""Jobs: the keys a job may have, their checks, and one resolved job ready to run.

Keys are checked by a small table rather than pydantic: a skipped run must start, decide and
exit in well under 150 ms, and importing pydantic alone costs more than that on the machines
this runs on. Every number has a sane range. Every error names the file, the job and the key,
on one line. Reading the file, and resolving one job from it and the command line, is
jobs_file.py.
"""

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tasty_oneshot.errors import UsageError
from tasty_oneshot.schedule import DAY, MARKET_OPEN, Schedule, parse_cron, parse_time

# 1 to 64 characters: it names lock files, units and Kubernetes objects. \A..\Z, not ^..$:
# `$` would also match before a trailing newline.
NAME = re.compile(r"\A[a-z0-9][a-z0-9-]{0,63}\Z")
NAME_RULE = "1 to 64 characters of [a-z0-9-], starting with a letter or digit"
MAX_TEXT = 100_000  # characters of instructions, or of any other string
TRADING_MODES = ("read-only", "dry-run", "live")
MODEL_ENV = "MODEL_IDENTIFIER"
DEFAULT_TIMEOUT = 300.0  # seconds for the whole invocation
DEFAULT_MAX_DELAY = 300  # seconds a timer may be late for its slot


class McpServer(NamedTuple):
    """How to reach the MCP server: a stdio command, or a streamable-HTTP URL."""

    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None


class Limits(NamedTuple):
    """Per-run guardrails that stop a runaway loop."""

    max_requests: int = 30
    max_tool_calls: int = 60
    max_tokens: int = 400_000
    max_cost: float | None = None


class Job(NamedTuple):
    name: str
    instructions: str
    schedule: Schedule = Schedule()
    ignore_market_hours: bool = False
    model: str | None = None
    mcp: McpServer | None = None  # None: the tasty-agent server installed alongside
    trading: str = "read-only"
    timeout: float = DEFAULT_TIMEOUT
    max_delay: int = DEFAULT_MAX_DELAY
    limits: Limits = Limits()
    remember: str = "none"  # "last": the previous successful run's output goes to the model
    notify: tuple[str, ...] = ()  # Apprise URLs
    notify_on: tuple[str, ...] = ("failure",)  # when the run itself sends
    ping: str | None = None  # a dead-man's-switch URL (healthchecks.io protocol)
    source: Path | None = None  # the jobs file it came from, if any
    model_from: str = "--model"  # where the model was given, for an error about it


# --- checking values -----------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    if len(value) > MAX_TEXT:
        raise ValueError(f"longer than {MAX_TEXT} characters")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def whole(low: int, high: int, unit: str = "") -> Callable[[Any], int]:
    """A checker for a whole number from `low` to `high`."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number{unit} from {low} to {high}")
        return value

    return check


def number(high: float, unit: str = "") -> Callable[[Any], float]:
    """A checker for a number above 0 and at most `high`."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number{unit} above 0, at most {high:g}")
        if value != value or value in (math.inf, -math.inf):
            raise ValueError(f"expected a finite number{unit} above 0, at most {high:g}")
        if not 0 < value <= high:  # compares big ints exactly
            raise ValueError(f"expected a number{unit} above 0, at most {high:g}")
        return float(value)

    return check


# The ranges: wide enough for any real use, narrow enough that every unit, crontab line and
# timer can hold the value and no arithmetic on it overflows.
PERIOD = whole(1, 366 * DAY, " of seconds")
TIMEOUT = number(DAY, " of seconds")
MAX_DELAY = whole(1, 7 * DAY, " of seconds")
MAX_REQUESTS = whole(1, 10_000)
MAX_TOOL_CALLS = whole(1, 100_000)
MAX_TOKENS = whole(1, 1_000_000_000)
MAX_COST = number(100_000.0, " of US dollars")


def _schedule_time(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 9:30 as the sexagesimal number 570.
        raise ValueError('expected a time string; quote it, e.g. schedule: "9:30am"')
    parse_time(_text(value))
    return value


def _cron(value: Any) -> str:
    return parse_cron(_text(value))


def _trading(value: Any) -> str:
    if value not in TRADING_MODES:
        raise ValueError(f"expected one of {', '.join(TRADING_MODES)}")
    return value


def _model(value: Any) -> str:
    return _text(value).strip()


def _remember(value: Any) -> str:
    if value not in ("last", "none"):
        raise ValueError("expected last or none")
    return value


APPRISE_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.IGNORECASE)


def _notify(value: Any) -> tuple[str, ...]:
    """Apprise URLs, checked for shape here; apprise itself checks each one when the file is
    read afresh (see check_notify_urls), so the run that only skips never imports it."""
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise ValueError("expected a list of Apprise URLs")
    for index, url in enumerate(urls):
        if not isinstance(url, str) or not APPRISE_URL.match(url.strip()):
            raise ValueError(f"item {index + 1} is not an Apprise URL (scheme://...)")
    return tuple(url.strip() for url in urls)


def _ping(value: Any) -> str:
    """A healthchecks.io-style check URL (pings go to URL/start, URL/0, ...)."""
    url = _text(value).strip()
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise ValueError("expected an http:// or https:// URL")
    return url


NOTIFY_EVENTS = ("output", "failure", "skip")


def _notify_on(value: Any) -> tuple[str, ...]:
    events = [value] if isinstance(value, str) else value
    if not isinstance(events, list) or not all(e in NOTIFY_EVENTS for e in events):
        raise ValueError(f"expected a list of {', '.join(NOTIFY_EVENTS)}")
    return tuple(dict.fromkeys(events))


def _mcp(value: Any) -> McpServer:
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping with command/args or url")
    unknown = set(value) - {"command", "args", "url"}
    if unknown:
        first = sorted(unknown, key=str)[0]  # keys of mixed types (1, "x") do not compare
        raise ValueError(f"unknown key {first!r} (expected command, args or url)")
    if ("command" in value) == ("url" in value):
        raise ValueError("expected exactly one of command or url")
    if "url" in value:
        url = _text(value["url"])
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return McpServer(url=url)
    args = value.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise ValueError("args must be a list of strings")
    return McpServer(command=_text(value["command"]), args=tuple(str(a) for a in args))


# Keys a job may have; the same names with '-' are `run` options.
SCHEDULE_KEYS: dict[str, Callable[[Any], Any]] = {
    "schedule": _schedule_time,
    "market_open": _flag,
    "hourly": _flag,
    "daily": _flag,
    "period": PERIOD,
    "cron": _cron,
}
RUN_KEYS: dict[str, Callable[[Any], Any]] = {
    "ignore_market_hours": _flag,
    "model": _model,
    "mcp": _mcp,
    "trading": _trading,
    "timeout": TIMEOUT,
    "max_delay": MAX_DELAY,
    "max_requests": MAX_REQUESTS,
    "max_tool_calls": MAX_TOOL_CALLS,
    "max_tokens": MAX_TOKENS,
    "max_cost": MAX_COST,
    "remember": _remember,
    "notify": _notify,
    "notify_on": _notify_on,
    "ping": _ping,
}
JOB_KEYS = {"instructions": _text, **SCHEDULE_KEYS, **RUN_KEYS}


def _ledger(value: Any) -> str:
    """The shared run ledger: a PostgreSQL URL (else each host keeps its own SQLite one)."""
    if not _text(value).startswith(("postgresql://", "postgres://")):
        raise ValueError("expected a postgresql:// URL")
    return value


# Defaults for every job, ad hoc runs included; and what is the file's, not a job's.
# Defaults for every job, ad hoc runs included, and what only the whole file can say.
TOP_KEYS = {**RUN_KEYS, "ledger": _ledger, "max_parallel": whole(1, 1000)}


def shown(name: Any) -> str:
    """A job name or key from the file as an error quotes it: at most 80 characters, a
    newline or other control character as its escape (`abc\\n`, not a line break)."""
    return repr(str(name)[:80])[1:-1]


def label(where: str, key: str) -> str:
    """How an error names a key: `FILE: job 'x': key 'k'`, or `--k` for the command line
    (`where` is empty)."""
    key = shown(key)
    return f"{where}key '{key}'" if where else "--" + key.replace("_", "-")


def check_keys(
    values: Mapping[str, Any], allowed: Mapping[str, Callable[[Any], Any]], where: str
) -> dict[str, Any]:
    """Check each key against its checker; `where` prefixes the one-line error."""
    checked = {}
    for key, value in values.items():
        if key not in allowed:
            raise UsageError(f"{label(where, key)}: unknown key")
        try:
            checked[key] = allowed[key](value)
        except ValueError as exc:
            raise UsageError(f"{label(where, key)}: {exc}") from None
    return checked


def schedule_from(values: Mapping[str, Any], where: str) -> Schedule:
    """Turn schedule keys (already checked one by one) into a Schedule, checking them together.

    `where` prefixes errors; empty means the keys came from the command line.
    """

    def name(key: str) -> str:
        return f"'{key}'" if where else "--" + key.replace("_", "-")

    periods = [k for k in ("hourly", "daily", "period") if values.get(k) not in (None, False)]
    if len(periods) > 1:
        raise UsageError(
            f"{label(where, periods[1])}: at most one of "
            f"{', '.join(name(k) for k in ('hourly', 'daily', 'period'))}"
        )
    at_text = values.get("schedule")
    at = parse_time(at_text) if at_text else None
    if values.get("market_open"):
        if at is not None and at != MARKET_OPEN:
            raise UsageError(
                f"{label(where, 'market_open')}: means {name('schedule')} 9:30am, "
                f"which conflicts with {name('schedule')} {at_text}"
            )
        at = MARKET_OPEN
    period = {"hourly": 3600, "daily": DAY}.get(periods[0]) if periods else None
    if periods and periods[0] == "period":
        period = values["period"]
    cron = values.get("cron")
    if cron is not None and (at is not None or period is not None):
        raise UsageError(f"{label(where, 'cron')}: not combined with schedule or period keys")
    return Schedule(at=at, period=period, cron=cron)
