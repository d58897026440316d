"""The MCP server's stderr: STATE/logs/NAME.mcp.log, masked, private and bounded.

The server writes into a pipe, never into the file: a thread reads the pipe line by line,
masks the secrets (a server that prints its environment must not leave the credentials on
disk) and appends to the log, which is kept under LOG_LIMIT bytes across runs and under
RUN_LIMIT bytes per run. Each run's part starts with a line naming its ledger id and its
New York time, so a failure's pointer to the log can be followed to the right lines.
"""

import os
import threading
from pathlib import Path
from typing import TextIO

from tasty_oneshot import paths
from tasty_oneshot.schedule import now_nyc
from tasty_oneshot.secrets import redact

LOG_LIMIT = 1 << 20  # bytes kept in one job's log, across runs
RUN_LIMIT = 256 << 10  # bytes of one run's server output kept
JOIN_TIMEOUT = 2.0  # seconds to wait for the last lines once the run is over


class ServerLog:
    """One run's share of a job's MCP server log. The server writes to `stderr()` from the
    moment it starts; the lines reach the file, after a header naming the run, from `begin`
    (until then the pipe holds them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read_fd: int | None = None
        self._writer: TextIO | None = None
        self._thread: threading.Thread | None = None

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
        self._thread = threading.Thread(
            target=_copy_masked, args=(self._read_fd, log_fd), name="mcp-log", daemon=True
        )
        self._thread.start()

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


def _copy_masked(read_fd: int, log_fd: int) -> None:
    """Pipe to log, a line at a time, masked, until the pipe closes or the budget is spent."""
    budget = RUN_LIMIT
    pending = b""
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    budget = _write_line(log_fd, line, budget)
                if len(pending) > RUN_LIMIT:  # one endless line: cut it
                    budget = _write_line(log_fd, pending, budget)
                    pending = b""
            if pending:
                _write_line(log_fd, pending, budget)
    except OSError:
        pass  # a log that cannot be written must not break the run
    finally:
        os.close(log_fd)


def _write_line(log_fd: int, line: bytes, budget: int) -> int:
    if budget <= 0:
        return budget
    text = redact(line.decode("utf-8", errors="replace")) or ""
    data = (text + "\n").encode()
    if len(data) > budget:
        data = data[:budget] + b"\n[... the rest of this run's server output is not kept]\n"
    os.write(log_fd, data)
    return budget - len(data)
