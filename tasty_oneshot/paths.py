"""Where files live, and what may be trusted there: the jobs file and the state directory.

Every file and directory the program uses in the state directory goes through this module.
Each must belong to the user running it and must not be writable by group or others, must be
what it claims (a directory, or a regular file: never a symbolic link, a FIFO or a device),
and is read only up to a bound. Anything else is refused with one line naming the path and
the fix (exit 2). Files are written mode 0600 and directories 0700, whatever the umask.
"""

import errno
import logging
import os
import stat
from pathlib import Path

from tasty_oneshot.errors import UsageError

CONFIG_ENV = "TASTY_ONESHOT_CONFIG"
STATE_ENV = "TASTY_ONESHOT_STATE_DIR"
LOCAL_CONFIG = "tasty-oneshot.yaml"

log = logging.getLogger("tasty_oneshot")


def config_path(explicit: str | None, *, adhoc: bool = False) -> Path | None:
    """The jobs file to read: --config, $TASTY_ONESHOT_CONFIG, ./tasty-oneshot.yaml, XDG; or None.

    A file named explicitly (flag or variable) must exist; the implicit places are optional.
    An ad hoc command (`adhoc`: INSTRUCTIONS or schedule flags, no --job or --all) needs no
    jobs file: for it, a $TASTY_ONESHOT_CONFIG naming a path where nothing exists (the
    image's, with no jobs file mounted) is None, the built-in defaults, without looking
    further. Something there that is no jobs file, and a missing --config, stay errors.
    """
    named = explicit or os.environ.get(CONFIG_ENV)
    if named:
        source = "--config" if explicit else f"${CONFIG_ENV}"
        path = given_path(source, named)
        if not path.is_file():
            if adhoc and not explicit and _nothing_at(path):
                return None
            problem = "is a directory, not a jobs file" if path.is_dir() else "jobs file not found"
            raise UsageError(f"{path}: {problem} (from {source})")
        return path.absolute()
    local = Path(LOCAL_CONFIG)
    if local.is_file():
        return local.absolute()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidate = xdg / "tasty-oneshot" / "jobs.yaml"
    return candidate.absolute() if candidate.is_file() else None


def adhoc_config_path(explicit: str | None) -> Path | None:
    """config_path for an ad hoc command, with one warning when $TASTY_ONESHOT_CONFIG names a
    file that does not exist and the built-in defaults are used instead."""
    path = config_path(explicit, adhoc=True)
    if path is None and not explicit and os.environ.get(CONFIG_ENV):
        missing = given_path(f"${CONFIG_ENV}", os.environ[CONFIG_ENV]).absolute()
        log.warning(
            "$%s names %s, which does not exist: this ad hoc job uses the built-in defaults "
            "(no jobs file)",
            CONFIG_ENV,
            missing,
        )
    return path


def _nothing_at(path: Path) -> bool:
    """Whether nothing at all is at `path`: not so for a dangling link, or for a path that
    cannot be looked at (a file, or a directory this user may not search, on the way)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


def given_path(source: str, text: str) -> Path:
    """A path given by a flag or variable (`source`), `~` expanded; a usage error naming the
    source when it cannot be a path (too long, control characters, an unknown `~user`)."""
    raw = os.fsencode(text)
    if len(raw) >= 4096 or any(len(part) > 255 for part in raw.split(b"/")):
        raise UsageError(f"{source}: too long to be a path ({text[:40]!r}...)")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError(f"{source}: {text[:60]!r} has a control character: not a usable path")
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # ~user that does not exist, or no home directory
        raise UsageError(f"{source}: {text[:60]!r}: {exc}") from None


def where_looked() -> str:
    """Where a jobs file was looked for, for the message that none was found."""
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return (
        f"looked for --config FILE, ${CONFIG_ENV}, {Path(LOCAL_CONFIG).absolute()} and "
        f"{xdg / 'tasty-oneshot' / 'jobs.yaml'}"
    )


def state_dir() -> Path:
    """The state directory (locks, run ledger, caches): created with mode 0700 when missing,
    else checked like every directory in it (see private_dir)."""
    if os.environ.get(STATE_ENV):
        path = given_path(f"${STATE_ENV}", os.environ[STATE_ENV])
        if not path.is_absolute():  # a timer's working directory is not this shell's
            raise UsageError(f"${STATE_ENV}: {str(path)[:60]!r} is not an absolute path")
    elif os.environ.get("STATE_DIRECTORY"):
        # systemd's StateDirectory= may list several, separated by ':'; the first is ours.
        path = Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    elif os.environ.get("XDG_STATE_HOME"):
        path = Path(os.environ["XDG_STATE_HOME"]) / "tasty-oneshot"
    else:
        path = Path.home() / ".local" / "state" / "tasty-oneshot"
    path = path.expanduser().absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the state directory: {exc.strerror}") from None
    # The state directory itself may be a symbolic link (a user's choice of disk); what it
    # points to is checked. Inside it, nothing is followed.
    return private_dir(path, follow=True)


def private_dir(path: Path, *, follow: bool = False) -> Path:
    """A directory of ours: created mode 0700 when missing; else it must be a directory (not
    a link, unless `follow`), belong to this user and not be writable by group or others."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the directory: {exc.strerror}") from None
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the directory: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise untrusted(path, f"is {_kind(info.st_mode)}, not a directory", f"rm {_q(path)}")
    _check_owner_and_mode(path, info)
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: the directory is not writable; fix: chmod 700 {_q(path)}")
    return path


