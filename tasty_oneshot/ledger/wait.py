"""How long a ledger operation waits for a ledger another process holds locked: the SQLite
file's busy wait, a PostgreSQL server's lock and statement timeouts."""

import math
import os

from tasty_oneshot.errors import UsageError

WAIT_ENV = "TASTY_ONESHOT_LEDGER_WAIT"
DEFAULT_WAIT = 10.0  # seconds to wait for a ledger another process holds locked


def wait_seconds() -> float:
    """$TASTY_ONESHOT_LEDGER_WAIT, else 10: how long to wait for a ledger held locked. A value
    that is not a number of seconds from 0.1 to 3600 is a usage error (empty: unset)."""
    text = os.environ.get(WAIT_ENV)
    if not text:
        return DEFAULT_WAIT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0.1 <= seconds <= 3600.0:  # nan and inf too
        raise UsageError(f"${WAIT_ENV}: {text[:20]!r} is not a number of seconds from 0.1 to 3600")
    return seconds
