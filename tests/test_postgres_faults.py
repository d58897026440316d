# ruff: noqa: F811 (the fixtures of test_postgres_ledger, imported)
"""The PostgreSQL ledger where it meets faults: a password libpq reads where `urllib` would
not, a server that stops answering while a run records, a server restarted mid-run, and
hosts that fire the same slot together.

Each "host" is a CLI under a UTS namespace of its own (see tests/test_postgres_ledger.py); a
run that races another for the slot or the lock is a process of its own too. The rest run the
CLI in this process (`ws.call`).
"""

import json
import time
from urllib.parse import unquote

import psycopg
import pytest
from conftest import closed_port
from tcp_proxy import Proxy
from test_postgres_ledger import (  # noqa: F401 (fixtures)
    DAILY_930,
    OPEN_MONDAY,
    RUN,
    SCHEDULED,
    cluster,
    hosts,
    jobs_file,
    one_error_line,
    own_cluster,
    pg,
    query,
)
from test_run_lifecycle import wait_for

from tasty_oneshot.ledger.postgres import lock_key

# --- a password libpq reads where urllib would not -------------------------------------------

# The password as the URL carries it (libpq's rules: `#` and `?` may stay unencoded in the
# user part, `/`, `@` and `%` must be percent-encoded), and where.
PASSWORDS = {
    "hash": ("user", "pw#h4sh-secret"),
    "question": ("user", "pw?qu3ry-secret"),
    "slash": ("user", "pw%2Fsl4sh-secret"),
    "at": ("user", "pw%40at-secret"),
    "percent": ("user", "pw%25perc3nt-secret"),
    "query-hash": ("query", "pw#fr4gment-secret"),
    "query-question": ("query", "pw%3Fqu3ry-secret"),
}


def ledger_url(user: str, password: str, where: str, form: str) -> str:
    if form == "user":
        return f"postgresql://{user}:{password}@{where}"
    return f"postgresql://{user}@{where}?password={password}&application_name=x"


def assert_nowhere(secret: str, texts: list[str], state) -> None:
    """Neither the password as written nor as libpq decodes it is in any text or file of
    the state directory (the spool included)."""
    forms = {secret, unquote(secret)}
    for text in texts:
        for form in forms:
            assert form not in text, text
    files = [path for path in state.rglob("*") if path.is_file()]
    assert any(path.parent.name == "spool" for path in files)
    for path in files:
        for form in forms:
            assert form.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(("form", "password"), PASSWORDS.values(), ids=PASSWORDS.keys())
def test_a_password_libpq_reads_appears_in_no_line_row_or_file(ws, pg, cluster, form, password):
    database = pg.rsplit("/", 1)[1]
    user = f"u_{database}"  # roles belong to the whole server (trust: never checked)
    query(pg, f"CREATE ROLE {user} LOGIN")
    query(pg, f"ALTER DATABASE {database} OWNER TO {user}")
    url = ledger_url(user, password, f"127.0.0.1:{cluster.port}/{database}", form)
    ws.env["TASTY_ONESHOT_LEDGER"] = url
    jobs_file(ws, job=DAILY_930)
    ran = ws.call(*RUN)
    assert ran.returncode == 0, ran.stderr
    with psycopg.connect(pg, autocommit=True) as holder:  # another host runs the job
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("check"),))
        locked = ws.call(*RUN)
    assert locked.returncode == 75, locked.stderr
    stale = ws.call(*SCHEDULED, at="2026-11-30 18:00:00")  # kept, then written in
    assert stale.returncode == 0, stale.stderr
    shown = [ws.call("history"), ws.call("history", "--json"), ws.call("status", "--json")]
    for result in shown:
        assert result.returncode == 0, result.stderr
    rows = json.loads(shown[1].stdout)
    assert [row["status"] for row in rows] == ["skipped", "locked", "ok"], rows
    assert f"{user}@127.0.0.1:{cluster.port}/{database}" in rows[1]["reason"]

    ws.env["TASTY_ONESHOT_LEDGER"] = url.replace(str(cluster.port), str(closed_port()))
    refused = ws.call(*RUN)
    assert refused.returncode == 1, refused.stderr
    line = one_error_line(refused.stderr)
    assert f"postgresql://{user}@127.0.0.1:" in line  # the ledger is named, without it
    kept = ws.call(*SCHEDULED, at="2026-11-30 18:00:00")  # kept in the spool for it
    assert kept.returncode == 0, kept.stderr
    results = [ran, locked, stale, *shown, refused, kept]
    assert_nowhere(password, [r.stdout + r.stderr for r in results], ws.state)


