"""Outcomes the ledger could not take, kept until an invocation can write them in.

Before a run starts its agent, space for its outcome is reserved in STATE/spool (allocated,
not just promised, so a disk that fills during the run cannot take it away). If the ledger
refuses the outcome at the end (held locked, disk full, database gone), the outcome is
written into that space and the file named RUN.json; the next invocation that opens the
ledger writes it in and removes the file. Outputs and reasons are masked before they are
kept: no file in the state directory holds a secret.

A kept outcome leaves the spool only once the ledger holds it: when its `running` row is
gone (the ledger was moved aside), the whole row is written in from what the file carries.
A file that cannot be read as an outcome (damaged, unreadable, or no regular file of ours:
a link is never followed) is set aside in STATE/spool/damaged and named once in a warning;
it never stops a command.
"""

import hashlib
import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import tasty_oneshot.ledger.row_checks as check
from tasty_oneshot import paths
from tasty_oneshot.errors import StateFault
from tasty_oneshot.ledger.rows import (
    FINISH_COLUMNS,
    Finish,
    RunStart,
    Usage,
    finish_values,
    start_columns,
)
from tasty_oneshot.secrets import redact

if TYPE_CHECKING:
    from tasty_oneshot.ledger import Ledger

log = logging.getLogger("tasty_oneshot")

RESERVE = 256 << 10  # bytes reserved for one run's outcome
OUTPUT_KEPT = RESERVE // 2  # characters of output kept when it must be cut to fit
DAMAGED = "damaged"  # STATE/spool/damaged: kept files that could not be read


def spool_dir(state: Path) -> Path:
    return state / "spool"


def _start_json(start: RunStart) -> dict[str, Any]:
    """What a kept file carries of the invocation, enough to write its whole row."""
    return {
        **start._asdict(),
        "started_at": start.started_at.isoformat(),
        "slot": start.slot.isoformat() if start.slot else None,
    }


class Reservation:
    """Space for one run's outcome, reserved before its agent starts."""

    def __init__(self, state: Path) -> None:
        directory = paths.private_dir(spool_dir(state))
        self.path = directory / f".reserved-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self._fd: int | None = paths.open_private(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            os.posix_fallocate(self._fd, 0, RESERVE)
        except OSError as exc:
            self.discard()
            raise StateFault(
                f"{directory}: cannot reserve {RESERVE >> 10} KiB to keep the run's outcome "
                f"({exc.strerror}); free space on its disk"
            ) from None

    def keep(
        self, ledger_where: str, run_id: int, finish: Finish, start: RunStart | None = None
    ) -> Path:
        """Write the outcome into the reserved space; the file the next run reads. With the
        run's `start`, the next run can write the whole row should its row be gone."""
        if self._fd is None:
            raise OSError("the reservation is gone")
        output = redact(finish.output)
        record: dict[str, Any] = {
            "ledger": ledger_where,
            "run_id": run_id,
            "status": finish.status,
            "reason": redact(finish.reason),
            "finished_at": finish.finished_at.isoformat(),
            "exit_code": finish.exit_code,
            "output": output,
            "usage": list(finish.usage),
            "cost": finish.cost,
        }
        if start is not None:
            record["start"] = _start_json(start)
        data = json.dumps(record).encode()
        kept = OUTPUT_KEPT
        # Cut until the file fits: JSON writes a non-ASCII character as six bytes (\uXXXX),
        # so characters alone do not say how much room the output takes.
        while len(data) > RESERVE and output is not None and kept > 0:
            record["output"] = output[:kept] + "\n[... cut: the ledger was unavailable]"
            data = json.dumps(record).encode()
            kept //= 2
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)
        final = self.path.with_name(f"{run_id}.json")
        os.replace(self.path, final)
        os.close(self._fd)
        self._fd = None
        return final

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


