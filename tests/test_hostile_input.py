"""Hostile input: no traceback reaches the user, whatever the jobs file, `.env` or flags hold.

Bad input anywhere is one line on stderr and exit 2, naming the file, the job and the key (or
the flag); a fault of the surroundings (a damaged ledger) is one line naming the file and what
to do, exit 1. Either way nothing is half done: no ledger row, no lock file, no ledger at all
when the input was refused before the state directory mattered.

The jobs file is fuzzed with hypothesis in this process (`dispatch`, as `main` calls it), so
that many examples stay fast; a few of the same kind of cases go through the real CLI too.
TASTY_ONESHOT_FUZZ_EXAMPLES sets how many examples each property tries (default 60).
"""

import logging
import os
import random
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasty_oneshot.cli import dispatch
from tasty_oneshot.jobs import JOB_KEYS, TOP_KEYS

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")
ERROR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - ERROR - ")
INFO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - INFO - ")

# 2026-11-30 is a Monday. 18:00 UTC is 13:00 NYC: long after a 9:30am slot, so `run
# --scheduled` of such a job is a stale skip that never starts the agent. 14:31 UTC is 9:31
# NYC: within the 9:30am slot, with the market open. 2026-11-28 is a Saturday: a run that got
# further than it should is a quick market-closed skip, never an agent run.
STALE = "2026-11-30 18:00:00"
IN_SLOT = "2026-11-30 14:31:00"
SATURDAY = "2026-11-28 15:00:00"

