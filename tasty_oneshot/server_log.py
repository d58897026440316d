"""The MCP server's stderr: STATE/logs/NAME.mcp.log, masked, private and bounded.

The server writes into a pipe, never into the file: a thread reads the pipe line by line,
masks the secrets (a server that prints its environment must not leave the credentials on
disk) and appends to the log, which is kept under LOG_LIMIT bytes across runs and under
RUN_LIMIT bytes per run. Each run's part starts with a line naming its ledger id and its
New York time, so a failure's pointer to the log can be followed to the right lines.

The run's last lines are also kept in memory, masked, so that a run whose server exited can
say what the server said last (`said`), one line, in its reason.
"""

import collections
import os
import re
import threading
from pathlib import Path
from typing import TextIO

from tasty_oneshot import paths
from tasty_oneshot.schedule import now_nyc
from tasty_oneshot.secrets import redact

LOG_LIMIT = 1 << 20  # bytes kept in one job's log, across runs
RUN_LIMIT = 256 << 10  # bytes of one run's server output kept
JOIN_TIMEOUT = 2.0  # seconds to wait for the last lines once the run is over
TAIL_LINES = 400  # lines of the run's server output kept in memory
SAID_LIMIT = 400  # characters of what the server said last, in a run's reason
SYNC = "\0tasty-oneshot: the log has caught up"  # written into the pipe by `sync`
CUT = b"\n[... the rest of this run's server output is not kept]\n"