def keep_row(
    state: Path,
    ledger_where: str,
    start: RunStart,
    status: str,
    reason: str,
    finished_at: datetime,
    exit_code: int,
) -> Path:
    """A skip or lock refusal decided before the ledger was reached: kept for the next
    invocation that connects (a skip never waits for a remote ledger)."""
    record = {
        "ledger": ledger_where,
        "row": _start_json(start),
        "status": status,
        "reason": redact(reason),
        "finished_at": finished_at.isoformat(),
        "exit_code": exit_code,
    }
    path = spool_dir(state) / f"row-{time.time_ns()}-{os.getpid()}.json"
    paths.write_private(path, json.dumps(record))
    return path


def outcome_row(start: RunStart, finish: Finish) -> dict[str, Any]:
    """The whole row of a run that started the agent, keyed (`source`) by the invocation,
    so that two invocations replaying the same file write it once."""
    identity = f"{start.host}|{start.pid}|{start.job}|{start.started_at.isoformat()}"
    source = "outcome:" + hashlib.sha256(identity.encode()).hexdigest()[:32]
    row = start_columns(start, finish.status, finish.reason, agent=1, source=source)
    row.update(zip(FINISH_COLUMNS, finish_values(finish), strict=True))
    return row


class Kept(NamedTuple):
    """A kept file, read and checked: an outcome of a claimed run, or a row (`finish` None)."""

    ledger: str
    start: RunStart | None  # None: an outcome kept by an older version, without its start
    finish: Finish | None
    run_id: int = 0
    row: tuple[str, str, datetime, int] | None = None  # status, reason, finished_at, exit code


class Damaged(Exception):
    """A kept file that cannot be read as an outcome; says why."""


def replay(state: Path, ledger: "Ledger") -> int:
    """Write kept outcomes into the ledger; how many were written. Cheap when there are none."""
    directory = spool_dir(state)
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except FileNotFoundError:
        return 0
    except NotADirectoryError:
        paths.private_dir(directory)  # refuses it, with the fix
        return 0
    if not entries:
        return 0
    paths.private_dir(directory)
    written = 0
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith(".reserved-"):
            _drop_if_dead(path)
            continue
        if not entry.name.endswith(".json"):
            continue
        try:
            kept = _read(path)
        except FileNotFoundError:
            continue  # another invocation wrote it in meanwhile
        except Damaged as exc:
            set_aside(path, str(exc))
            continue
        if kept.ledger != ledger.where:
            continue  # kept for another ledger (the configuration changed): left for it
        try:
            held = _write(kept, ledger)
        except StateFault as exc:
            log.warning("kept outcomes stay in %s for now: %s", directory, exc)
            break
        if not held:
            set_aside(
                path,
                f"its row is not in {ledger.where} (moved aside?) and this file, kept by an "
                "older version, cannot write the whole row",
            )
            continue
        path.unlink(missing_ok=True)
        written += 1
        if kept.finish is not None:
            log.info("wrote the kept outcome of run %s into %s", kept.run_id, ledger.where)
    return written


def _write(kept: Kept, ledger: "Ledger") -> bool:
    """Write one kept file into the ledger; whether the ledger now holds it."""
    if kept.row is not None:
        assert kept.start is not None
        ledger.record_kept(kept.start, *kept.row)
        return True
    assert kept.finish is not None
    if kept.start is None:
        return ledger.finish(kept.run_id, kept.finish)
    ledger.restore(outcome_row(kept.start, kept.finish))
    return True


def set_aside(path: Path, why: str) -> None:
    """Move a kept file that cannot be written in to spool/damaged (0700), named once."""
    aside = paths.private_dir(path.parent / DAMAGED) / path.name
    if aside.exists():
        aside = aside.with_name(f"{path.stem}-{time.time_ns()}.json")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another invocation set it aside meanwhile (and named it)
    log.warning("%s: %s; set aside in %s", path, why, aside)


