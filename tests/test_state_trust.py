"""Nothing in the state directory is trusted unless it is ours: a directory others can write,
a file of another user, a symbolic link, a FIFO or a device where a file belongs are refused
with one line naming the path and the fix (exit 2), and nothing is followed or half-done.

The tests run as root, so "another user" is uid 65534 (nobody), set with chown.
"""

import json
import os
import re
import stat

import pytest

NOBODY = 65534
THANKSGIVING = "2026-11-26 15:00:00"  # a skip decided by the offline calendar
MARKET_CACHE = "market/2026-11-26.calendar.json"


@pytest.fixture
def job(ws):
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n  check:\n    instructions: Check\n",
    )
    ws.state.mkdir(mode=0o700)
    return ws


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (INFO|WARNING|ERROR) - \S")


def refused(result, path, fix: str) -> str:
    """Exit 2 with one ERROR line naming the path and the fix; no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), result.stderr
    [error] = [line for line in lines if " - ERROR - " in line]
    assert str(path) in error and fix in error, error
    return error


def test_a_state_directory_others_can_write_is_refused(job):
    job.state.chmod(0o777)
    result = job.call("run", "--job", "check", at=THANKSGIVING)
    refused(result, job.state, f"chmod 700 {job.state}")
    assert list(job.state.iterdir()) == []  # nothing written into it
    assert job.server_starts() == []


def test_a_state_directory_of_another_user_is_refused(job):
    os.chown(job.state, NOBODY, NOBODY)
    refused(job.call("run", "--job", "check", at=THANKSGIVING), job.state, "chown")
    assert job.server_starts() == []


@pytest.mark.parametrize("directory", ["locks", "market", "logs", "spool"])
def test_a_directory_inside_that_others_can_write_is_refused(job, directory):
    (job.state / directory).mkdir(mode=0o700)
    (job.state / directory).chmod(0o777)
    # The market's cache is used when the market decides: a closed day, to keep it short.
    when = {"at": THANKSGIVING} if directory == "market" else {}
    options = () if directory == "market" else ("--ignore-market-hours",)
    result = job.call("run", "--job", "check", *options, **when)
    line = refused(result, job.state / directory, "chmod 700")
    assert "writable by group or others" in line
    assert job.server_starts() == []


def test_a_planted_cache_never_decides_what_runs(job, tmp_path):
    # The old attack: a parsed copy of the jobs file, planted with another server and `live`.
    evil = tmp_path / "evil.sh"
    marker = tmp_path / "evil-ran"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\n")
    evil.chmod(0o755)
    planted = job.state / "jobs-files"
    planted.mkdir(mode=0o700)
    data = {"model": "test", "mcp": {"command": str(evil)}, "trading": "live", "jobs": {}}
    name = str(job.root / "tasty-oneshot.yaml").replace("/", "%") + ".json"
    (planted / name).write_text(json.dumps({"version": "any", "data": data}))
    result = job.call("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert len(job.server_starts()) == 1  # the jobs file's own server
    assert job.history()[0]["trading"] == "read-only"


def test_a_symbolic_link_at_the_lock_is_refused_and_its_target_untouched(job, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    target.chmod(0o644)
    (job.state / "locks").mkdir(mode=0o700)
    (job.state / "locks" / "check.lock").symlink_to(target)
    result = job.call("run", "--job", "check", "--ignore-market-hours")
    refused(result, job.state / "locks" / "check.lock", "rm ")
    assert "symbolic link" in result.stderr
    assert target.read_text() == "keep me\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert job.server_starts() == []


def test_a_symbolic_link_at_the_ledger_is_refused_and_its_target_untouched(job, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("not a database\n")
    (job.state / "ledger.sqlite3").symlink_to(target)
    result = job.call("run", "--job", "check", "--ignore-market-hours")
    refused(result, job.state / "ledger.sqlite3", "rm ")
    assert target.read_text() == "not a database\n"
    assert not (tmp_path / "precious.txt-wal").exists()


def test_a_ledger_of_another_user_is_refused(job):
    job.call("run", "--job", "check", at=THANKSGIVING)  # makes the ledger
    os.chown(job.state / "ledger.sqlite3", NOBODY, NOBODY)
    refused(
        job.call("run", "--job", "check", at=THANKSGIVING), job.state / "ledger.sqlite3", "chown"
    )


def test_a_fifo_at_a_cache_is_refused_at_once_not_waited_on(job):
    (job.state / "market").mkdir(mode=0o700)
    os.mkfifo(job.state / MARKET_CACHE, 0o600)
    # Were it opened for reading, the run would block forever: a subprocess, so that its
    # limit (60 s) turns that into a failure, not a hung suite.
    result = job.cli("run", "--job", "check", at=THANKSGIVING, timeout=60)
    line = refused(result, job.state / MARKET_CACHE, "rm ")
    assert "FIFO" in line


def test_a_link_to_a_device_at_a_cache_is_refused(job):
    (job.state / "market").mkdir(mode=0o700)
    (job.state / MARKET_CACHE).symlink_to("/dev/zero")
    # A subprocess: were it read whole, the reading would never end (and never in pytest).
    result = job.cli("run", "--job", "check", at=THANKSGIVING, timeout=60)
    refused(result, job.state / MARKET_CACHE, "rm ")


def test_an_oversized_cache_of_ours_is_read_no_further_than_its_bound(job):
    # Ours and regular, but not something this program wrote: ignored, and replaced.
    (job.state / "market").mkdir(mode=0o700)
    cache = job.state / MARKET_CACHE
    with open(cache, "wb") as f:
        f.truncate(512 << 20)  # 512 MiB, sparse: reading it whole would show in the RSS
    cache.chmod(0o600)
    result = job.call("run", "--job", "check", at=THANKSGIVING)
    assert result.returncode == 0, result.stderr
    assert cache.stat().st_size < 4096  # rewritten with the real day
    assert job.history()[0]["status"] == "skipped"


def test_a_file_of_ours_that_others_could_read_is_made_private(job):
    job.call("run", "--job", "check", at=THANKSGIVING)
    ledger = job.state / "ledger.sqlite3"
    ledger.chmod(0o644)  # as an older version left it
    assert job.call("run", "--job", "check", at=THANKSGIVING).returncode == 0
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600


# --- group-writable is refused like world-writable; the state directory may be a link -----------


@pytest.mark.parametrize("mode", [0o770, 0o720], ids=["0770", "0720"])
def test_a_state_directory_its_group_can_write_is_refused(job, mode):
    job.state.chmod(mode)
    line = refused(job.call("run", "--job", "check", at=THANKSGIVING), job.state, "chmod 700")
    assert f"writable by group or others (mode {mode:04o})" in line
    assert list(job.state.iterdir()) == []


def test_a_directory_inside_its_group_can_write_is_refused(job):
    (job.state / "locks").mkdir(mode=0o700)
    (job.state / "locks").chmod(0o770)
    result = job.call("run", "--job", "check", "--ignore-market-hours")
    refused(result, job.state / "locks", "chmod 700")
    assert job.server_starts() == []


@pytest.mark.parametrize("mode", [0o660, 0o620], ids=["0660", "0620"])
def test_a_file_its_group_can_write_is_refused_not_made_private(job, mode):
    # Readable by others is ours from an older version (made 0600); writable by the group is
    # someone else's chance to have changed it: refused, and left as it is.
    assert job.call("run", "--job", "check", at=THANKSGIVING).returncode == 0
    ledger = job.state / "ledger.sqlite3"
    ledger.chmod(mode)
    line = refused(job.call("run", "--job", "check", at=THANKSGIVING), ledger, "chmod 600")
    assert f"(mode {mode:04o})" in line
    assert stat.S_IMODE(ledger.stat().st_mode) == mode


def test_a_state_directory_that_is_a_link_to_one_of_ours_is_used(job, tmp_path):
    # A choice of disk (docs/state.md): the link is followed, what it points to is checked.
    disk = tmp_path / "disk" / "tasty-oneshot"
    disk.parent.mkdir()
    job.state.rename(disk)
    job.state.symlink_to(disk)
    result = job.call("run", "--job", "check", at=THANKSGIVING)
    assert result.returncode == 0, result.stderr
    assert (disk / "ledger.sqlite3").is_file()
    [row] = job.history()
    assert row["status"] == "skipped"
    disk.chmod(0o770)  # what it points to is checked like the state directory itself
    refused(job.call("run", "--job", "check", at=THANKSGIVING), job.state, "chmod 700")
