"""The PostgreSQL ledger, against a real server: hosts that share it share everything the
ledger decides, and an unreachable server loses no outcome.

A throwaway cluster (tests/postgres_server.py) serves the session; each test has a database
of its own. A test that stops the server has a cluster of its own. Each "host" is a state
directory of its own and a host name of its own: the CLI runs under `unshare --uts`, which
gives it a private host name (the `host` column is `os.uname().nodename`). The hosts share the
fake MCP server's record, so `ws.server_starts()` counts agent runs across all of them. What
needs no host name of its own, nor a process the test must reach while it runs, runs the CLI
in this process (`ws.call`).
"""

import json
import os
import re
import signal
import socket
import subprocess
from collections import Counter

import psycopg
import pytest
from conftest import Workspace, call_cli, closed_port
from postgres_server import Cluster
from test_run_lifecycle import LOG_LINE, wait_for

from tasty_oneshot.ledger.postgres import SCHEMA_LOCK, SCHEMA_VERSION, lock_key

RUN = ("run", "--job", "check", "--ignore-market-hours")
SCHEDULED = ("run", "--job", "check", "--scheduled")
OPEN_MONDAY = "2026-11-30 14:31:00"  # 09:31 NYC, a minute after the 9:30am slot
THANKSGIVING = "2026-11-26 15:00:00"  # 10:00 NYC, the market closed all day
PASSWORD = "s3cretpw"


# --- the server, the database, the hosts ---------------------------------------------------------


@pytest.fixture(scope="session")
def cluster():
    """One server for the session (for each xdist worker)."""
    server = Cluster()
    yield server
    server.destroy()


@pytest.fixture
def pg(ws, cluster) -> str:
    """A fresh database for this test, configured as the ledger; its URL."""
    url = cluster.new_database()
    ws.env["TASTY_ONESHOT_LEDGER"] = url
    return url


