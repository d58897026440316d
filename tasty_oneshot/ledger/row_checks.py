"""What a ledger row may hold: the checks a row from outside passes before it is written in.

Rows come from outside in two ways: an outcome kept in the spool (a file in the state
directory, which may have been damaged), and `ledger import` (another SQLite file). A value
the ledger would store but `history` or `status` could not read back (a time without an
offset, a status the contract does not know, an integer SQLite or PostgreSQL cannot hold)
is refused here, naming the key, instead of breaking every later command.
"""

import math
from datetime import datetime
from typing import Any

from tasty_oneshot.jobs import MAX_TEXT, NAME, NAME_RULE, TRADING_MODES
from tasty_oneshot.ledger.rows import AGENT_STATUSES, STATUSES

LONG_TEXT = 1 << 20  # characters of an output, a reason or a notify note
SHORT_TEXT = 1000  # characters of a host name or a source key
BIGINT = (1 << 63) - 1  # the largest integer both ledgers store (PostgreSQL: bigint)
INT32 = (1 << 31) - 1  # PostgreSQL's integer (pid, exit_code)
# How a run that started the agent ended, as kept in the spool (never still `running`).
OUTCOME_STATUSES = tuple(s for s in AGENT_STATUSES if s not in ("running", "abandoned"))
# How an invocation that never claimed a row ended (a skip, a lock refusal, a stop).
ROW_STATUSES = tuple(s for s in STATUSES if s not in ("running", "abandoned"))


class BadValue(ValueError):
    """A value a ledger row may not hold; `key` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def kind(value: Any) -> str:
    """The type of a value, in words (a BLOB is bytes)."""
    if value is None:
        return "null"
    if isinstance(value, bytes | bytearray | memoryview):
        return "a BLOB"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "text"}.get(
        type(value), type(value).__name__
    )


def text(key: str, value: Any, limit: int = LONG_TEXT, *, optional: bool = True) -> str | None:
    """Text of at most `limit` characters (None when optional)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadValue(key, f"expected text, found {kind(value)}")
    if len(value) > limit:
        raise BadValue(key, f"longer than {limit} characters")
    return value


def whole(key: str, value: Any, low: int, high: int, *, optional: bool = False) -> int | None:
    """A whole number from `low` to `high` (not a boolean, not a float)."""
    if value is None and optional:
        return None
    if type(value) is not int:
        raise BadValue(key, f"expected a whole number, found {kind(value)}")
    if not low <= value <= high:
        raise BadValue(key, f"{value} is out of range ({low} to {high})")
    return value


def moment(key: str, value: Any, *, optional: bool = False) -> datetime | None:
    """An ISO-8601 time with its offset."""
    if value is None and optional:
        return None
    found = text(key, value, 64, optional=False) or ""
    try:
        parsed = datetime.fromisoformat(found)
    except ValueError:
        raise BadValue(key, f"{found[:40]!r} is not an ISO-8601 time") from None
    if parsed.utcoffset() is None:
        raise BadValue(key, f"{found!r} has no offset from UTC")
    return parsed


def job_name(key: str, value: Any) -> str:
    name = text(key, value, 64, optional=False) or ""
    if not NAME.match(name):
        raise BadValue(key, f"{name!r} is not a job name ({NAME_RULE})")
    return name


def status(key: str, value: Any, allowed: tuple[str, ...] = STATUSES) -> str:
    found = text(key, value, 20, optional=False)
    if found not in allowed:
        raise BadValue(key, f"{found!r} is not one of {', '.join(allowed)}")
    return found


def trading(key: str, value: Any) -> str | None:
    found = text(key, value, 20)
    if found is not None and found not in TRADING_MODES:
        raise BadValue(key, f"{found!r} is not one of {', '.join(TRADING_MODES)}")
    return found


def model(key: str, value: Any) -> str | None:
    return text(key, value, MAX_TEXT)


def cost(key: str, value: Any) -> float | None:
    """US dollars: a finite number, not negative, or null."""
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise BadValue(key, f"expected a finite number of dollars, found {value!r:.40}")
    return float(value)


def flag(key: str, value: Any) -> int:
    """0 or 1, as both ledgers store a boolean."""
    if value not in (0, 1) or type(value) not in (int, bool):
        raise BadValue(key, f"expected 0 or 1, found {value!r:.40}")
    return int(value)