def open_private(path: Path, flags: int) -> int:
    """A file descriptor for a file of ours, opened without following a link and without
    blocking on a FIFO; created mode 0600 with O_CREAT. A file that is not a regular file, is
    another user's or is writable by others is refused; one of ours that others can read
    (from an older version, or a umask) is made 0600."""
    flags |= os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise untrusted(path, "is a symbolic link, not a file", f"rm {_q(path)}") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO, errno.ENODEV, errno.ETXTBSY):
            kind = _kind(os.lstat(path).st_mode)
            raise untrusted(path, f"is {kind}, not a regular file", f"rm {_q(path)}") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise untrusted(path, f"is {_kind(info.st_mode)}, not a regular file", f"rm {_q(path)}")
        _check_owner_and_mode(path, info)
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_private_file(path: Path, *, create: bool = False) -> bool:
    """Check a file of ours that another library opens by name (the SQLite ledger): whether
    it exists, after creating it empty and private with `create`."""
    try:
        fd = open_private(path, os.O_RDWR | (os.O_CREAT if create else 0))
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


def make_private(path: Path) -> None:
    """Mode 0600 for a regular file of ours that another library created, checked without
    opening it (see the SQLite ledger); nothing when it does not exist."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise untrusted(path, f"is {_kind(info.st_mode)}, not a regular file", f"rm {_q(path)}")
    _check_owner_and_mode(path, info)
    if info.st_mode & 0o077:
        os.chmod(path, 0o600)


def read_private(path: Path, limit: int) -> bytes | None:
    """At most `limit` bytes of a file of ours; None when it is missing or larger (a cache
    that big is not one we wrote)."""
    try:
        fd = open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as file:
        data = file.read(limit + 1)
    return data if len(data) <= limit else None


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600: a concurrent reader sees the old file
    or the new one, never half of one. What is in the way must be a regular file of ours."""
    private_dir(path.parent)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode):
            raise untrusted(path, f"is {_kind(info.st_mode)}, not a regular file", f"rm {_q(path)}")
        _check_owner_and_mode(path, info)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a killed process that had this pid
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Untrusted(UsageError):
    """Something in the state directory that is not ours, or not what it claims to be."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        super().__init__(f"{path}: {problem}; refusing to use it (fix: {fix})")
        self.problem = problem  # what is wrong, without the path and the fix


def untrusted(path: Path, problem: str, fix: str) -> Untrusted:
    """The one-line refusal of something in the state directory that is not ours."""
    return Untrusted(path, problem, fix)


def _check_owner_and_mode(path: Path, info: os.stat_result) -> None:
    me = os.geteuid()
    if info.st_uid != me:
        raise untrusted(
            path,
            f"belongs to uid {info.st_uid}, not to the user running this (uid {me})",
            f"remove it, or chown {me} {_q(path)} if it is yours",
        )
    if info.st_mode & 0o022:
        mode = stat.S_IMODE(info.st_mode)
        private = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        raise untrusted(
            path,
            f"is writable by group or others (mode {mode:04o})",
            f"chmod {private:o} {_q(path)}",
        )


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _q(path: Path) -> str:
    import shlex  # only an error message needs it

    return shlex.quote(str(path))
