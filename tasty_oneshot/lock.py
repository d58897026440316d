"""One run of a job at a time on this host: the SQLite ledger's job lock.

A kernel file lock (flock) on STATE/locks/NAME.lock: the kernel drops it when the holder
exits, however it exits, so a killed run never leaves a stale lock behind. Whether anyone
holds a lock is read from /proc/locks, never by taking it (a probe that took the lock could
make a run starting at that instant exit 75).
"""

import fcntl
import os
from pathlib import Path

from tasty_oneshot import paths


class JobLocked(Exception):
    """Another invocation holds this job's lock: which lock, and who holds it if known."""

    def __init__(self, lock: str, holder: str | None = None) -> None:
        super().__init__(lock)
        self.lock, self.holder = lock, holder

    def describe(self, job: str) -> str:
        """ "another run of JOB holds its lock (LOCK, held by pid N on HOST)"."""
        held_by = f", held by {self.holder}" if self.holder else ""
        return f"another run of {job} holds its lock ({self.lock}{held_by})"


def lock_path(state_dir: Path, job_name: str) -> Path:
    return state_dir / "locks" / f"{job_name}.lock"


class JobLock:
    def __init__(self, state_dir: Path, job_name: str) -> None:
        self.path = lock_path(state_dir, job_name)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise JobLocked; never waits."""
        paths.private_dir(self.path.parent)
        fd = paths.open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JobLocked(str(self.path), holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @classmethod
    def adopted(cls, state_dir: Path, job_name: str, fd: int) -> "JobLock":
        """The lock this process already holds on `fd` (kept across an exec)."""
        lock = cls(state_dir, job_name)
        lock._fd = fd
        return lock

    @property
    def fd(self) -> int | None:
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "JobLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str | None:
    """Who holds the lock, as its holder wrote it: its pid (only digits are believed), on
    this host. None while the holder has not written it yet."""
    text = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
    return f"pid {text} on {os.uname().nodename}" if text.isdigit() else None


def is_held(path: Path) -> bool | None:
    """Whether some process holds a flock on `path`; None when the kernel cannot say."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            return any(
                len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key
                for fields in (line.split() for line in locks)
            )
    except OSError:
        return None