FUZZ = settings(
    max_examples=int(os.environ.get("TASTY_ONESHOT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CRON_UTC = ("--cron-tz", "UTC")
HANG_SECONDS = 30  # one in-process command taking longer than this is a hang

# A valid jobs file; the byte-level fuzz mutates it. No `mcp` path that could start anything
# (the commands fuzzed never start a server), and a model that needs no key.
VALID = (
    b"model: test\n"
    b"mcp:\n  command: /bin/true\n  args: [stdio]\n"
    b"notify_on: [failure]\n"
    b"max_requests: 20\n"
    b"jobs:\n"
    b"  check:\n"
    b"    instructions: Check my positions\n"
    b'    schedule: "9:30am"\n'
    b"    daily: true\n"
    b"    timeout: 120\n"
    b"    max_cost: 0.5\n"
    b"  report:\n"
    b'    instructions: "Report on ${HOME}, not $${HOME}"\n'
    b'    cron: "0 10 * * 1-5"\n'
    b"    trading: dry-run\n"
    b"    remember: last\n"
)


# Known, and left to generate.py: `generate-units --all` warns about each job without a
# schedule as it goes, before a later job, the model or the lack of any scheduled job makes
# it refuse the file (two lines or more, not one).
NO_SCHEDULE_WARNING = re.compile(r" - WARNING - .*: no schedule, no timer generated$")


def check_outcome(code: int, stdout: str, stderr: str) -> None:
    """The property: success, or one ERROR line and exit 2; never a traceback, never a line
    on stderr that is not a log line."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    for line in lines:
        assert LOG_LINE.match(line), f"not a log line: {line!r}\n{stderr}"
    assert code in (0, 2), f"exit {code} (1 would be an internal error here):\n{stderr}"
    if code == 2:
        lines = [line for line in lines if not NO_SCHEDULE_WARNING.search(line)]
        assert len(lines) == 1, stderr
        assert ERROR_LINE.match(lines[0]), lines[0]
        assert stdout == ""
        assert "internal error" not in lines[0]


# --- running `dispatch` in this process ---------------------------------------------------


class Hang(BaseException):
    """Raised by SIGALRM: a BaseException, so `dispatch` cannot take it for an error."""


class Result(NamedTuple):
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def inproc(tmp_path, monkeypatch, capsys) -> Iterator[Callable[..., Result]]:
    """Call `dispatch(argv)` here: a clean environment, a scratch working directory; the
    logging handler each call adds is removed after it."""
    for name in ("TASTY_ONESHOT_CONFIG", "MODEL_IDENTIFIER", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in os.environ if n.startswith(("TASTYTRADE_", "OPENAI_", "FUZZ_"))]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("TASTY_ONESHOT_STATE_DIR", str(tmp_path / "state"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root = logging.getLogger()
    before = list(root.handlers)

    def hang(signum: int, frame: object) -> None:
        raise Hang(f"a command took over {HANG_SECONDS}s")

    def call(*argv: str) -> Result:
        capsys.readouterr()
        environment = dict(os.environ)  # a `.env` sets variables: not for the next example
        previous = signal.signal(signal.SIGALRM, hang)
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            code = dispatch(list(argv))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            os.environ.clear()
            os.environ.update(environment)
            for handler in root.handlers[:]:
                if handler not in before:
                    root.removeHandler(handler)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield call
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)


def generate_all(path: Path) -> list[str]:
    """A command that reads and checks the whole jobs file, every job, and starts nothing."""
    return [
        "generate-units",
        "--no-env-file",
        "--all",
        "--config",
        str(path),
        "--target",
        "crontab",
        *CRON_UTC,
    ]


# --- strategy (a): structured YAML --------------------------------------------------------

ODD_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
UNSET_REF = st.from_regex(r"\A[A-Z][A-Z0-9_]{0,12}\Z").map(lambda n: "${FUZZ_UNSET_" + n + "}")
HUGE = st.one_of(
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=1, max_value=400).map(lambda n: 10**n),
    st.integers(min_value=1, max_value=400).map(lambda n: -(10**n)),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, 5e-324, -0.0]),
    ODD_TEXT,
    st.text(min_size=200, max_size=2000),
    UNSET_REF,
    st.sampled_from(["$${FUZZ_LITERAL}", "${HOME}", "$$", "${", "${1X}", "x\ny", "\t", " "]),
)


def nested_list(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


NESTED = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(ODD_TEXT, st.integers()), inner, max_size=3),
    ),
    max_leaves=12,
)
# Hostile values: mostly scalars and small structures, now and then one nested too deep.
VALUES = st.one_of(SCALARS, NESTED, NESTED, st.integers(min_value=1, max_value=60).map(nested_list))

# Values that pass a key's check, so that some files are good and get past it.
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "instructions": st.sampled_from(["Check my positions", "Report on ${HOME}", "$${X} stays"]),
    "schedule": st.sampled_from(["9:30am", "4pm", "16:00", "10:15am", "12:00"]),
    "market_open": st.booleans(),
    "hourly": st.booleans(),
    "daily": st.booleans(),
    "period": st.integers(min_value=1, max_value=366 * 86400),
    "cron": st.sampled_from(["0 10 * * 1-5", "*/15 9-15 * * 1-5", "30 9 1 * *", "0 0 29 2 *"]),
    "ignore_market_hours": st.booleans(),
    "model": st.sampled_from(["test", "opnai:gpt-5-mini", "gpt-5-mini", " test "]),
    "mcp": st.sampled_from(
        [
            {"command": "/bin/true"},
            {"command": "tasty-agent", "args": ["stdio", 1, 2.5]},
            {"url": "http://127.0.0.1:9/mcp"},
            {"command": "/bin/true", "url": "http://127.0.0.1:9/mcp"},
        ]
    ),
    "trading": st.sampled_from(["read-only", "dry-run", "live"]),
    "timeout": st.floats(min_value=0.001, max_value=86400),
    "max_delay": st.integers(min_value=1, max_value=604800),
    "max_requests": st.integers(min_value=1, max_value=10_000),
    "max_tool_calls": st.integers(min_value=1, max_value=100_000),
    "max_tokens": st.integers(min_value=1, max_value=1_000_000_000),
    "max_cost": st.floats(min_value=0.01, max_value=100_000),
    "remember": st.sampled_from(["last", "none"]),
    "notify": st.sampled_from(
        [
            "json://127.0.0.1:9/alerts",
            ["json://127.0.0.1:9/a", "ntfy://example.org/topic"],
            "json://127.0.0.1:9/${FUZZ_UNSET_URL}",
            "json://127.0.0.1:9/$${X}",
            "not a url",
        ]
    ),
    "notify_on": st.sampled_from([["failure"], ["output", "skip"], "failure", ["never"]]),
    "ledger": st.sampled_from(["postgresql://user@127.0.0.1:9/db", "sqlite:///x"]),
}
ODD_KEYS = st.one_of(
    st.sampled_from(["shedule", "jobs", "", "model\n", "MODEL", "instructions "]),
    ODD_TEXT,
    st.integers(),
    st.none(),
)


def good_keys(allowed: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the allowed keys, each with a value that passes its own check (the keys may
    still clash: two periods, cron with a time)."""
    pair = st.sampled_from(sorted(allowed)).flatmap(
        lambda key: st.tuples(st.just(key), GOOD.get(key, VALUES))
    )
    return st.lists(pair, max_size=4).map(dict)


VALID_NAME = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,63}\Z")
BAD_NAMES = st.one_of(
    st.sampled_from(["a" * 65, "a" * 260, "abc\n", "-x", "Check", "", "a b", "\u00e9t\u00e9"]),
    st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,10}\Z").map(lambda name: name + "\n"),
    ODD_TEXT,
    st.integers(),
    st.booleans(),
    st.none(),
)
FAULTS = [
    "a top-level key's value",
    "an odd top-level key",
    "a job key's value",
    "an odd job key",
    "a bad job name",
    "a job that is not a mapping",
    "no instructions",
]


@st.composite
def a_jobs_file(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A document for yaml.safe_dump, and a job name in it to ask for: a good file with
    none to three faults put in (a fault may also leave it good)."""
    if draw(st.integers(min_value=0, max_value=19)) == 0:
        return draw(VALUES), []  # not even a mapping at the top
    top: dict[Any, Any] = {}
    if draw(st.booleans()):
        top.update(model="test", mcp={"command": "/bin/true"})
    top.update(draw(good_keys(TOP_KEYS)))
    names = draw(st.lists(VALID_NAME, min_size=1, max_size=3, unique=True))
    jobs: dict[Any, Any] = {}
    for name in names:
        jobs[name] = {"instructions": draw(GOOD["instructions"])}
        if draw(st.integers(min_value=0, max_value=3)):  # mostly a job with a schedule
            jobs[name]["schedule"] = draw(GOOD["schedule"])
        jobs[name].update(draw(good_keys(JOB_KEYS)))
    for fault in draw(st.lists(st.sampled_from(FAULTS), max_size=3)):
        name = draw(st.sampled_from(names))
        if fault == "a top-level key's value":
            top[draw(st.sampled_from(sorted(TOP_KEYS)))] = draw(VALUES)
        elif fault == "an odd top-level key":
            top[draw(ODD_KEYS)] = draw(VALUES)
        elif fault == "a job key's value" and isinstance(jobs.get(name), dict):
            jobs[name][draw(st.sampled_from(sorted(JOB_KEYS)))] = draw(VALUES)
        elif fault == "an odd job key" and isinstance(jobs.get(name), dict):
            jobs[name][draw(ODD_KEYS)] = draw(VALUES)
        elif fault == "a bad job name":
            jobs[draw(BAD_NAMES)] = jobs.pop(name, {"instructions": "Check"})
        elif fault == "a job that is not a mapping":
            jobs[name] = draw(VALUES)
        elif fault == "no instructions" and isinstance(jobs.get(name), dict):
            jobs[name].pop("instructions", None)
    top["jobs"] = draw(VALUES) if draw(st.integers(min_value=0, max_value=15)) == 0 else jobs
    asked = [draw(st.sampled_from(names))] if isinstance(top["jobs"], dict) else []
    return top, asked


def dumped(document: Any, allow_unicode: bool) -> str:
    return yaml.safe_dump(document, allow_unicode=allow_unicode, sort_keys=False, width=10**6)


@FUZZ
@given(case=a_jobs_file(), allow_unicode=st.booleans())
def test_a_structured_jobs_file_is_accepted_or_one_line_exit_2(inproc, case, allow_unicode):
    document, names = case
    path = Path("jobs.yaml").absolute()
    path.write_text(dumped(document, allow_unicode), encoding="utf-8")
    result = inproc(*generate_all(path))
    check_outcome(*result)
    if result.code == 2:
        assert str(path) in result.stderr or "--all:" in result.stderr, result.stderr
    for name in names[:1]:
        result = inproc("next", "--job", name, "--config", str(path), "--count", "2")
        check_outcome(*result)


# --- strategy (b): raw bytes --------------------------------------------------------------

# Byte strings a mutation inserts: YAML's own syntax, and what a text decoder chokes on.
TOKENS = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",  # a UTF-16 surrogate, encoded: not UTF-8
    b"\x00",
    b"\xef\xbb\xbf",
    b"\r",
    b"\r\n",
    b"\t",
    b"\n  ",
    b": ",
    b"- ",
    b"&a ",
    b"*a",
    b"!!python/object:os.system ",
    b"!!binary ",
    b"%YAML 1.1\n",
    b"---\n",
    b"...\n",
    b"{",
    b"[",
    b"]",
    b'"',
    b"'",
    b"? ",
    b"|\n",
    b"9" * 400,
    b"${FUZZ_UNSET}",
    b"$${",
    b"\\u0000",
    b"\xe2\x80\xa8",  # U+2028 LINE SEPARATOR
    b"\xc2\x85",  # U+0085 NEXT LINE
]


class Mutation(NamedTuple):
    kind: str  # flip, truncate, insert, delete
    at: float  # where, as a fraction of the length
    value: int  # flip: the bit mask; insert: which token; delete: how many bytes


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    buffer = bytearray(data)
    for m in mutations:
        at = min(int(m.at * len(buffer)), len(buffer))
        if m.kind == "flip" and at < len(buffer):
            buffer[at] ^= m.value & 0xFF or 0x80
        elif m.kind == "truncate":
            del buffer[at:]
        elif m.kind == "insert":
            buffer[at:at] = TOKENS[m.value % len(TOKENS)]
        elif m.kind == "delete":
            del buffer[at : at + m.value % 16 + 1]
    return bytes(buffer)


MUTATIONS = st.lists(
    st.builds(
        Mutation,
        st.sampled_from(["flip", "flip", "insert", "insert", "delete", "truncate"]),
        st.floats(min_value=0, max_value=1),
        st.integers(min_value=0, max_value=255),
    ),
    min_size=1,
    max_size=6,
)
RAW_BYTES = st.one_of(
    st.binary(max_size=2048),
    MUTATIONS.map(lambda mutations: mutate(VALID, mutations)),
    MUTATIONS.map(lambda mutations: mutate(VALID, mutations)),
    MUTATIONS.map(lambda mutations: mutate(VALID, mutations)),
)


@FUZZ
@given(data=RAW_BYTES)
def test_jobs_file_bytes_are_accepted_or_one_line_exit_2(inproc, data):
    path = Path("jobs.yaml").absolute()
    path.write_bytes(data)
    result = inproc(*generate_all(path))
    check_outcome(*result)
    if result.code == 2:
        assert str(path) in result.stderr or "--all:" in result.stderr, result.stderr


ENV_LINES = st.lists(
    st.one_of(
        st.tuples(
            st.one_of(st.from_regex(r"\AFUZZ_[A-Z0-9_]{1,8}\Z"), ODD_TEXT),
            st.one_of(ODD_TEXT, UNSET_REF, st.sampled_from(['"a\nb"', "'x", '"', "\\"])),
        ).map(lambda pair: f"{pair[0]}={pair[1]}"),
        st.sampled_from(["export FUZZ_E=1", "# comment", "=x", "FUZZ_Q='unterminated", " "]),
        ODD_TEXT,
    ),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode())
ENV_BYTES = st.one_of(
    ENV_LINES,
    ENV_LINES.map(lambda data: data + b"\n"),
    st.binary(max_size=300),
    ENV_LINES.flatmap(lambda data: MUTATIONS.map(lambda mutations: mutate(data, mutations))),
)


@FUZZ
@given(data=ENV_BYTES)
def test_dotenv_bytes_are_accepted_or_one_line_exit_2(inproc, data):
    Path(".env").write_bytes(data)
    result = inproc("next", "--schedule", "9:30am", "--count", "1")
    check_outcome(*result)
    if result.code == 2:
        assert ".env" in result.stderr, result.stderr


def test_the_valid_jobs_file_the_fuzz_starts_from_is_valid(inproc):
    path = Path("jobs.yaml").absolute()
    path.write_bytes(VALID)
    result = inproc(*generate_all(path))
    assert result.code == 0, result.stderr
    assert "--job check " in result.stdout and "--job report " in result.stdout


def seeded_case(seed: int) -> bytes:
    """Raw bytes made the way the fuzz makes them, from a seed: the same every run."""
    rng = random.Random(seed)
    if seed == 0:
        return rng.randbytes(600)
    mutations = [
        Mutation(rng.choice(["flip", "insert", "delete"]), rng.random(), rng.randrange(256))
        for _ in range(rng.randint(1, 4))
    ]
    return mutate(VALID, mutations)


@pytest.mark.parametrize("seed", range(5))
def test_raw_bytes_through_the_real_cli_are_accepted_or_one_line_exit_2(ws, seed):
    path = ws.root / "tasty-oneshot.yaml"
    path.write_bytes(seeded_case(seed))
    result = ws.cli(*generate_all(path))
    check_outcome(result.returncode, result.stdout, result.stderr)
    # The run itself reads the same file: a stale slot is a skip (exit 0) or it is refused.
    result = ws.cli("run", "--job", "check", "--scheduled", at=STALE)
    check_outcome(result.returncode, result.stdout, result.stderr)
    if result.returncode == 2:
        assert_nothing_ran(ws)


# --- explicit cases through the CLI -------------------------------------------------------


def assert_nothing_ran(ws) -> None:
    assert ws.server_starts() == []
    assert not (ws.state / "locks").exists()
    if (ws.state / "ledger.sqlite3").exists():
        assert ws.history() == []


def one_line(ws, result: subprocess.CompletedProcess, code: int = 2) -> str:
    """Exit `code`, nothing on stdout, exactly one ERROR line on stderr; return the line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert ERROR_LINE.match(lines[0]), lines[0]
    return lines[0]


def refused(ws, result: subprocess.CompletedProcess) -> str:
    """One line, exit 2, and nothing done: no ledger (the input was refused before the state
    directory was looked at), no lock, no server."""
    line = one_line(ws, result)
    assert not (ws.state / "ledger.sqlite3").exists()
    assert_nothing_ran(ws)
    return line


def jobs_file(ws, body: str, *, model: str = "test") -> Path:
    return ws.write("tasty-oneshot.yaml", f"model: {model}\n" + ws.fake_mcp_yaml() + body)


CHECK = 'jobs:\n  check:\n    instructions: Check my positions\n    schedule: "9:30am"\n'

BAD_JOB_VALUES = {
    "a 500-deep nested list": ("    notify: " + "[" * 500 + "]" * 500 + "\n", "notify", "nested"),
    "timeout: 1 and 400 zeros": ("    timeout: 1" + "0" * 400 + "\n", "timeout", "86400"),
    "max_cost: 1 and 400 zeros": ("    max_cost: 1" + "0" * 400 + "\n", "max_cost", "100000"),
    "max_delay: 1 and 400 zeros": ("    max_delay: 1" + "0" * 400 + "\n", "max_delay", "604800"),
    "period: 1e24": ("    period: 1.0e+24\n", "period", "31622400"),
    "timeout: .nan": ("    timeout: .nan\n", "timeout", "finite"),
    "max_cost: -.inf": ("    max_cost: -.inf\n", "max_cost", "finite"),
    "instructions: a list": ("    instructions: [[[Check]]]\n", "instructions", "string"),
    "an unset variable in instructions": (
        "    instructions: Check ${FUZZ_UNSET_INSTRUCTIONS}\n",
        "instructions",
        "${FUZZ_UNSET_INSTRUCTIONS} is not set",
    ),
    "an unset variable in a notify URL": (
        "    notify: json://127.0.0.1:9/${FUZZ_UNSET_URL}\n",
        "notify",
        "${FUZZ_UNSET_URL} is not set",
    ),
    "an unset variable in the mcp args": (
        "    mcp: {command: /bin/true, args: ['${FUZZ_UNSET_ARG}']}\n",
        "mcp",
        "${FUZZ_UNSET_ARG} is not set",
    ),
}


@pytest.mark.parametrize(
    ("extra", "key", "hint"), BAD_JOB_VALUES.values(), ids=list(BAD_JOB_VALUES)
)
def test_a_hostile_job_value_is_one_line_naming_file_job_and_key(ws, extra, key, hint):
    # A key given twice is refused: a hostile `instructions` replaces the good one.
    body = (
        CHECK.replace("    instructions: Check my positions\n", "")
        if key == "instructions"
        else CHECK
    )
    path = jobs_file(ws, body + extra)
    line = refused(ws, ws.call("run", "--job", "check", "--scheduled", at=IN_SLOT))
    assert str(path) in line and "job 'check'" in line and f"key '{key}'" in line, line
    assert hint in line, line


def test_an_unset_variable_in_a_top_level_notify_url_names_the_key(ws):
    path = jobs_file(ws, "notify: json://127.0.0.1:9/${FUZZ_UNSET_TOP}\n" + CHECK)
    line = refused(ws, ws.call("run", "--job", "check"))
    assert str(path) in line and "key 'notify'" in line and "${FUZZ_UNSET_TOP}" in line


def test_jobs_file_bytes_that_are_not_utf8_name_the_file_and_the_line(ws):
    path = ws.root / "tasty-oneshot.yaml"
    path.write_bytes(b"model: test\njobs:\n  check:\n    instructions: Caf\xe9\n")
    line = refused(ws, ws.call("run", "--job", "check"))
    assert str(path) in line and "not UTF-8" in line and "line 4" in line and "0xe9" in line


def test_a_job_name_of_260_characters_is_refused(ws):
    name = "a" * 260
    path = jobs_file(ws, f"jobs:\n  {name}:\n    instructions: Check\n    hourly: true\n")
    line = refused(ws, ws.call("run", "--job", "check"))
    assert str(path) in line and "the name must be 1 to 64 characters" in line
    assert len(line) < 400  # the name is cut short in the message


def test_a_job_name_with_a_trailing_newline_is_refused_on_one_line_and_locks_nothing(ws):
    path = jobs_file(ws, 'jobs:\n  "abc\\n":\n    instructions: Check\n')
    for job in ("abc", "abc\n"):
        line = refused(ws, ws.call("run", "--job", job, "--ignore-market-hours"))
        assert str(path) in line and "job 'abc\\n'" in line, line
    assert not (ws.state / "locks" / "abc\n.lock").exists()
    assert not (ws.state / "locks" / "abc.lock").exists()


@pytest.mark.parametrize(
    ("args", "flag", "hint"),
    [
        (("run", "Check", "--max-delay", "1e20"), "--max-delay", "whole number"),
        (("run", "Check", "--max-delay", "1" + "0" * 400), "--max-delay", "604800"),
        (("run", "Check", "--timeout", "1e20"), "--timeout", "86400"),
        (("run", "Check", "--timeout", "1" + "0" * 400), "--timeout", "86400"),
        (("run", "Check", "--max-cost", "1" + "0" * 400), "--max-cost", "100000"),
        (("run", "Check", "--max-cost", "nan"), "--max-cost", "finite"),
        (("next", "--period", "1e24"), "--period", "whole number"),
        (("next", "--period", "9" * 30), "--period", "31622400"),
        (("next", "--schedule", "9:30am", "--count", "1e3"), "--count", "whole number"),
        (("run", "Check", "--name", "a" * 260), "--name", "1 to 64 characters"),
        (("run", "Check", "--name", "abc\n"), "--name 'abc\\n'", "1 to 64 characters"),
        (("run", "--job", "abc\n"), "--job 'abc\\n'", "no such job"),
        (("history", "--since", "0001-01-01T00:00+14:00"), "--since", "year 1 to 9999"),
        (("history", "--since", "2026-01-01\n"), "--since", "ISO-8601"),
        (("history", "--limit", "1e3"), "--limit", "whole number"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_a_hostile_flag_is_one_line_naming_the_flag(ws, args, flag, hint):
    jobs_file(ws, CHECK)
    line = refused(ws, ws.call(*args, "--model", "test") if args[0] == "run" else ws.call(*args))
    assert flag in line and hint in line, line


# --- env files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (b"FUZZ_A=caf\xe9\n", "not UTF-8 text (line 1)"),
        (b"FUZZ_A=1\nFUZZ_B=a\x00b\n", "NUL"),
        (b"FUZZ_A=1\nOPENAI_API_KEY sk-typo\n", "line 2 is not NAME=value"),
    ],
    ids=["not UTF-8", "a NUL byte", "a line dotenv would skip"],
)
def test_a_bad_dotenv_in_the_working_directory_is_one_line_naming_it(ws, content, hint):
    jobs_file(ws, CHECK)
    (ws.root / ".env").write_bytes(content)
    for args in (("run", "--job", "check"), ("next", "--job", "check"), ("history",)):
        line = refused(ws, ws.call(*args))
        assert ".env" in line and hint in line, line


def test_an_env_file_that_is_a_fifo_is_refused_at_once(ws):
    jobs_file(ws, CHECK)
    fifo = ws.root / "env.fifo"
    os.mkfifo(fifo)
    # Nobody ever writes to it: opening it for reading the ordinary way would block forever
    # (a subprocess, so that its limit makes that a failure, not a hung suite).
    line = refused(ws, ws.cli("run", "--job", "check", "--env-file", str(fifo), timeout=20))
    assert str(fifo) in line and "not a regular file" in line


# --- the state directory: faults of the surroundings --------------------------------------


def make_ledger(ws) -> Path:
    """A real ledger holding one run (a stale skip), closed and checkpointed."""
    jobs_file(ws, CHECK)
    result = ws.call("run", "--job", "check", "--scheduled", at=STALE)
    assert result.returncode == 0, result.stderr
    assert len(ws.history()) == 1
    for suffix in ("-wal", "-shm"):
        assert not (ws.state / f"ledger.sqlite3{suffix}").exists()
    return ws.state / "ledger.sqlite3"


@pytest.mark.parametrize("damage", ["random bytes", "cut to half"])
def test_a_damaged_ledger_is_one_line_exit_1_saying_to_move_it_aside(ws, damage):
    ledger = ws.state / "ledger.sqlite3"
    if damage == "random bytes":
        jobs_file(ws, CHECK)
        ws.state.mkdir(mode=0o700)
        ledger.write_bytes(random.Random(7).randbytes(20_000))
        ledger.chmod(0o600)
    else:
        make_ledger(ws)
        data = ledger.read_bytes()
        ledger.write_bytes(data[: len(data) // 2])
    before = ledger.read_bytes()
    for args in (("history",), ("run", "--job", "check", "--scheduled")):
        line = one_line(ws, ws.call(*args, at=STALE), code=1)
        assert str(ledger) in line and "damaged" in line, line
        assert f"mv {ledger} {ledger}.damaged" in line, line
    assert ledger.read_bytes() == before  # not "repaired", not written to
    assert ws.server_starts() == []


def test_a_ledger_that_is_a_directory_is_one_line_naming_it_and_the_fix(ws):
    jobs_file(ws, CHECK)
    ledger = ws.state / "ledger.sqlite3"
    ledger.mkdir(parents=True, mode=0o700)
    ws.state.chmod(0o700)
    for args in (("history",), ("run", "--job", "check", "--scheduled")):
        # exit 2: the state directory's own rule for what is not ours (paths.py)
        line = one_line(ws, ws.call(*args, at=STALE), code=2)
        assert str(ledger) in line and "is a directory" in line and f"rm {ledger}" in line
    assert ledger.is_dir() and list(ledger.iterdir()) == []


def lock_fault(ws, kind: str) -> tuple[Path, str]:
    """Make STATE/locks unusable in the way `kind` says; return it and the expected fix."""
    jobs_file(ws, CHECK)
    ws.state.mkdir(mode=0o700)
    locks = ws.state / "locks"
    if kind == "a regular file":
        locks.write_text("")
        return locks, f"rm {locks}"
    if kind == "a symbolic link":
        (ws.root / "elsewhere").mkdir()
        locks.symlink_to(ws.root / "elsewhere")
        return locks, f"rm {locks}"
    locks.mkdir(mode=0o700)
    if os.geteuid() == 0:  # root may write anywhere: another owner is what it refuses
        os.chown(locks, 65534, 65534)
        return locks, f"chown 0 {locks}"
    locks.chmod(0o500)
    return locks, f"chmod 700 {locks}"


LOCK_FAULTS = ["a regular file", "a symbolic link", "not ours"]


@pytest.mark.parametrize("kind", LOCK_FAULTS)
def test_an_unusable_locks_directory_is_an_error_naming_it_and_the_fix(ws, kind):
    locks, fix = lock_fault(ws, kind)
    # On a Saturday: were the lock taken after all, the run would be a market-closed skip.
    result = ws.call("run", "--job", "check", at=SATURDAY)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    *before, line = result.stderr.splitlines()
    assert all(INFO_LINE.match(info) for info in before), result.stderr
    assert ERROR_LINE.match(line) and str(locks) in line and fix in line, line
    assert ws.history() == []
    assert ws.server_starts() == []
    assert not (ws.root / "elsewhere" / "check.lock").exists()


def test_an_unusable_locks_directory_is_exactly_one_line(ws):
    lock_fault(ws, "a regular file")
    one_line(ws, ws.call("run", "--job", "check", at=SATURDAY))


# --- `$${X}` is a literal, seen where the model sees it -----------------------------------


def test_a_doubled_dollar_reaches_the_model_as_a_literal(ws, stub):
    ws.env["FUZZ_SET"] = "expanded-value"
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n"
        + ws.fake_mcp_yaml()
        + "jobs:\n  check:\n    instructions: 'Echo $${FUZZ_LITERAL} and ${FUZZ_SET}'\n",
    )
    result = ws.call("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    sent = "\n".join(str(request) for request in stub.requests())
    assert "Echo ${FUZZ_LITERAL} and expanded-value" in sent, sent[:2000]
    assert "$${" not in sent


# --- the model: a typo is exit 2 before the slot is used up -------------------------------

SLOT_JOB = 'jobs:\n  check:\n    instructions: Check\n    schedule: "9:30am"\n    daily: true\n'


def test_a_model_typo_is_exit_2_and_leaves_the_slot_for_the_corrected_run(ws):
    path = jobs_file(ws, SLOT_JOB, model="opnai:gpt-5-mini")
    typos = [
        (ws.call("run", "--job", "check", "--scheduled", at=IN_SLOT), "key 'model'"),
        (
            ws.call("run", "--job", "check", "--scheduled", "--model", "gpt-5-mini", at=IN_SLOT),
            "--model",
        ),
    ]
    for result, named in typos:
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        # The run got as far as the model (the market check said open): those INFO lines come
        # first; the refusal is the one ERROR line, last.
        *before, line = result.stderr.splitlines()
        assert all(INFO_LINE.match(info) for info in before), result.stderr
        assert ERROR_LINE.match(line) and named in line and "Unknown model" in line, line
    assert str(path) in typos[0][0].stderr
    assert ws.history() == []

    jobs_file(ws, SLOT_JOB, model="test")
    result = ws.call("run", "--job", "check", "--scheduled", at="2026-11-30 14:32:00")
    assert result.returncode == 0, result.stderr
    [row] = ws.history()
    assert row["status"] == "ok" and row["slot"] == "2026-11-30T09:30:00-05:00"


def test_generate_units_refuses_a_model_typo(ws):
    path = jobs_file(ws, SLOT_JOB, model="opnai:gpt-5-mini")
    result = ws.call(
        "generate-units",
        "--no-env-file",
        "--job",
        "check",
        "--target",
        "crontab",
        "--cron-tz",
        "UTC",
    )
    line = refused(ws, result)
    assert str(path) in line and "key 'model'" in line and "Unknown model" in line


# --- the MCP server command -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "hint"),
    [("/nonexistent/fuzz/server", "not an executable file"), ("no-such-fuzz-server", "not found")],
    ids=["an absolute path", "a bare name"],
)
def test_an_mcp_command_that_does_not_exist_is_one_line_exit_2(ws, command, hint):
    # The line names the command, not the file or the key (mcp_server.py words it).
    ws.write(
        "tasty-oneshot.yaml",
        f"model: test\nmcp:\n  command: {command}\n" + CHECK,
    )
    line = refused(ws, ws.call("run", "--job", "check", "--scheduled", at=IN_SLOT))
    assert command in line and hint in line, line


def test_the_fuzz_helpers_see_a_traceback_and_a_stray_line():
    # The property itself must be able to fail.
    with pytest.raises(AssertionError):
        check_outcome(1, "", "2026-11-30 10:00:00 - ERROR - internal error: X (please report it)\n")
    with pytest.raises(AssertionError):
        check_outcome(2, "", "Traceback (most recent call last):\n")
    with pytest.raises(AssertionError):
        check_outcome(2, "", "2026-11-30 10:00:00 - ERROR - a\nb\n")
    check_outcome(0, "x", "2026-11-30 10:00:00 - WARNING - a\n")