class ServerLog:
    """One run's share of a job's MCP server log. The server writes to `stderr()` from the
    moment it starts; the lines reach the file, after a header naming the run, from `begin`
    (until then the pipe holds them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read_fd: int | None = None
        self._writer: TextIO | None = None
        self._thread: threading.Thread | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._synced = threading.Event()

    def stderr(self) -> TextIO:
        """The write end of the pipe, for the server's stderr."""
        if self._writer is None:
            self._read_fd, write_fd = os.pipe()
            self._writer = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace")
        return self._writer

    def begin(self, run_id: int | None) -> None:
        """Start copying into the log, after a line naming the run and its New York time."""
        if self._read_fd is None or self._thread is not None:
            return
        job = self.path.name.removesuffix(".mcp.log")
        run = f"run {run_id}" if run_id is not None else "a run that did not start the agent"
        header = f"=== {job}: {run}, {now_nyc():%Y-%m-%d %H:%M:%S %Z} ===\n"
        log_fd = self._open_trimmed()
        os.write(log_fd, header.encode())
        # The run's share of the log, RUN_LIMIT bytes: its header, its lines, the note that
        # cuts them.
        budget = RUN_LIMIT - len(header.encode()) - len(CUT)
        self._thread = threading.Thread(
            target=self._copy_masked,
            args=(self._read_fd, log_fd, budget),
            name="mcp-log",
            daemon=True,
        )
        self._thread.start()

    def note(self, text: str) -> None:
        """A line of our own in the server's log (in order with the server's lines)."""
        if self._writer is not None:
            self._writer.write(f"--- tasty-oneshot: {text} ---\n")
            self._writer.flush()

    def sync(self) -> None:
        """Wait (bounded) until everything the server wrote so far is in `tail` and the log."""
        if self._writer is None or self._thread is None or not self._thread.is_alive():
            return
        self._synced.clear()
        self._writer.write(f"{SYNC}\n")
        self._writer.flush()
        self._synced.wait(JOIN_TIMEOUT)

    def said(self) -> str | None:
        """What the server said last that reads as an error, one masked line, bounded."""
        return said_last(list(self.tail))

    def close(self) -> None:
        """Stop feeding the log; its last lines arrive once the server has exited."""
        if self._writer is None:
            return
        self.begin(None)  # whatever the server said before the run gave up
        self._writer.close()
        self._writer = None
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)

    def _open_trimmed(self) -> int:
        """The log for appending, first cut to its newest half when it has grown too large."""
        fd = paths.open_private(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        size = os.fstat(fd).st_size
        if size > LOG_LIMIT - RUN_LIMIT:
            keep = os.pread(fd, LOG_LIMIT // 2, size - LOG_LIMIT // 2)
            keep = keep[keep.find(b"\n") + 1 :]  # whole lines only
            os.ftruncate(fd, 0)
            os.write(fd, b"[... older runs cut]\n" + keep)
        return fd

    def _copy_masked(self, read_fd: int, log_fd: int, budget: int) -> None:
        """Pipe to log, a line at a time, masked, until the pipe closes or the budget is spent."""
        pending = b""
        try:
            with os.fdopen(read_fd, "rb", buffering=0) as pipe:
                while chunk := pipe.read(65536):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        budget = self._write_line(log_fd, line, budget)
                    if len(pending) > RUN_LIMIT:  # one endless line: cut it
                        budget = self._write_line(log_fd, pending, budget)
                        pending = b""
                if pending:
                    self._write_line(log_fd, pending, budget)
        except OSError:
            pass  # a log that cannot be written must not break the run
        finally:
            os.close(log_fd)
            self._synced.set()

    def _write_line(self, log_fd: int, line: bytes, budget: int) -> int:
        if line.endswith(SYNC.encode()):
            line = line.removesuffix(SYNC.encode())  # what came before it, without a newline
            if line:
                budget = self._write_line(log_fd, line, budget)
            self._synced.set()
            return budget
        text = redact(line.decode("utf-8", errors="replace")) or ""
        self.tail.append(text)
        return _write_data(log_fd, (text + "\n").encode(), budget)


def _write_data(log_fd: int, data: bytes, budget: int) -> int:
    if budget <= 0:
        return budget
    if len(data) > budget:
        data = data[:budget] + CUT
    os.write(log_fd, data)
    return budget - len(data)


# --- what the server said last ---------------------------------------------------------------

# A server's failure to reach the network (the tastytrade SDK's httpx errors, the OS's words).
NETWORK_ERROR = re.compile(
    r"\b(Connect|Read|Write|Pool)(Error|Timeout)\b|RemoteProtocolError|NetworkError"
    r"|All connection attempts failed|Name or service not known|name resolution"
    r"|Network is unreachable|Connection (refused|reset)|timed out",
    re.I,
)
# rich's log layout (FastMCP servers log through it): "[time] LEVEL    message    file.py:N",
# wrapped at 80 columns onto lines indented past the time and level columns.
RICH_RECORD = re.compile(r"^(\[[^\]]*\]\s+|\s{8,})(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\S")
RICH_CONTINUED = re.compile(r"^\s{20,}\S")
RICH_SOURCE = re.compile(r"\s+[\w.-]+\.py:\d+$")
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failure|Exit|Timeout)\w*(: |$)")
HTTP_REQUEST = re.compile(r'HTTP Request: (\w+) (\S.*?) "HTTP/[\d.]+ (\d{3}) ?([^"]*)"')
TASTY_AUTH = "Failed to authenticate with Tastytrade:"  # tasty-agent's words at start-up


def unwrapped(lines: list[str]) -> list[str]:
    """The lines with each of rich's wrapped log records joined back into one line."""
    out: list[str] = []
    in_record = False
    for line in lines:
        line = line.rstrip()
        if in_record and RICH_CONTINUED.match(line) and not RICH_RECORD.match(line):
            out[-1] += " " + line.strip()
            continue
        in_record = bool(RICH_RECORD.match(line))
        out.append(RICH_SOURCE.sub("", line) if in_record else line)
    return out


def last_error(lines: list[str]) -> str | None:
    """What a server said last that reads as an error: its last error log line (joined with
    the exception that followed, when the line ends in a colon), else its last exception line,
    else its last line. Traceback frames and exception groups are passed over."""
    clean = [re.sub(r"^[\s|+]+", "", line).rstrip() for line in unwrapped(lines)]
    clean = [line for line in clean if line]
    exception = None
    logged = None
    for line in clean:
        if EXCEPTION.match(line):
            if not line.startswith(("ExceptionGroup", "BaseExceptionGroup")):
                exception = line
        elif re.search(r"\bERROR\b|\bCRITICAL\b", line):
            logged = re.sub(r"^(\[[^\]]*\]\s*)?(ERROR|CRITICAL)[:\s]+", "", line)
            logged = re.sub(r"\s+[\w.]+\.py:\d+$", "", logged)
            logged = re.sub(r"^[\w.]+:", "", logged) if ":" in logged.split(" ")[0] else logged
    if logged and exception:
        message = exception.partition(": ")[2]
        if logged.endswith(":"):
            return f"{logged} {exception}"
        if message and logged.endswith(message):  # the log line quoted it: name it there
            return logged.removesuffix(message) + exception
        return f"{logged} ({exception})"
    return logged or exception or (clean[-1] if clean else None)


def said_last(lines: list[str]) -> str | None:
    """`last_error`, one line of at most SAID_LIMIT characters; tasty-agent's failure to log
    in is told in the user's words, with what TastyTrade answered (its HTTP status)."""
    said = last_error(lines)
    if said is None:
        return None
    if said.startswith(TASTY_AUTH):
        detail = said.removeprefix(TASTY_AUTH).strip()
        if NETWORK_ERROR.search(detail):
            said = f"TastyTrade could not be reached: {detail}"
        else:
            answered = _failed_request(lines)
            said = "TastyTrade authentication failed: " + (
                f"{answered}: {detail}" if answered else detail
            )
    said = " ".join(said.split())
    return said if len(said) <= SAID_LIMIT else said[: SAID_LIMIT - 3] + "..."


def _failed_request(lines: list[str]) -> str | None:
    """The server's last HTTP request that failed, as its HTTP client logged it."""
    from urllib.parse import urlsplit

    for line in reversed(unwrapped(lines)):
        if (found := HTTP_REQUEST.search(line)) and not found[3].startswith(("1", "2", "3")):
            method, url, status, words = found.groups()
            return f"it answered {status} {words} to {method} {urlsplit(url.replace(' ', '')).path}"
    return None