def _read(path: Path) -> Kept:
    """A kept file, every value checked; Damaged says what is wrong with it."""
    try:
        data = paths.read_private(path, RESERVE)
    except paths.Untrusted as exc:  # a link, a FIFO, another user's file: never followed
        raise Damaged(exc.problem) from None
    except FileNotFoundError:
        raise
    except OSError as exc:  # unreadable: its permissions, an I/O error
        raise Damaged(f"cannot be read ({exc.strerror or exc})") from None
    if data is None:
        if not path.exists():
            raise FileNotFoundError(path)
        raise Damaged(f"larger than {RESERVE >> 10} KiB")
    try:
        raw = json.loads(data.decode())
    except UnicodeDecodeError:
        raise Damaged("not UTF-8 text") from None
    except RecursionError:
        raise Damaged("nested too deeply") from None
    except ValueError as exc:
        raise Damaged(f"not JSON ({str(exc)[:80]})") from None
    if not isinstance(raw, dict):
        raise Damaged(f"expected a JSON object, found {check.kind(raw)}")
    try:
        return _kept(raw)
    except KeyError as exc:
        raise Damaged(f"{exc.args[0]}: missing") from None
    except check.BadValue as exc:
        raise Damaged(str(exc)) from None


def _kept(raw: dict[str, Any]) -> Kept:
    where = check.text("ledger", raw["ledger"], 10_000, optional=False) or ""
    finished_at = check.moment("finished_at", raw["finished_at"])
    exit_code = check.whole("exit_code", raw["exit_code"], 0, 255)
    assert finished_at is not None and exit_code is not None
    if "row" in raw:
        row = (
            check.status("status", raw["status"], check.ROW_STATUSES),
            check.text("reason", raw["reason"], optional=False) or "",
            finished_at,
            exit_code,
        )
        return Kept(where, _start(raw["row"], "row"), None, row=row)
    usage = raw["usage"]
    if not isinstance(usage, list) or len(usage) != len(Usage._fields):
        raise check.BadValue("usage", f"expected {len(Usage._fields)} whole numbers")
    finish = Finish(
        status=check.status("status", raw["status"], check.OUTCOME_STATUSES),
        reason=check.text("reason", raw["reason"], optional=False) or "",
        finished_at=finished_at,
        exit_code=exit_code,
        output=check.text("output", raw["output"]),
        usage=Usage(*(check.whole("usage", n, 0, check.BIGINT) or 0 for n in usage)),
        cost=check.cost("cost", raw["cost"]),
    )
    run_id = check.whole("run_id", raw["run_id"], 1, check.BIGINT) or 0
    start = _start(raw["start"], "start") if "start" in raw else None
    return Kept(where, start, finish, run_id)


def _start(raw: Any, key: str) -> RunStart:
    """The invocation a kept file belongs to (`key`: where it is in the file)."""
    if not isinstance(raw, dict):
        raise check.BadValue(key, f"expected a JSON object, found {check.kind(raw)}")
    try:
        scheduled = raw["scheduled"]
        if not isinstance(scheduled, bool):
            raise check.BadValue(
                f"{key}.scheduled", f"expected true or false, found {scheduled!r:.20}"
            )
        started_at = check.moment(f"{key}.started_at", raw["started_at"])
        assert started_at is not None
        return RunStart(
            job=check.job_name(f"{key}.job", raw["job"]),
            started_at=started_at,
            slot=check.moment(f"{key}.slot", raw["slot"], optional=True),
            model=check.model(f"{key}.model", raw["model"]),
            trading=check.trading(f"{key}.trading", raw["trading"]),
            scheduled=scheduled,
            pid=check.whole(f"{key}.pid", raw["pid"], 0, check.INT32) or 0,
            host=check.text(f"{key}.host", raw["host"], check.SHORT_TEXT, optional=False) or "",
        )
    except KeyError as exc:
        raise check.BadValue(f"{key}.{exc.args[0]}", "missing") from None


def _drop_if_dead(path: Path) -> None:
    """A reservation whose process is gone (it was killed): nothing to keep."""
    try:
        pid = int(path.name.split("-")[1])
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except (ValueError, IndexError, PermissionError, OSError):
        pass
