"""Every TASTY_ONESHOT_* variable the program reads: a bad value is one line on stderr, exit 2,
naming the variable, through the CLI; an empty one counts as unset (`VAR=` in a unit
or a crontab clears it).
"""

import pytest
from test_run_lifecycle import jobs_file

RUN = ("run", "--job", "check", "--ignore-market-hours")
HISTORY = ("history", "--json")
STATUS = ("status", "--json")
HUGE = "9" * 5000  # also too many digits for Python's int()
LONG_PATH = "/" + "x" * 300

BAD = {
    "TASTY_ONESHOT_LEDGER_WAIT": ["nan", "inf", "-inf", "-1", "0", "garbage", "1e308", HUGE],
    "TASTY_ONESHOT_STATE_DIR": ["nan", "-1", "garbage", LONG_PATH, "~no-such-user-here/x",
                                "/tmp/a\nb"],
    "TASTY_ONESHOT_CONFIG": ["nan", "garbage", LONG_PATH, "/" + "y" * 5000],
    "TASTY_ONESHOT_LEDGER": ["nan", "garbage", "sqlite:///x"],
    "TASTY_ONESHOT_MAX_PARALLEL": ["nan", "inf", "-1", "0", "garbage", "1e308", "1001", HUGE],
    "TASTY_ONESHOT_WAITING": ["garbage", "{}", "nan"],
}  # fmt: skip
# The commands that read each variable.
READERS = {
    "TASTY_ONESHOT_LEDGER_WAIT": (RUN, HISTORY, STATUS),
    "TASTY_ONESHOT_STATE_DIR": (RUN, HISTORY, STATUS),
    "TASTY_ONESHOT_CONFIG": (RUN, HISTORY, STATUS),
    "TASTY_ONESHOT_LEDGER": (RUN, HISTORY, STATUS),
    "TASTY_ONESHOT_MAX_PARALLEL": (RUN,),
    "TASTY_ONESHOT_WAITING": (RUN,),  # set only by the wait for a place (waiter.py)
}
CASES = [
    (name, value, args)
    for name, values in BAD.items()
    for value in values
    for args in READERS[name]
]


@pytest.mark.parametrize(
    ("name", "value", "args"), CASES, ids=[f"{n[14:]}={v[:12]!r}-{a[0]}" for n, v, a in CASES]
)
def test_a_bad_value_is_one_line_and_exit_2_naming_the_variable(ws, name, value, args):
    jobs_file(ws)
    ws.env[name] = value
    result = ws.call(*args)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert " - ERROR - " in line and "internal error" not in line, line
    named = f"${name}" in line or (name == "TASTY_ONESHOT_CONFIG" and f"from ${name}" in line)
    assert named, line
    assert ws.server_starts() == []  # nothing ran
    if name == "TASTY_ONESHOT_LEDGER_WAIT":  # refused before the ledger is made
        assert not (ws.state / "ledger.sqlite3").exists()


@pytest.mark.parametrize("name", [n for n in BAD if n != "TASTY_ONESHOT_WAITING"])
def test_an_empty_variable_counts_as_unset(ws, name):
    jobs_file(ws)
    if name == "TASTY_ONESHOT_STATE_DIR":
        ws.env["XDG_STATE_HOME"] = str(ws.root.parent / "xdg-state")
    ws.env[name] = ""
    result = ws.call(*RUN)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_a_good_ledger_wait_is_taken(ws):
    jobs_file(ws)
    ws.env["TASTY_ONESHOT_LEDGER_WAIT"] = "0.5"
    assert ws.call(*HISTORY).returncode == 0