@pytest.mark.parametrize("password", ["pw/sl4sh-unencoded", "pw@at-unencoded"], ids=["slash", "at"])
def test_a_password_libpq_would_misread_is_refused_without_showing_any_of_it(ws, cluster, password):
    # libpq ends the user part at the first `/` or `@`: these URLs do not connect, and
    # their error (which quotes the port or host libpq read) shows nothing of the password.
    ws.env["TASTY_ONESHOT_LEDGER"] = f"postgresql://u:{password}@127.0.0.1:{cluster.port}/db"
    jobs_file(ws, job=DAILY_930)
    refused = ws.call(*RUN)
    assert refused.returncode == 1, refused.stderr
    assert "the PostgreSQL ledger cannot be used" in one_error_line(refused.stderr)
    kept = ws.call(*SCHEDULED, at="2026-11-30 18:00:00")
    assert kept.returncode == 0, kept.stderr
    pieces = [password, *password.replace("@", "/").split("/")[1:]]
    for piece in pieces:
        assert_nowhere(piece, [refused.stderr, kept.stderr, refused.stdout], ws.state)


# --- hosts that fire the same slot ---------------------------------------------------------------


def test_a_host_that_fires_the_slot_while_another_runs_it_skips_as_already_done(ws, pg):
    go = ws.root / "go"
    jobs_file(ws, "--wait-for", str(go), job=DAILY_930)
    a, b, c = hosts(ws, "host-a", "host-b", "host-c")
    first = a.popen(*SCHEDULED, at=OPEN_MONDAY)
    try:
        wait_for(lambda: ws.calls(), "host A's agent to start", proc=first)
        late = b.cli(*SCHEDULED, at="2026-11-30 14:33:00")  # 9:33, within max_delay
    finally:
        go.write_text("go")
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert late.returncode == 0, late.stderr  # not 75: the slot, not the lock, decided
    assert "skipped: slot 2026-11-30T09:30:00-05:00 already done" in late.stderr
    assert late.stdout == ""
    straggler = c.cli(*SCHEDULED, at="2026-11-30 14:34:00")  # after A ended
    assert straggler.returncode == 0 and "already done" in straggler.stderr, straggler.stderr
    assert len(ws.server_starts()) == 1
    rows = c.history()
    assert [(row["host"], row["status"]) for row in rows] == [
        ("host-c", "skipped"),
        ("host-b", "skipped"),
        ("host-a", "ok"),
    ]


def test_a_scheduled_run_refused_the_lock_leaves_its_slot_to_a_straggler(ws, pg):
    go = ws.root / "go"
    jobs_file(ws, "--wait-for", str(go), job=DAILY_930)
    a, b, c = hosts(ws, "host-a", "host-b", "host-c")
    by_hand = a.popen(*RUN)  # not scheduled: holds the job's lock, claims no slot
    try:
        wait_for(lambda: ws.calls(), "the run by hand to start its agent", proc=by_hand)
        refused = b.cli(*SCHEDULED, at=OPEN_MONDAY)
        assert refused.returncode == 75, refused.stderr
        assert "locked: another run of check holds its lock" in refused.stderr
    finally:
        go.write_text("go")
        by_hand.communicate(timeout=60)
    assert by_hand.returncode == 0
    straggler = c.cli(*SCHEDULED, at="2026-11-30 14:33:00")  # the slot is still free
    assert straggler.returncode == 0, straggler.stderr
    assert "account_overview" in straggler.stdout
    rows = c.history()
    assert [(row["host"], row["status"]) for row in rows] == [
        ("host-c", "ok"),
        ("host-b", "locked"),
        ("host-a", "ok"),
    ]
    assert rows[0]["slot"] == "2026-11-30T09:30:00-05:00"


