# ruff: noqa: F811 (the fixtures of test_postgres_ledger, imported)
"""The PostgreSQL ledger where it meets faults: a password libpq reads where `urllib` would
not, a server that stops answering while a run records, a server restarted mid-run, and
hosts that fire the same slot together.

Each "host" is a CLI under a UTS namespace of its own (see tests/test_postgres_ledger.py).
"""

import json
from urllib.parse import unquote

import psycopg
import pytest
from conftest import closed_port
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
    ran = ws.cli(*RUN)
    assert ran.returncode == 0, ran.stderr
    with psycopg.connect(pg, autocommit=True) as holder:  # another host runs the job
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("check"),))
        locked = ws.cli(*RUN)
    assert locked.returncode == 75, locked.stderr
    stale = ws.cli(*SCHEDULED, at="2026-11-30 18:00:00")  # kept, then written in
    assert stale.returncode == 0, stale.stderr
    shown = [ws.cli("history"), ws.cli("history", "--json"), ws.cli("status", "--json")]
    for result in shown:
        assert result.returncode == 0, result.stderr
    rows = json.loads(shown[1].stdout)
    assert [row["status"] for row in rows] == ["skipped", "locked", "ok"], rows
    assert f"{user}@127.0.0.1:{cluster.port}/{database}" in rows[1]["reason"]

    ws.env["TASTY_ONESHOT_LEDGER"] = url.replace(str(cluster.port), str(closed_port()))
    refused = ws.cli(*RUN)
    assert refused.returncode == 1, refused.stderr
    line = one_error_line(refused.stderr)
    assert f"postgresql://{user}@127.0.0.1:" in line  # the ledger is named, without it
    kept = ws.cli(*SCHEDULED, at="2026-11-30 18:00:00")  # kept in the spool for it
    assert kept.returncode == 0, kept.stderr
    results = [ran, locked, stale, *shown, refused, kept]
    assert_nowhere(password, [r.stdout + r.stderr for r in results], ws.state)


@pytest.mark.parametrize("password", ["pw/sl4sh-unencoded", "pw@at-unencoded"], ids=["slash", "at"])
def test_a_password_libpq_would_misread_is_refused_without_showing_any_of_it(ws, cluster, password):
    # libpq ends the user part at the first `/` or `@`: these URLs do not connect, and
    # their error (which quotes the port or host libpq read) shows nothing of the password.
    ws.env["TASTY_ONESHOT_LEDGER"] = f"postgresql://u:{password}@127.0.0.1:{cluster.port}/db"
    jobs_file(ws, job=DAILY_930)
    refused = ws.cli(*RUN)
    assert refused.returncode == 1, refused.stderr
    assert "the PostgreSQL ledger cannot be used" in one_error_line(refused.stderr)
    kept = ws.cli(*SCHEDULED, at="2026-11-30 18:00:00")
    assert kept.returncode == 0, kept.stderr
    pieces = [password, *password.replace("@", "/").split("/")[1:]]
    for piece in pieces:
        assert_nowhere(piece, [refused.stderr, kept.stderr, refused.stdout], ws.state)