@pytest.fixture
def own_cluster(ws):
    """A server of this test's own (it stops it), its database the configured ledger."""
    server = Cluster()
    try:
        url = server.new_database()
        # What the ledger committed survives the server's crash, as on a real server (the
        # throwaway cluster runs with synchronous_commit off, for speed).
        query(url, f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = on")
        ws.env["TASTY_ONESHOT_LEDGER"] = url
        yield server
    finally:
        server.destroy()


class Host:
    """A host sharing the ledger: its own state directory and host name, the workspace's
    environment otherwise (read at each call, so a test may change it between runs)."""

    def __init__(self, ws: Workspace, name: str) -> None:
        self.ws, self.name = ws, name
        self.state = ws.root.parent / f"state-{name}"

    @property
    def env(self) -> dict[str, str]:
        return {**self.ws.env, "TASTY_ONESHOT_STATE_DIR": str(self.state)}

    def command(self, *args: str, at: str | None = None) -> list[str]:
        return on_host(self.name, self.ws.command(*args, at=at))

    def cli(self, *args: str, at: str | None = None, **env: str) -> subprocess.CompletedProcess:
        """`tasty-oneshot ARGS` on this host (`env`: variables changed for this run)."""
        return subprocess.run(
            self.command(*args, at=at), cwd=self.ws.root, env={**self.env, **env},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def popen(self, *args: str, at: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args, at=at), cwd=self.ws.root, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def history(self, *args: str) -> list[dict]:
        """`history --json ARGS` as this host reads it: its state directory, in this process
        (reading the ledger names no host)."""
        result = call_cli(["history", "--json", *args], cwd=self.ws.root, env=self.env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def on_host(name: str, command: list[str]) -> list[str]:
    """COMMAND in a UTS namespace of its own, whose host name is NAME (unshare execs, and so
    does the shell: the process is COMMAND itself, as signals need). Not root: in a user
    namespace too, where this user is root (and owns what it owns outside)."""
    script = 'hostname "$1" && shift && exec "$@"'
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--uts", "sh", "-c", script, "sh", name, *command]


def hosts(ws: Workspace, *names: str) -> list[Host]:
    return [Host(ws, name) for name in names]


def jobs_file(ws: Workspace, *server_args: str, job: str = "", model: str = "test") -> None:
    """A jobs file with job `check` (its keys: `job`) on the fake MCP server."""
    ws.write(
        "tasty-oneshot.yaml",
        f"model: {model}\n" + ws.fake_mcp_yaml(*server_args)
        + "jobs:\n  check:\n    instructions: Check my positions\n" + job,
    )  # fmt: skip


DAILY_930 = '    schedule: "9:30am"\n    daily: true\n'


def query(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and LOG_LINE.match(lines[0]), stderr
    assert " - ERROR - " in lines[0], stderr
    return lines[0]


# --- one slot, one run, across hosts -------------------------------------------------------------


def test_a_slot_fired_eight_times_on_four_hosts_at_once_runs_once(ws, pg):
    jobs_file(ws, job=DAILY_930)
    four = hosts(ws, "host-a", "host-b", "host-c", "host-d")
    runs = [host.popen(*SCHEDULED, at=OPEN_MONDAY) for host in four for _ in range(2)]
    ended = [(run, *run.communicate(timeout=60)) for run in runs]
    for run, _out, err in ended:  # the slot is claimed before the lock: no loser is locked
        assert run.returncode == 0, err
        assert "Traceback" not in err
    assert len(ws.server_starts()) == 1
    assert sum(bool(out) for _run, out, _err in ended) == 1  # one output, from the one run
    for host in four:  # every host reads the same eight rows
        rows = host.history()
        assert len(rows) == 8, rows
        [ok] = [row for row in rows if row["status"] == "ok"]
        assert ok["slot"] == "2026-11-30T09:30:00-05:00" and ok["output"], ok
        skips = [row for row in rows if row is not ok]
        assert all(row["status"] == "skipped" for row in skips), rows
        assert all(row["reason"] == "slot 2026-11-30T09:30:00-05:00 already done" for row in skips)
        assert Counter(row["host"] for row in rows) == {h.name: 2 for h in four}


def test_a_straggler_firing_after_another_host_ran_the_slot_is_already_done(ws, pg):
    """Host B's timer fires the slot minutes late, after host A's run of it has ended: the
    slot stays used for good (not only while A runs), so B records `already done`, exits 0
    and starts no agent. Each host is a state directory of its own, in this process."""
    jobs_file(ws, job=DAILY_930)
    a, b = hosts(ws, "host-a", "host-b")
    first = call_cli(SCHEDULED, cwd=ws.root, env=a.env, at=OPEN_MONDAY)
    assert first.returncode == 0 and first.stdout, first.stderr
    assert len(ws.server_starts()) == 1
    late = call_cli(SCHEDULED, cwd=ws.root, env=b.env, at="2026-11-30 14:34:00")  # 09:34
    assert late.returncode == 0, late.stderr
    assert late.stdout == "" and len(ws.server_starts()) == 1
    skipped, ran = b.history()
    assert ran["status"] == "ok" and ran["slot"] == "2026-11-30T09:30:00-05:00", ran
    assert skipped["status"] == "skipped", skipped
    assert skipped["reason"] == "slot 2026-11-30T09:30:00-05:00 already done"


def test_the_environments_ledger_wins_over_the_jobs_files(ws, pg):
    """$TASTY_ONESHOT_LEDGER and the jobs file's `ledger` both set: the environment's is the
    ledger (the jobs file's names a port nobody listens on)."""
    nowhere = f"postgresql://u@127.0.0.1:{closed_port()}/nowhere"
    ws.write(
        "tasty-oneshot.yaml",
        f"ledger: {nowhere}\nmodel: test\n" + ws.fake_mcp_yaml()
        + "jobs:\n  check:\n    instructions: Check my positions\n",
    )  # fmt: skip
    result = ws.call(*RUN)
    assert result.returncode == 0, result.stderr
    assert query(pg, "SELECT job, status FROM tasty_oneshot_runs") == [("check", "ok")]
    assert not (ws.state / "ledger.sqlite3").exists()


def test_the_job_lock_holds_across_hosts(ws, pg):
    jobs_file(ws, "--hang", "account_overview")
    a, b = hosts(ws, "host-a", "host-b")
    run_a = a.popen(*RUN)
    try:
        wait_for(
            lambda: any(call["tool"] == "account_overview" for call in ws.calls()),
            "host A's run to hang in account_overview", proc=run_a,
        )  # fmt: skip
        refused = b.cli(*RUN)
        assert refused.returncode == 75, refused.stderr
        assert refused.stdout == ""
        assert "WARNING - locked: another run of check holds its lock" in refused.stderr
        assert re.search(r"held by pid \d+ on host-a\)", refused.stderr), refused.stderr
        assert len(ws.server_starts()) == 1  # B never started the agent
        [locked, running] = b.history()
        assert (locked["status"], locked["host"]) == ("locked", "host-b"), locked
        assert (running["status"], running["host"]) == ("running", "host-a"), running
    finally:
        run_a.send_signal(signal.SIGTERM)
        _out, err = run_a.communicate(timeout=60)
    assert run_a.returncode == 143, err
    [_locked, stopped] = a.history()
    assert stopped["status"] == "interrupted" and stopped["host"] == "host-a", stopped
    assert "SIGTERM" in stopped["reason"]


def test_remember_last_sees_the_output_of_another_hosts_run(ws, pg, stub):
    jobs_file(ws, job="    remember: last\n", model="openai-chat:stub")
    a, b = hosts(ws, "host-a", "host-b")
    stub.mode("answer", "A-said-this")
    first = a.cli(*RUN)
    assert first.returncode == 0 and "A-said-this" in first.stdout, first.stderr
    asked_by_a = len(stub.requests())
    stub.mode("answer", "B-said-that")
    second = b.cli(*RUN)
    assert second.returncode == 0 and "B-said-that" in second.stdout, second.stderr
    asked_by_b = stub.requests()[asked_by_a:]
    assert asked_by_b and "A-said-this" in json.dumps(asked_by_b[0]["messages"])
    assert [(row["host"], row["output"]) for row in a.history()] == [
        ("host-b", "B-said-that"),
        ("host-a", "A-said-this"),
    ]


def test_status_and_history_show_every_hosts_rows_with_their_host(ws, pg):
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n"
        + "".join(f"  {job}:\n    instructions: Check\n" for job in ("one", "two")),
    )  # fmt: skip
    a, b, c = hosts(ws, "host-a", "host-b", "host-c")
    for host, job in ((a, "one"), (b, "two")):
        result = host.cli("run", "--job", job, "--ignore-market-hours")
        assert result.returncode == 0, result.stderr
    status = c.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    lasts = {item["job"]: item["last"] for item in json.loads(status.stdout)}
    assert {job: (last["status"], last["host"]) for job, last in lasts.items()} == {
        "one": ("ok", "host-a"),
        "two": ("ok", "host-b"),
    }
    assert [(row["job"], row["host"]) for row in c.history()] == [
        ("two", "host-b"),
        ("one", "host-a"),
    ]
    assert not c.state.joinpath("ledger.sqlite3").exists()  # host C read the shared ledger


def test_a_running_row_is_abandoned_even_if_another_database_holds_the_same_jobs_lock(
    ws, pg, cluster
):
    # Advisory locks belong to a database; pg_locks lists the whole server's.
    assert ws.call("history").returncode == 0  # creates the schema
    query(
        pg,
        "INSERT INTO tasty_oneshot_runs (job, status, reason, started_at, started_utc,"
        " agent_started, pid, host) VALUES ('check', 'running', 'agent started',"
        " '2026-11-30T09:31:00-05:00', '2026-11-30T14:31:00+00:00', 1, 1, 'gone')",
    )  # a run killed with SIGKILL: its row, no lock
    with psycopg.connect(cluster.new_database(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key("check"),))
        [row] = ws.history()
    assert row["status"] == "abandoned", row


# --- the server goes away ------------------------------------------------------------------------


def test_the_server_stopped_mid_run_loses_no_outcome(ws, own_cluster, tmp_path):
    go = tmp_path / "go"
    jobs_file(ws, "--wait-for", str(go))
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "1"
    run = ws.popen(*RUN)
    wait_for(lambda: ws.calls(), "the first tool call", proc=run)
    own_cluster.stop("immediate")
    go.write_text("go")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "account_overview" in out
    assert "Traceback" not in err and all(LOG_LINE.match(line) for line in err.splitlines())
    [kept] = (ws.state / "spool").glob("*.json")
    assert f"the outcome is kept in {kept}" in err and "WARNING - " in err, err
    own_cluster.start()
    [row] = ws.history()  # written in by the first invocation that connects
    assert row["status"] == "ok" and row["exit_code"] == 0, row
    assert "account_overview" in row["output"]
    assert list((ws.state / "spool").iterdir()) == []


class SilentServer:
    """A port that accepts connections and never answers (a hung server, a half-open
    firewall): only the connect timeout ends the wait."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


@pytest.mark.parametrize("server", ["down", "silent"])
def test_an_unreachable_server_before_the_run_means_nothing_runs(ws, server):
    silent = SilentServer() if server == "silent" else None
    port = silent.port if silent else closed_port()
    ws.env["TASTY_ONESHOT_LEDGER"] = f"postgresql://u:{PASSWORD}@127.0.0.1:{port}/tasty"
    jobs_file(ws)
    try:
        # A silent server: the real CLI, under the test's limit of 60 s (well above the connect
        # timeout), in case nothing else ended the wait.
        result = ws.cli(*RUN) if silent else ws.call(*RUN)
    finally:
        if silent:
            silent.close()
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    line = one_error_line(result.stderr)
    assert f"postgresql://u@127.0.0.1:{port}/tasty: the PostgreSQL ledger cannot be used" in line
    assert "check that the server is up and reachable" in line
    assert ("timeout" if silent else "refused") in line
    assert PASSWORD not in result.stderr
    assert ws.server_starts() == []
    assert not (ws.state / "spool").exists() or list((ws.state / "spool").iterdir()) == []


def test_skips_decided_without_the_ledger_never_connect_and_are_written_in_later(ws, own_cluster):
    jobs_file(ws, job='    schedule: "10am"\n    daily: true\n')
    warm = ws.call(*SCHEDULED, at=THANKSGIVING)  # reads the calendar, caches the day
    assert warm.returncode == 0 and "market closed" in warm.stderr, warm.stderr
    own_cluster.stop("immediate")  # its port is closed now: a connection would fail
    cached = ws.call(*SCHEDULED, at="2026-11-26 15:01:00")  # the cached day decides
    assert cached.returncode == 0, cached.stderr
    assert "skipped: market closed" in cached.stderr
    stale = ws.call(*SCHEDULED, at="2026-11-30 18:00:00")  # 13:00: the slot guard decides
    assert stale.returncode == 0, stale.stderr
    assert "skipped: stale" in stale.stderr
    for result in (cached, stale):
        assert " - ERROR - " not in result.stderr and " - WARNING - " not in result.stderr
        assert result.stdout == ""
    assert len(list((ws.state / "spool").glob("*.json"))) == 2
    own_cluster.start()
    rows = ws.history()
    # To the minute: a loaded machine may start a CLI a second or two after faketime's time.
    assert [(row["status"], row["started_at"][:16]) for row in rows] == [
        ("skipped", "2026-11-30T13:00"),
        ("skipped", "2026-11-26T10:01"),
        ("skipped", "2026-11-26T10:00"),
    ]
    assert "market closed" in rows[1]["reason"] and rows[1]["host"] == os.uname().nodename
    assert list((ws.state / "spool").iterdir()) == []
    assert len(ws.history()) == 3  # written in once


def test_a_slot_guard_skip_with_no_server_listening_exits_0(ws):
    ws.env["TASTY_ONESHOT_LEDGER"] = f"postgresql://u@127.0.0.1:{closed_port()}/tasty"
    jobs_file(ws, job=DAILY_930)
    result = ws.call(*SCHEDULED, at="2026-11-30 18:00:00")
    assert result.returncode == 0, result.stderr
    assert "skipped: stale" in result.stderr and " - ERROR - " not in result.stderr
    assert len(list((ws.state / "spool").glob("row-*.json"))) == 1  # kept for that ledger


def test_a_kept_row_is_written_in_once_by_two_invocations_at_once(ws, own_cluster):
    url = ws.env["TASTY_ONESHOT_LEDGER"]
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "60"
    jobs_file(ws, job=DAILY_930)
    assert ws.call("history").returncode == 0  # the schema
    own_cluster.stop("immediate")
    stale = ws.call(*SCHEDULED, at="2026-11-30 18:00:00")
    assert stale.returncode == 0, stale.stderr
    own_cluster.start()
    with psycopg.connect(url, autocommit=True) as db, db.transaction():
        db.execute("LOCK TABLE tasty_oneshot_runs IN EXCLUSIVE MODE")  # writers wait
        readers = [ws.popen("history", "--json") for _ in range(2)]
        wait_for(
            lambda: waiting_for_locks(url) == 2, "both invocations to write the kept row",
            proc=readers[0],
        )  # fmt: skip
    for reader in readers:
        _out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
    [row] = ws.history()
    assert row["status"] == "skipped" and "stale" in row["reason"], row


def waiting_for_locks(url: str) -> int:
    """How many sessions of this database wait for a lock."""
    [(count,)] = query(
        url,
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    return count


# --- the schema, the import, secrets --------------------------------------------------------------


def test_the_schema_has_a_version_and_two_processes_may_create_it_at_once(ws, pg):
    with psycopg.connect(pg, autocommit=True) as db:
        db.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        readers = [ws.popen("history", "--json") for _ in range(2)]
        wait_for(
            lambda: waiting_for_locks(pg) == 2, "both invocations to create the schema",
            proc=readers[0],
        )  # fmt: skip
        db.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
        for reader in readers:
            out, err = reader.communicate(timeout=60)
            assert reader.returncode == 0, err
            assert json.loads(out) == []
        [(version,)] = db.execute(
            "SELECT value FROM tasty_oneshot_meta WHERE key = 'schema_version'"
        ).fetchall()
    assert version == str(SCHEMA_VERSION)


def test_ledger_import_copies_sqlite_ledgers_once_even_where_hosts_ran_the_same_slot(ws, pg):
    jobs_file(ws, job=DAILY_930)
    a, b = hosts(ws, "host-a", "host-b")
    for host, at in ((a, OPEN_MONDAY), (a, "2026-11-30 14:32:00"), (b, OPEN_MONDAY)):
        result = host.cli(*SCHEDULED, at=at, TASTY_ONESHOT_LEDGER="")  # SQLite
        assert result.returncode == 0, result.stderr
    # Before they shared a ledger, both hosts ran the 9:30 slot: each file claims it.
    file_a, file_b = (host.state / "ledger.sqlite3" for host in (a, b))
    copied = [ws.call("ledger", "import", str(file)) for file in (file_a, file_a, file_b)]
    for result in copied:
        assert result.returncode == 0, result.stderr
    assert [result.stdout for result in copied] == [
        f"2 of 2 rows copied into {pg}\n",
        f"0 of 2 rows copied into {pg}\n",
        f"1 of 1 rows copied into {pg}\n",
    ]
    rows = ws.history()
    assert [(row["status"], row["host"]) for row in rows] == [
        ("ok", "host-b"),
        ("skipped", "host-a"),
        ("ok", "host-a"),
    ]
    assert all(row["slot"] == "2026-11-30T09:30:00-05:00" for row in rows)
    assert all(row["output"] for row in rows if row["status"] == "ok")
    # The slot stays used in the shared ledger: a third host skips it.
    again = Host(ws, "host-c").cli(*SCHEDULED, at="2026-11-30 14:33:00")
    assert again.returncode == 0 and "already done" in again.stderr, again.stderr
    assert len(ws.server_starts()) == 2  # the two SQLite runs; none since


@pytest.mark.parametrize("form", ["user:password@", "?password="])
def test_the_ledgers_password_appears_nowhere(ws, pg, cluster, form):
    database = pg.rsplit("/", 1)[1]
    user = f"u_{database}"  # roles belong to the whole server
    query(pg, f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")  # trust: never checked
    query(pg, f"ALTER DATABASE {database} OWNER TO {user}")
    where = f"127.0.0.1:{cluster.port}/{database}"
    if form == "user:password@":
        url = f"postgresql://{user}:{PASSWORD}@{where}"
    else:
        url = f"postgresql://{user}@{where}?password={PASSWORD}"
    ws.env["TASTY_ONESHOT_LEDGER"] = url
    jobs_file(ws, "--print-env", job=DAILY_930)  # a server that logs all it was given
    results = [
        ws.call(*RUN),
        ws.call(*SCHEDULED, at="2026-11-30 18:00:00"),  # stale: kept, then written in
        ws.call("status", "--json"),
        ws.call("history"),
    ]
    for result in results:
        assert result.returncode == 0, result.stderr
    rows = ws.history()
    assert [row["status"] for row in rows] == ["skipped", "ok"]
    assert PASSWORD not in json.dumps(rows)
    ws.env["TASTY_ONESHOT_LEDGER"] = url.replace(str(cluster.port), str(closed_port()))
    unreachable = ws.call(*RUN)
    assert unreachable.returncode == 1
    assert f"postgresql://{user}@127.0.0.1:" in unreachable.stderr  # named, without it
    kept = ws.call(*SCHEDULED, at="2026-11-30 18:00:00")  # kept for that ledger
    assert kept.returncode == 0, kept.stderr
    for result in [*results, unreachable, kept]:
        assert PASSWORD not in result.stdout + result.stderr
    files = [path for path in ws.state.rglob("*") if path.is_file()]
    assert any(path.parent.name == "spool" for path in files)
    assert any(path.name == "check.mcp.log" for path in files)
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path


# --- kubernetes#121594 ---------------------------------------------------------------------------


def test_a_fall_back_slot_started_by_two_pods_sharing_the_ledger_runs_once(ws, pg):
    """The CronJob controller may start `30 1 * * *` at 01:30 EDT and again at 01:30 EST,
    each time in a fresh pod (its own state directory, its own host name)."""
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n  night:\n"
        "    instructions: Check overnight futures\n"
        '    cron: "30 1 * * *"\n'
        "    ignore_market_hours: true\n",
    )
    pod_1, pod_2 = hosts(ws, "pod-1", "pod-2")
    night = ("run", "--job", "night", "--scheduled")
    first = pod_1.cli(*night, at="2026-11-01 05:30:00")  # 01:30 EDT, the first 01:30
    assert first.returncode == 0, first.stderr
    second = pod_2.cli(*night, at="2026-11-01 06:30:00")  # 01:30 EST, the second 01:30
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""
    assert len(ws.server_starts()) == 1
    skipped, ran = pod_2.history()
    assert (ran["status"], ran["host"]) == ("ok", "pod-1"), ran
    assert (skipped["status"], skipped["host"]) == ("skipped", "pod-2"), skipped
    assert skipped["scheduled"] is True
