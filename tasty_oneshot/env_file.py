"""dotenv files: `./.env` and `--env-file`, loaded before anything else, never overriding a
variable already set, even to the empty string (the contract: a deliberately empty
`OPENAI_BASE_URL=` or `TASTYTRADE_ACCOUNT_ID=` stays empty). A file that is not small UTF-8
text, that has a line python-dotenv cannot read, or that sets what the environment cannot
hold, is one line and exit 2 naming it."""

import io
import os
import stat
from pathlib import Path

from tasty_oneshot.errors import UsageError

MAX_BYTES = 1 << 20


def load_env_file(path: Path, *, required: bool) -> None:
    """Load a dotenv file into the environment, never overriding a variable already set."""
    text = read_env_text(path, required=required)
    if text is None:
        return
    for name, value in env_values(text).items():
        if value is None or name in os.environ:
            continue
        try:
            os.environ[name] = value
        except (ValueError, OSError):
            raise UsageError(
                f"{path}: env file sets {name[:40]!r}, which cannot be a variable"
            ) from None


def read_env_text(path: Path, *, required: bool) -> str | None:
    """The file's text, checked: a regular file of small UTF-8 text without NUL (None: no such
    file and not required)."""
    try:
        # O_NONBLOCK: a FIFO in its place must not hang the run; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
                raise UsageError(f"{path}: env file is not a regular file of at most 1 MiB")
            data = file.read(MAX_BYTES + 1)
    except FileNotFoundError:
        if required:
            raise UsageError(f"{path}: env file not found") from None
        return None
    except OSError as exc:
        raise UsageError(f"{path}: env file not readable: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}: env file is not UTF-8 text (line {line})") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UsageError(f"{path}: env file holds a NUL byte (line {line})")
    from dotenv.parser import parse_stream

    # python-dotenv skips a line it cannot read, with a warning: here that is the error,
    # since a skipped line is a credential that silently never reaches the run.
    bad = next((b.original.line for b in parse_stream(io.StringIO(text)) if b.error), None)
    if bad is not None:
        raise UsageError(f"{path}: env file line {bad} is not NAME=value (or a # comment)")
    return text


def env_values(text: str) -> dict[str, str | None]:
    """What this program's loader reads from a dotenv text (python-dotenv, `${VAR}` expanded
    from the environment): None for a name without `=`."""
    from dotenv import dotenv_values  # only runs that have an env file pay for the import

    return dict(dotenv_values(stream=io.StringIO(text)))
