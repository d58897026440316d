"""dotenv files: `./.env` and `--env-file`, loaded before anything else, never overriding a
variable already set. A file that is not small UTF-8 text, or that sets what the environment
cannot hold, is one line and exit 2 naming it."""

import io
import os
import stat
from pathlib import Path

from tasty_oneshot.errors import UsageError

MAX_BYTES = 1 << 20


def load_env_file(path: Path, *, required: bool) -> None:
    """Load a dotenv file into the environment, never overriding variables already set."""
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
        return
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
    from dotenv import dotenv_values  # only runs that have an env file pay for the import

    for name, value in dotenv_values(stream=io.StringIO(text)).items():
        if value is None or name in os.environ:
            continue
        try:
            os.environ[name] = value
        except (ValueError, OSError):
            raise UsageError(
                f"{path}: env file sets {name[:40]!r}, which cannot be a variable"
            ) from None
