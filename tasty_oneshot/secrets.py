"""Secrets stay out of every log line, ledger row, `history` output and stdout.

The values to hide are registered as they become known (the environment once the env files
are loaded, a job's Apprise URLs once it is resolved); `redact` replaces each with `***`.
"""

import logging
import os
import re
from typing import overload
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_LENGTH = 6  # shorter values are too likely to be ordinary words or numbers

# Environment variables holding secrets: TastyTrade's, and the usual names of model keys.
SECRET_NAMES = re.compile(
    r"^TASTYTRADE_(CLIENT_SECRET|REFRESH_TOKEN)$|_(KEY|TOKEN|SECRET|PASSWORD)$"
)

_values: set[str] = set()


def register(*values: str) -> None:
    global _values
    # A new set, never changed in place: another thread may be redacting with the old one.
    _values = _values | {v for v in values if v and len(v) >= MIN_LENGTH}


def register_environment() -> None:
    """Every secret-looking variable of the environment."""
    register(*(value for name, value in os.environ.items() if SECRET_NAMES.search(name)))


def register_urls(urls: tuple[str, ...]) -> None:
    """Apprise URLs carry credentials in the user and password, or as tokens in the host,
    path and query (`tgram://BOT_TOKEN/CHAT`, `ntfy://ntfy.sh/secret-topic`): hide the whole
    URL, the password, and every token-like part; keep user names, host names like gmail.com
    and short words like `alerts` readable. Each part is hidden both as written and
    percent-decoded (`p%40ss` is `p@ss` to the service and in its error messages)."""
    for url in urls:
        register(url)
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        password = parts.password or ""
        register(password, unquote(password))
        host = netloc.split(":", 1)[0]
        tokens = [] if "." in host or host == "localhost" else [netloc, host]
        tokens += parts.path.split("/")
        tokens += [kv.split("=", 1)[-1] for kv in parts.query.split("&")]
        register(*(t for t in tokens if len(t) >= 8), *(unquote(t) for t in tokens if len(t) >= 8))


@overload
def redact(text: str) -> str: ...
@overload
def redact(text: None) -> None: ...
def redact(text: str | None) -> str | None:
    """`text` with every registered secret replaced by ***; longest first, so a secret that
    contains another is hidden whole."""
    values = _values  # this call's snapshot (see register)
    if not text or not values:
        return text
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each log record as one line with its secrets hidden (attach to the handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # No traceback reaches the user: a library's logged exception becomes one line.
        if record.exc_info and record.exc_info[1] is not None:
            from tasty_oneshot.errors import one_line

            message = f"{message}: {one_line(record.exc_info[1])}"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        hidden = redact(" ".join(message.split()) if "\n" in message else message)
        record.msg, record.args = hidden, ()
        return True
