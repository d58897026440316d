"""One run of a job at a time on this host.

A kernel file lock (flock) on a file per job: the kernel drops it when the holder exits,
however it exits, so a killed run never leaves a stale lock behind.
"""

import fcntl
import os
from pathlib import Path


class JobLocked(Exception):
    """Another invocation holds this job's lock."""


class JobLock:
    def __init__(self, state_dir: Path, job_name: str) -> None:
        self.path = state_dir / "locks" / f"{job_name}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise JobLocked; never waits."""
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JobLocked(self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "JobLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
