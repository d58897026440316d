"""Outcomes the ledger could not take, kept until an invocation can write them in.

Before a run starts its agent, space for its outcome is reserved in STATE/spool (allocated,
not just promised, so a disk that fills during the run cannot take it away). If the ledger
refuses the outcome at the end (held locked, disk full, database gone), the outcome is
written into that space and the file named RUN.json; the next invocation that opens the
ledger writes it in and removes the file. Outputs and reasons are masked before they are
kept: no file in the state directory holds a secret.
"""

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tasty_oneshot import paths
from tasty_oneshot.errors import StateFault
from tasty_oneshot.ledger import Finish, Ledger, RunStart, Usage
from tasty_oneshot.secrets import redact

log = logging.getLogger("tasty_oneshot")

RESERVE = 256 << 10  # bytes reserved for one run's outcome
OUTPUT_KEPT = RESERVE // 2  # characters of output kept when it must be cut to fit


def spool_dir(state: Path) -> Path:
    return state / "spool"


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

    def keep(self, ledger_where: str, run_id: int, finish: Finish) -> Path:
        """Write the outcome into the reserved space; the file the next run reads."""
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
        data = json.dumps(record).encode()
        if len(data) > RESERVE and output is not None:
            record["output"] = output[:OUTPUT_KEPT] + "\n[... cut: the ledger was unavailable]"
            data = json.dumps(record).encode()
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
        "row": {
            **start._asdict(),
            "started_at": start.started_at.isoformat(),
            "slot": start.slot.isoformat() if start.slot else None,
        },
        "status": status,
        "reason": redact(reason),
        "finished_at": finished_at.isoformat(),
        "exit_code": exit_code,
    }
    path = spool_dir(state) / f"row-{time.time_ns()}-{os.getpid()}.json"
    paths.write_private(path, json.dumps(record))
    return path


def replay(state: Path, ledger: Ledger) -> int:
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
        record = _read(path)
        if record is None:
            log.warning("%s: not an outcome this program kept; left alone", path)
            continue
        if record["ledger"] != ledger.where:
            continue  # kept for another ledger (the configuration changed): left for it
        try:
            if "row" in record:
                ledger.record_kept(*record["row"])
            else:
                ledger.finish(record["run_id"], record["finish"])
        except StateFault as exc:
            log.warning("kept outcomes stay in %s for now: %s", directory, exc)
            break
        path.unlink(missing_ok=True)
        written += 1
        if "run_id" in record:
            log.info("wrote the kept outcome of run %s into %s", record["run_id"], ledger.where)
    return written


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = paths.read_private(path, RESERVE)
        raw = json.loads(data or b"")
        if "row" in raw:
            row = raw["row"]
            start = RunStart(
                job=str(row["job"]),
                started_at=datetime.fromisoformat(row["started_at"]),
                slot=datetime.fromisoformat(row["slot"]) if row["slot"] else None,
                model=row["model"],
                trading=row["trading"],
                scheduled=bool(row["scheduled"]),
                pid=int(row["pid"]),
                host=str(row["host"]),
            )
            kept = (
                start,
                str(raw["status"]),
                str(raw["reason"]),
                datetime.fromisoformat(raw["finished_at"]),
                int(raw["exit_code"]),
            )
            return {"ledger": str(raw["ledger"]), "row": kept}
        finish = Finish(
            status=str(raw["status"]),
            reason=str(raw["reason"]),
            finished_at=datetime.fromisoformat(raw["finished_at"]),
            exit_code=int(raw["exit_code"]),
            output=None if raw["output"] is None else str(raw["output"]),
            usage=Usage(*(int(n) for n in raw["usage"])),
            cost=None if raw["cost"] is None else float(raw["cost"]),
        )
        return {"ledger": str(raw["ledger"]), "run_id": int(raw["run_id"]), "finish": finish}
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _drop_if_dead(path: Path) -> None:
    """A reservation whose process is gone (it was killed): nothing to keep."""
    try:
        pid = int(path.name.split("-")[1])
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
    except (ValueError, IndexError, PermissionError, OSError):
        pass