@pytest.mark.parametrize("second", ["fired-together", "refused-the-lock"])
def test_with_sqlite_the_slot_is_claimed_before_the_lock_too(ws, second):
    go = ws.root / "go"
    jobs_file(ws, "--wait-for", str(go), job=DAILY_930)
    first = ws.popen(*(SCHEDULED if second == "fired-together" else RUN), at=OPEN_MONDAY)
    try:
        wait_for(lambda: ws.calls(), "the first run to start its agent", proc=first)
        again = ws.cli(*SCHEDULED, at="2026-11-30 14:32:00")
    finally:
        go.write_text("go")
        first.communicate(timeout=60)
    assert first.returncode == 0
    if second == "fired-together":
        assert again.returncode == 0, again.stderr
        assert "skipped: slot 2026-11-30T09:30:00-05:00 already done" in again.stderr
        return
    assert again.returncode == 75, again.stderr
    straggler = ws.call(*SCHEDULED, at="2026-11-30 14:33:00")
    assert straggler.returncode == 0 and "account_overview" in straggler.stdout, straggler.stderr
    assert [row["status"] for row in ws.history()] == ["ok", "locked", "ok"]


# --- a server that stops answering -------------------------------------------------------------


@pytest.fixture
def proxy(cluster):
    made = Proxy(cluster.port)
    yield made
    made.close()


def test_a_server_that_stops_answering_while_the_run_records_costs_no_outcome(
    ws, pg, cluster, proxy
):
    ws.env["TASTY_ONESHOT_LEDGER"] = pg.replace(f":{cluster.port}/", f":{proxy.port}/")
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "60"  # the run's own timeout must bound it
    go = ws.root / "go"
    jobs_file(ws, "--wait-for", str(go), job="    timeout: 30\n")
    started = time.monotonic()
    run = ws.popen(*RUN)
    wait_for(lambda: ws.calls(), "the agent's first tool call", proc=run)
    proxy.stop_forwarding()
    go.write_text("go")
    out, err = run.communicate(timeout=120)  # without a bound: still waiting here
    assert time.monotonic() - started < 30 + 10  # its timeout, a moment to record, a CLI
    assert run.returncode == 0, err  # the agent's own exit code
    assert "account_overview" in out
    [kept] = (ws.state / "spool").glob("*.json")
    assert f"the outcome is kept in {kept}" in err and "no answer within" in err, err
    assert "Traceback" not in err
    proxy.forward()
    [row] = ws.history()  # the next invocation that connects writes it in
    assert row["status"] == "ok" and "account_overview" in row["output"], row
    assert list((ws.state / "spool").glob("*.json")) == []


# --- a restart of the server ----------------------------------------------------------------


def renewed_since_the_restart(url: str) -> bool:
    """Whether a lease was renewed from a session of the server's present life."""
    try:
        [(count,)] = query(
            url,
            "SELECT count(*) FROM tasty_oneshot_leases"
            " WHERE backend_start >= pg_postmaster_start_time()",
        )
    except psycopg.OperationalError:  # still starting
        return False
    return count > 0


def test_one_run_of_a_job_across_hosts_holds_across_a_restart_of_the_server(ws, own_cluster):
    url = ws.env["TASTY_ONESHOT_LEDGER"]
    go = ws.root / "go"
    jobs_file(ws, "--wait-for", str(go))
    a, b = hosts(ws, "host-a", "host-b")
    run_a = a.popen(*RUN)
    try:
        wait_for(lambda: ws.calls(), "host A's agent to start", proc=run_a)
        own_cluster.restart()  # drops A's session, and with it the advisory lock
        refused = b.cli(*RUN)
        assert refused.returncode == 75, refused.stderr
        assert "locked: another run of check holds its lock" in refused.stderr
        assert run_a.poll() is None
        wait_for(
            lambda: renewed_since_the_restart(url), "host A to renew its lease", proc=run_a
        )  # fmt: skip
        [_locked, running] = b.history()
        assert (running["host"], running["status"]) == ("host-a", "running"), running
    finally:
        go.write_text("go")
        out, err = run_a.communicate(timeout=60)
    assert run_a.returncode == 0, err
    assert "account_overview" in out
    assert [(row["host"], row["status"]) for row in b.history()] == [
        ("host-b", "locked"),
        ("host-a", "ok"),
    ]
    assert len(ws.server_starts()) == 1
    assert not list((a.state / "spool").glob("*.json"))  # written at once, not kept
    assert query(url, "SELECT job FROM tasty_oneshot_leases") == []  # given up at the end
