"""Where files live: the jobs file and the state directory, decided once."""

import os
from pathlib import Path

from tasty_oneshot.errors import UsageError

CONFIG_ENV = "TASTY_ONESHOT_CONFIG"
STATE_ENV = "TASTY_ONESHOT_STATE_DIR"
LOCAL_CONFIG = "tasty-oneshot.yaml"


def config_path(explicit: str | None) -> Path | None:
    """The jobs file to read: --config, $TASTY_ONESHOT_CONFIG, ./tasty-oneshot.yaml, XDG; or None.

    A file named explicitly (flag or variable) must exist; the implicit places are optional.
    """
    named = explicit or os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            source = "--config" if explicit else f"${CONFIG_ENV}"
            problem = "is a directory, not a jobs file" if path.is_dir() else "jobs file not found"
            raise UsageError(f"{path}: {problem} (from {source})")
        return path.absolute()
    local = Path(LOCAL_CONFIG)
    if local.is_file():
        return local.absolute()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidate = xdg / "tasty-oneshot" / "jobs.yaml"
    return candidate.absolute() if candidate.is_file() else None


def state_dir() -> Path:
    """The state directory (locks, run ledger, caches), created with mode 0700 when missing."""
    if os.environ.get(STATE_ENV):
        path = Path(os.environ[STATE_ENV])
    elif os.environ.get("STATE_DIRECTORY"):
        # systemd's StateDirectory= may list several, separated by ':'; the first is ours.
        path = Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    elif os.environ.get("XDG_STATE_HOME"):
        path = Path(os.environ["XDG_STATE_HOME"]) / "tasty-oneshot"
    else:
        path = Path.home() / ".local" / "state" / "tasty-oneshot"
    path = path.expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the state directory: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: the state directory is not writable")
    return path


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only (mode 0600): a
    concurrent reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
