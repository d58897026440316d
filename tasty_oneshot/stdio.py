"""Standard streams an unattended process can rely on.

A timer, a crontab line or a shell may start us with stdout closed (`>&-`), or hand us a pipe
whose reader goes away (`| head`). Neither may end in a traceback or change an exit code:
`run`'s exit code must still agree with the ledger, and its pings and alerts still go out.
"""

import atexit
import io
import os
import sys
import threading
from typing import NoReturn, TextIO

# Why stdout could not take what was written to it, once it could not; else None.
failure: str | None = None


class _ForgivingStdout(io.TextIOBase):
    """sys.stdout that never raises: once a write fails, the rest goes to /dev/null."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        if failure is None:
            try:
                self.inner.write(text)
            except (OSError, ValueError) as exc:
                _stop_writing(exc)
        return len(text)

    def flush(self) -> None:
        if failure is None:
            try:
                self.inner.flush()
            except (OSError, ValueError) as exc:
                _stop_writing(exc)

    def fileno(self) -> int:
        return 1

    def isatty(self) -> bool:
        return failure is None and self.inner.isatty()

    def writable(self) -> bool:
        return True


def guard() -> None:
    """Make the standard descriptors safe before anything else opens a file.

    A closed descriptor 0, 1 or 2 would be taken by the next file opened (the ledger, a lock),
    and our output written into it; each is pointed at /dev/null instead. Writes to stdout
    never raise from then on (see `failure`)."""
    global failure
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if fd == 1:
                failure = "stdout is closed"
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - kept for the process
            elif fd == 2:
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    if sys.stdout is not None and not isinstance(sys.stdout, _ForgivingStdout):
        sys.stdout = _ForgivingStdout(sys.stdout)


def _stop_writing(exc: BaseException) -> None:
    """Remember why stdout failed, and send what is still buffered to /dev/null (else it
    would fail again when Python exits)."""
    global failure
    failure = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass


def exit_now(code: int) -> NoReturn:
    """End the process with `code`, once what it wrote has gone out.

    The interpreter's own teardown (freeing every module and object) costs a skip as much as
    its ledger row. When only this thread is left, nothing it would do still matters: the
    exit handlers run (logging's flush), the standard streams are flushed, and the process
    ends. Otherwise the threads are waited for as usual."""
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nobody is left to tell
            pass
    os._exit(code)
