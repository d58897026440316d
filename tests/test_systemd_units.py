"""`generate-units --target systemd` through the CLI, checked with the real systemd-analyze.

Every expected instant below is written out by hand in UTC from the facts of New York time:
EST is UTC-5, EDT is UTC-4. In 2026 clocks spring forward on Sunday 2026-03-08 at 02:00 EST
(07:00 UTC; 02:00-02:59 does not exist that day) and fall back on Sunday 2026-11-01 at 02:00
EDT (06:00 UTC; 01:00-01:59 happens twice, first as EDT = 05:xx UTC, then as EST = 06:xx UTC).
Weekdays used: 2026-02-28 Sat, 03-01 Sun, 03-02 Mon, 03-06 Fri, 03-07 Sat, 03-09 Mon,
03-13 Fri, 03-15 Sun, 03-16 Mon, 04-10 Fri, 10-09 Fri, 10-12 Mon, 10-15 Thu, 10-19 Mon,
10-26 Mon, 10-30 Fri, 11-01 Sun, 11-02 Mon, 11-13 Fri, 11-27 Fri.

The units are generated once per flag combination (module-scoped), by the CLI in this process;
systemd-analyze calls are cheap.
"""

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Workspace, make_workspace

from tasty_oneshot.cli import build_parser
from tasty_oneshot.errors import UsageError
from tasty_oneshot.jobs import SCHEDULE_KEYS, schedule_from

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed: the units cannot be checked against real systemd",
)
JOBS = Path(__file__).parent / "fixtures" / "units-jobs.yaml"
ZONE = "America/New_York"

# id -> (flags, [(base time UTC, expected next fire times UTC)]): each list is the complete
# sequence of fire times after the base, as many as written.
COMBOS: dict[str, tuple[list[str], list[tuple[str, list[str]]]]] = {
    "morning-check": (
        ["--schedule", "9:30am", "--daily"],
        [
            # 09:30 EST = 14:30 UTC; from the Sunday of the change 09:30 EDT = 13:30 UTC.
            ("2026-03-07 12:00", ["2026-03-07 14:30", "2026-03-08 13:30", "2026-03-09 13:30"]),
            (
                "2026-10-30 12:00",
                ["2026-10-30 13:30", "2026-10-31 13:30", "2026-11-01 14:30", "2026-11-02 14:30"],
            ),
        ],
    ),
    "iv-watch": (
        ["--market-open", "--period", "1800"],
        [
            # 9:30, 10:00, 10:30 EDT on a Monday.
            ("2026-03-09 13:10", ["2026-03-09 13:30", "2026-03-09 14:00", "2026-03-09 14:30"]),
            # 01:00, 01:30 EST, then 03:00, 03:30 EDT: 02:00 and 02:30 do not exist.
            (
                "2026-03-08 05:50",
                ["2026-03-08 06:00", "2026-03-08 06:30", "2026-03-08 07:00", "2026-03-08 07:30"],
            ),
            # 01:00, 01:30 EDT fire once; the repeated 01:00, 01:30 EST (06:00, 06:30 UTC) don't.
            (
                "2026-11-01 04:50",
                ["2026-11-01 05:00", "2026-11-01 05:30", "2026-11-01 07:00", "2026-11-01 07:30"],
            ),
        ],
    ),
    "hourly": (
        ["--hourly"],
        [
            ("2026-03-08 05:30", ["2026-03-08 06:00", "2026-03-08 07:00", "2026-03-08 08:00"]),
            (
                "2026-11-01 03:30",
                ["2026-11-01 04:00", "2026-11-01 05:00", "2026-11-01 07:00", "2026-11-01 08:00"],
            ),
        ],
    ),
    "daily": (
        ["--daily"],
        [
            ("2026-03-07 12:00", ["2026-03-08 05:00", "2026-03-09 04:00", "2026-03-10 04:00"]),
            ("2026-10-30 12:00", ["2026-10-31 04:00", "2026-11-01 04:00", "2026-11-02 05:00"]),
        ],
    ),
    "ninety-minutes": (
        ["--period", "5400"],
        [
            # 00:00, 01:30 EST, then 03:00, 04:30, 06:00 EDT.
            (
                "2026-03-08 04:00",
                [
                    "2026-03-08 05:00",
                    "2026-03-08 06:30",
                    "2026-03-08 07:00",
                    "2026-03-08 08:30",
                    "2026-03-08 10:00",
                ],
            ),
            # 00:00, 01:30 EDT, then 03:00, 04:30 EST (01:30 EST is not a second firing).
            (
                "2026-11-01 03:00",
                ["2026-11-01 04:00", "2026-11-01 05:30", "2026-11-01 08:00", "2026-11-01 09:30"],
            ),
        ],
    ),
    "half-past-hourly": (
        ["--schedule", "9:30am", "--hourly"],
        [
            # 00:30, 01:30 EST, (02:30 does not exist), 03:30, 04:30 EDT.
            (
                "2026-03-08 05:10",
                ["2026-03-08 05:30", "2026-03-08 06:30", "2026-03-08 07:30", "2026-03-08 08:30"],
            ),
            # 00:30, 01:30 EDT, (01:30 EST = 06:30 UTC is skipped), 02:30, 03:30 EST.
            (
                "2026-11-01 04:10",
                ["2026-11-01 04:30", "2026-11-01 05:30", "2026-11-01 07:30", "2026-11-01 08:30"],
            ),
        ],
    ),
    "quarter-hours": (
        ["--cron", "*/15 9-16 * * 1-5"],
        [
            # Friday 16:45 EST, then Monday 09:00 EDT across the change weekend.
            ("2026-03-06 21:40", ["2026-03-06 21:45", "2026-03-09 13:00", "2026-03-09 13:15"]),
            ("2026-10-30 20:40", ["2026-10-30 20:45", "2026-11-02 14:00", "2026-11-02 14:15"]),
        ],
    ),
    "dom-or-dow": (
        ["--cron", "0 9 1,15 * 1"],
        [
            # cron: the 1st or the 15th, or any Monday (either field matching is enough).
            (
                "2026-02-28 12:00",
                [
                    "2026-03-01 14:00",  # Sun the 1st, EST
                    "2026-03-02 14:00",  # Mon
                    "2026-03-09 13:00",  # Mon, EDT
                    "2026-03-15 13:00",  # Sun the 15th
                    "2026-03-16 13:00",  # Mon
                ],
            ),
            (
                "2026-10-12 14:00",  # after Monday 10-12's 09:00 EDT (13:00 UTC)
                [
                    "2026-10-15 13:00",  # Thu the 15th, EDT
                    "2026-10-19 13:00",
                    "2026-10-26 13:00",
                    "2026-11-01 14:00",  # Sun the 1st, EST (09:00 is after the change)
                    "2026-11-02 14:00",
                ],
            ),
        ],
    ),
    "second-friday": (
        ["--cron", "0 9 * * 5#2"],
        [
            ("2026-02-28 12:00", ["2026-03-13 13:00", "2026-04-10 13:00"]),
            ("2026-10-01 12:00", ["2026-10-09 13:00", "2026-11-13 14:00"]),
        ],
    ),
    "night": (
        ["--schedule", "1:30am", "--daily", "--ignore-market-hours"],
        [
            ("2026-03-07 12:00", ["2026-03-08 06:30", "2026-03-09 05:30", "2026-03-10 05:30"]),
            # The fall-back 01:30 fires once, at its first occurrence (EDT, 05:30 UTC).
            (
                "2026-10-30 12:00",
                ["2026-10-31 05:30", "2026-11-01 05:30", "2026-11-02 06:30", "2026-11-03 06:30"],
            ),
        ],
    ),
    "too-early": (
        ["--schedule", "2:30am", "--daily", "--ignore-market-hours"],
        [
            # 02:30 on 2026-03-08 does not exist: no firing that day.
            ("2026-03-07 12:00", ["2026-03-09 06:30", "2026-03-10 06:30"]),
            ("2026-10-31 12:00", ["2026-11-01 07:30", "2026-11-02 07:30"]),
        ],
    ),
}
CALENDAR_CASES = [
    pytest.param(combo, base, expected, id=f"{combo}-{base[:10]}")
    for combo, (_, checks) in COMBOS.items()
    for base, expected in checks
]
INSTRUCTIONS = "Check my positions"


# --- helpers -------------------------------------------------------------------------------


def printed_units(ws: Workspace, *flags: str) -> subprocess.CompletedProcess:
    """generate-units for job `n` with `flags`, printed (no --output-dir)."""
    return ws.call(
        "generate-units", "--no-env-file", INSTRUCTIONS, "--name", "n", *flags,
        "--target", "systemd",
    )  # fmt: skip


def generate(ws: Workspace, out: Path, *args: str, at: str | None = None) -> dict[str, str]:
    """Run generate-units into `out` (which must not exist yet); the files written."""
    result = ws.call(
        "generate-units",
        "--no-env-file",
        *args,
        "--target",
        "systemd",
        "--output-dir",
        str(out),
        at=at,
    )
    assert result.returncode == 0, result.stderr
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not raw.rstrip().endswith("\\"), f"unexpected line continuation: {raw!r}"
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None and "=" in line, f"not a key=value line: {raw!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def timespan(text: str) -> float:
    """A systemd time span (`360`, `360s`, `6min 30s`, `1h`) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    assert parts and "".join(n + u for n, u in parts) == text.replace(" ", ""), text
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "s": " ",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_BLANK = " \t\n\r"


def systemd_words(value: str) -> list[str]:
    """Split an ExecStart= value as systemd does: words with quotes removed and C escapes
    undone (extract_first_word with EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE), then `%`
    specifiers resolved per word, then `$` variables at exec time. Only `%%` and `$$` may
    appear (anything else would be replaced by systemd); other escapes fail the test."""
    words, i, n = [], 0, len(value)
    while True:
        while i < n and value[i] in _BLANK:
            i += 1
        if i == n:
            return [_dollars(_specifiers(w)) for w in words]
        assert not (value[i] == ";" and (i + 1 == n or value[i + 1] in _BLANK)), (
            f"an unquoted ';' starts a second command: {value!r}"
        )
        word, quote = [], None
        while i < n and (quote or value[i] not in _BLANK):
            char = value[i]
            if char == "\\":
                assert i + 1 < n, f"a trailing backslash: {value!r}"
                code = value[i + 1]
                if code == "x":
                    word.append(chr(int(value[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                assert code in _ESCAPES, f"unexpected escape \\{code} in {value!r}"
                word.append(_ESCAPES[code])
                i += 2
                continue
            if quote is None and char in "\"'":
                quote = char
            elif char == quote:
                quote = None
            else:
                word.append(char)
            i += 1
        assert quote is None, f"unbalanced quotes: {value!r}"
        words.append("".join(word))


def _specifiers(word: str) -> str:
    parts = word.split("%%")
    for part in parts:
        assert "%" not in part, f"systemd would resolve a specifier in {word!r}"
    return "%".join(parts)


def _dollars(word: str) -> str:
    parts = word.split("$$")
    for part in parts:
        assert "$" not in part, f"systemd would substitute a variable in {word!r}"
    return "$".join(parts)


def parse_run(words: list[str]):
    """The `run` command an ExecStart= holds, read by this package's own parser."""
    assert words[0].startswith("/") and Path(words[0]).name == "tasty-oneshot", words
    assert Path(words[0]).is_file() and os.access(words[0], os.X_OK), words[0]
    try:
        args = build_parser().parse_args(words[1:])
    except UsageError as exc:
        pytest.fail(f"ExecStart is not a valid command line: {exc}: {words}")
    assert args.command == "run" and args.scheduled, words
    return args


def schedule_of(args) -> tuple:
    keys = {k: getattr(args, k) for k in SCHEDULE_KEYS if getattr(args, k) not in (None, False)}
    return schedule_from(keys, ""), bool(args.ignore_market_hours)


def flag_schedule(flags: list[str]) -> tuple:
    return schedule_of(build_parser().parse_args(["run", "x", *flags, "--scheduled"]))


def analyze(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TZ": "UTC", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, env=env, timeout=30
    )


_ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d):(\d\d) UTC")


def calendar(expression: str, base: str, count: int) -> list[str]:
    """systemd's next `count` elapses of one OnCalendar= value after `base` (UTC)."""
    result = analyze("calendar", f"--iterations={count}", f"--base-time={base} UTC", expression)
    assert result.returncode == 0, result.stderr
    found = _ELAPSE.findall(result.stdout)
    assert all(second == "00" for _, second in found), result.stdout
    return [minute for minute, _ in found]


def fire_times(on_calendar: list[str], base: str, count: int) -> list[str]:
    """The timer's next `count` elapses: every OnCalendar= line's, merged."""
    merged = sorted({t for line in on_calendar for t in calendar(line, base, count)})
    return merged[:count]


def verify(directory: Path, *names: str) -> None:
    result = analyze("verify", *(str(directory / name) for name in names))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


def exposure(service: Path) -> float:
    result = analyze("security", "--offline=yes", str(service))
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    return float(match[1])


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mws(tmp_path_factory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("systemd-units"))


@pytest.fixture(scope="module")
def adhoc(mws):
    """Units generated once per combination from ad hoc flags: id -> (dir, files, stderr)."""
    cache: dict[str, tuple[Path, dict[str, str]]] = {}

    def get(combo: str) -> tuple[Path, dict[str, str]]:
        if combo not in cache:
            out = mws.root / f"adhoc-{combo}"
            files = generate(mws, out, INSTRUCTIONS, "--name", combo, *COMBOS[combo][0])
            cache[combo] = (out, files)
        return cache[combo]

    return get


@pytest.fixture(scope="module")
def from_file(mws) -> tuple[Path, dict[str, str]]:
    """Units for every job of the fixture jobs file (`--all`), with a relative --config."""
    shutil.copy(JOBS, mws.root / "units-jobs.yaml")
    out = mws.root / "from-file"
    return out, generate(mws, out, "--all", "--config", "units-jobs.yaml")


def units_of(files: dict[str, str], name: str) -> tuple[dict, dict]:
    return (
        parse_unit(files[f"tasty-oneshot-{name}.timer"]),
        parse_unit(files[f"tasty-oneshot-{name}.service"]),
    )


# --- calendars -----------------------------------------------------------------------------


@needs_systemd
@pytest.mark.parametrize(("combo", "base", "expected"), CALENDAR_CASES)
def test_timer_fires_at_the_hand_written_utc_instants(adhoc, combo, base, expected):
    _, files = adhoc(combo)
    timer, _ = units_of(files, combo)
    on_calendar = timer["Timer"]["OnCalendar"]
    assert all(line.endswith(f" {ZONE}") for line in on_calendar), on_calendar
    assert fire_times(on_calendar, base, len(expected)) == expected


@needs_systemd
@pytest.mark.parametrize(("combo", "base", "expected"), CALENDAR_CASES)
def test_jobs_file_timers_fire_at_the_same_instants(from_file, combo, base, expected):
    _, files = from_file
    timer, _ = units_of(files, combo)
    assert fire_times(timer["Timer"]["OnCalendar"], base, len(expected)) == expected


# --- unit shape, verify, security ----------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS)
def test_adhoc_units_shape(adhoc, combo):
    _, files = adhoc(combo)
    assert sorted(files) == [f"tasty-oneshot-{combo}.service", f"tasty-oneshot-{combo}.timer"]
    timer, service = units_of(files, combo)
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["AccuracySec"] == ["1s"]
    assert "timers.target" in timer["Install"]["WantedBy"]
    assert "OnUnitActiveSec" not in timer["Timer"]

    assert service["Service"]["Type"] == ["oneshot"]
    [exec_start] = service["Service"]["ExecStart"]
    args = parse_run(systemd_words(exec_start))
    assert (args.instructions, args.name, args.job) == (INSTRUCTIONS, combo, None)
    assert schedule_of(args) == flag_schedule(COMBOS[combo][0])
    assert args.config is None and args.env_file is None  # no jobs file here, no --env-file
    assert "EnvironmentFile" not in service["Service"]
    assert "User" not in service["Service"]  # --user is the default
    assert timespan(service["Service"]["TimeoutStartSec"][0]) > 300  # the default timeout


@needs_systemd
@pytest.mark.parametrize("combo", COMBOS)
def test_adhoc_units_verify_and_are_sandboxed(adhoc, combo):
    out, _ = adhoc(combo)
    verify(out, f"tasty-oneshot-{combo}.timer", f"tasty-oneshot-{combo}.service")
    assert exposure(out / f"tasty-oneshot-{combo}.service") <= 2.5


def test_jobs_file_services_run_the_job_by_absolute_config(mws, from_file):
    _, files = from_file
    config = str(mws.root / "units-jobs.yaml")
    names = sorted(re.findall(r"^\s{2}([a-z0-9-]+):", JOBS.read_text(), re.M))
    assert sorted(files) == sorted(
        f"tasty-oneshot-{n}.{kind}" for n in names for kind in ("service", "timer")
    )
    for name in names:
        timer, service = units_of(files, name)
        [exec_start] = service["Service"]["ExecStart"]
        args = parse_run(systemd_words(exec_start))
        assert (args.job, args.instructions, args.name) == (name, None, None)
        assert args.config == config  # absolute, though given as a relative path
        assert timer["Timer"]["Persistent"] == ["true"]
        assert timer["Timer"]["AccuracySec"] == ["1s"]
        assert service["Service"]["Type"] == ["oneshot"]


@pytest.mark.parametrize(("name", "timeout"), [("slow-report", 900), ("morning-check", 300)])
def test_start_timeout_is_above_the_jobs_timeout(from_file, name, timeout):
    _, files = from_file
    _, service = units_of(files, name)
    assert timespan(service["Service"]["TimeoutStartSec"][0]) > timeout


@needs_systemd
def test_jobs_file_units_verify_and_are_sandboxed(from_file):
    out, files = from_file
    verify(out, *files)
    for name in files:
        if name.endswith(".service"):
            assert exposure(out / name) <= 2.5, name


def test_repeated_job_flags_generate_just_those_jobs(mws, from_file):
    out = mws.root / "two-jobs"
    files = generate(
        mws, out, "--job", "morning-check", "--job", "iv-watch", "--config", "units-jobs.yaml"
    )
    _, everything = from_file
    assert files == {name: everything[name] for name in files}
    assert sorted(files) == [
        "tasty-oneshot-iv-watch.service",
        "tasty-oneshot-iv-watch.timer",
        "tasty-oneshot-morning-check.service",
        "tasty-oneshot-morning-check.timer",
    ]


# --- one-time and monotonic schedules ------------------------------------------------------


@needs_systemd
@pytest.mark.parametrize(
    ("at", "clock", "expected"),
    [
        ("4pm", "2026-11-27 14:31:00", "2026-11-27 21:00"),  # 09:31 EST: later today
        ("4pm", "2026-11-27 22:00:00", "2026-11-28 21:00"),  # 17:00 EST: passed, tomorrow
        ("4pm", "2026-03-07 22:00:00", "2026-03-08 20:00"),  # tomorrow is the first EDT day
        # 21:00 EST on 11-27 (already 11-28 in UTC): 11pm is still ahead in New York today.
        ("11pm", "2026-11-28 02:00:00", "2026-11-28 04:00"),
    ],
)
def test_schedule_alone_is_a_one_time_calendar(ws, at, clock, expected):
    out = ws.root / "out"
    files = generate(ws, out, INSTRUCTIONS, "--name", "once", "--schedule", at, at=clock)
    timer, service = units_of(files, "once")
    on_calendar = timer["Timer"]["OnCalendar"]
    # One firing after the clock, then never again, even asked for three.
    assert fire_times(on_calendar, clock[:16], 3) == [expected]
    assert fire_times(on_calendar, expected, 3) == []
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["AccuracySec"] == ["1s"]
    args = parse_run(systemd_words(service["Service"]["ExecStart"][0]))
    assert schedule_of(args) == flag_schedule(["--schedule", at])
    verify(out, *files)


@needs_systemd
def test_period_not_dividing_a_day_is_a_monotonic_timer_with_a_warning(ws):
    out = ws.root / "out"
    result = ws.call(
        "generate-units", "--no-env-file", INSTRUCTIONS, "--name", "drift", "--period", "7000",
        "--target", "systemd", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " - WARNING - " in line]
    assert len(warnings) == 1 and "7000" in warnings[0], result.stderr
    assert "24 hours" in warnings[0] or "wall clock" in warnings[0], warnings
    files = {p.name: p.read_text() for p in out.iterdir()}
    timer, service = units_of(files, "drift")
    assert "OnCalendar" not in timer["Timer"]
    assert [timespan(v) for v in timer["Timer"]["OnActiveSec"]] == [7000]
    assert [timespan(v) for v in timer["Timer"]["OnUnitActiveSec"]] == [7000]
    assert timer["Timer"]["AccuracySec"] == ["1s"]
    args = parse_run(systemd_words(service["Service"]["ExecStart"][0]))
    assert schedule_of(args) == flag_schedule(["--period", "7000"])
    verify(out, *files)


# --- names, secrets, --system, quoting -----------------------------------------------------


def test_adhoc_name_is_derived_from_the_instructions_and_passed_to_run(ws):
    first = generate(ws, ws.root / "a", "Check my positions, please", "--hourly")
    again = generate(ws, ws.root / "b", "Check my positions, please", "--hourly")
    other = generate(ws, ws.root / "c", "Check my orders", "--hourly")
    assert first == again  # stable
    [timer] = [n for n in first if n.endswith(".timer")]
    name = timer.removeprefix("tasty-oneshot-").removesuffix(".timer")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name), name
    assert sorted(first) == [f"tasty-oneshot-{name}.service", timer]
    assert not set(other) & set(first)
    service = parse_unit(first[f"tasty-oneshot-{name}.service"])
    args = parse_run(systemd_words(service["Service"]["ExecStart"][0]))
    assert (args.instructions, args.name) == ("Check my positions, please", name)


SECRETS = {
    "TASTYTRADE_CLIENT_SECRET": "cs-7f3a9e2b1d-SECRET",
    "TASTYTRADE_REFRESH_TOKEN": "rt-44b8c0ffee-TOKEN",
    "OPENAI_API_KEY": "sk-test-9d9d1e1e-KEY",
}


def test_credentials_come_by_reference_never_into_a_unit(ws):
    env_file = ws.write("secrets.env", "".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    env_file.chmod(0o600)
    ws.env.update({"TASTYTRADE_ACCOUNT_ID": "5WX-ACCT-31337", **SECRETS})
    out = ws.root / "out"
    ws.write("tasty-oneshot.yaml", JOBS.read_text())
    files = generate(ws, out, "--all", "--env-file", "secrets.env")
    files |= generate(ws, ws.root / "adhoc", "Check", "--hourly", "--env-file", "secrets.env")
    every_unit = "\n".join(files.values())
    for value in [*SECRETS.values(), "5WX-ACCT-31337", "7f3a9e2b1d", "44b8c0ffee"]:
        assert value not in every_unit
    for name, text in files.items():
        if name.endswith(".service"):
            service = parse_unit(text)
            assert service["Service"]["EnvironmentFile"] == [str(env_file)], name
            args = parse_run(systemd_words(service["Service"]["ExecStart"][0]))
            assert args.config == str(ws.root / "tasty-oneshot.yaml")  # found implicitly
    if SYSTEMD_ANALYZE:
        verify(ws.root / "adhoc", *(n for n in files if n.startswith("tasty-oneshot-check")))


def test_system_units_run_as_a_user_and_user_units_do_not_set_one(ws):
    system = generate(ws, ws.root / "sys", INSTRUCTIONS, "--name", "s", "--hourly", "--system")
    user = generate(ws, ws.root / "usr", INSTRUCTIONS, "--name", "s", "--hourly", "--user")
    me = pwd.getpwuid(os.getuid()).pw_name
    assert parse_unit(system["tasty-oneshot-s.service"])["Service"]["User"] == [me]
    assert "User" not in parse_unit(user["tasty-oneshot-s.service"])["Service"]
    assert system["tasty-oneshot-s.timer"] == user["tasty-oneshot-s.timer"]
    if SYSTEMD_ANALYZE:
        verify(ws.root / "sys", *system)
        assert exposure(ws.root / "sys" / "tasty-oneshot-s.service") <= 2.5


TRICKY = [
    'Say "hello" and it\'s fine',
    "Report 100% of positions; alert if P&L < -5% (use %n, %h, %%)",
    "Price in $USD, not $HOME or ${HOME} or $$; cost $5",
    "  leading and trailing spaces  ",
    'back\\slash \\n \\" and a tab\there',
    "two\nlines",
    "naïve café ☕ — ok",
    ";",
]


@pytest.mark.parametrize("instructions", TRICKY, ids=range(len(TRICKY)))
def test_instructions_survive_systemd_quoting(ws, instructions):
    out = ws.root / "out"
    files = generate(ws, out, instructions, "--name", "tricky", "--hourly")
    service = parse_unit(files["tasty-oneshot-tricky.service"])
    [exec_start] = service["Service"]["ExecStart"]
    args = parse_run(systemd_words(exec_start))
    assert args.instructions == instructions
    assert args.name == "tricky"
    if SYSTEMD_ANALYZE:
        verify(out, *files)


# --- warnings before writing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "never"),
    [
        (["--schedule", "8:00am", "--daily"], True),
        (["--schedule", "4:00pm", "--daily"], True),
        (["--schedule", "8:00am", "--daily", "--ignore-market-hours"], False),
        (["--schedule", "4:00pm", "--daily", "--ignore-market-hours"], False),
        (["--schedule", "9:30am", "--daily"], False),
        (["--schedule", "3:59pm", "--daily"], False),
    ],
)
def test_a_job_that_could_never_run_is_warned_about_and_still_written(ws, flags, never):
    out = ws.root / "out"
    result = ws.call(
        "generate-units", "--no-env-file", INSTRUCTIONS, "--name", "w", *flags,
        "--target", "systemd", "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "tasty-oneshot-w.service",
        "tasty-oneshot-w.timer",
    ]
    lines = result.stderr.splitlines()
    warned = [i for i, line in enumerate(lines) if "could never run" in line]
    assert bool(warned) == never, result.stderr
    if never:
        assert " - WARNING - " in lines[warned[0]]
        assert "job 'w'" in lines[warned[0]]
        wrote = [i for i, line in enumerate(lines) if str(out) in line]
        assert all(i > warned[0] for i in wrote), "warned after writing"


@pytest.mark.parametrize(
    ("flags", "about"),
    [
        (["--schedule", "2:30am", "--daily", "--ignore-market-hours"], ("spring",)),
        (["--schedule", "1:30am", "--daily", "--ignore-market-hours"], ("fall",)),
        (["--period", "30", "--ignore-market-hours"], ("minute",)),
        (["--period", "30"], ("minute",)),
    ],
)
def test_dst_hours_and_short_periods_are_warned_about(ws, flags, about):
    result = printed_units(ws, *flags)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " - WARNING - " in line]
    assert any(all(word in line.lower() for word in about) for line in warnings), warnings
    # Printed, since no --output-dir: both units, nothing written.
    assert "OnCalendar=" in result.stdout and "ExecStart=" in result.stdout
    assert snapshot(ws.root) == []


def test_daytime_jobs_get_no_dst_warning(ws):
    result = printed_units(ws, "--schedule", "9:30am", "--daily", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    assert " - WARNING - " not in result.stderr


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--job", "nope", "--config", "jobs.yaml"], "nope"),
        (["--job", "morning-check", "--job", "nope", "--config", "jobs.yaml"], "nope"),
        ([INSTRUCTIONS, "--hourly", "--daily"], "--daily"),
        ([INSTRUCTIONS, "--period", "1800", "--hourly"], "--hourly"),
        ([INSTRUCTIONS, "--cron", "0 9 * * 1-5", "--hourly"], "--cron"),
        ([INSTRUCTIONS, "--cron", "0 9 * * 1-5", "--schedule", "9:30am"], "--cron"),
        ([INSTRUCTIONS, "--market-open", "--schedule", "4pm"], "--market-open"),
        ([INSTRUCTIONS, "--period", "0"], "--period"),
        ([INSTRUCTIONS, "--schedule", "25:99"], "25:99"),
        ([INSTRUCTIONS, "--cron", "0 9 L * *"], "0 9 L * *"),
        ([INSTRUCTIONS, "--cron", "0 9 15W * *"], "0 9 15W * *"),
        ([INSTRUCTIONS, "--hourly", "--env-file", "missing.env"], "missing.env"),
        ([INSTRUCTIONS, "--hourly", "--output-dir", "blocker/units"], "blocker"),
        ([INSTRUCTIONS, "--hourly", "--output-dir", "blocker"], "blocker"),
        (["--name", "x", INSTRUCTIONS, "--hourly"], "tasty-oneshot-x.timer"),  # a dir in out
        ([INSTRUCTIONS, "--hourly", "--user", "--system"], "--system"),
        ([INSTRUCTIONS, "--job", "morning-check", "--config", "jobs.yaml"], "INSTRUCTIONS"),
        (["--all", "--config", "bad-jobs.yaml"], "never"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(ws, args, names):
    ws.write("jobs.yaml", JOBS.read_text())
    # A good job first, then one that has no systemd calendar: nothing may be half-written.
    ws.write(
        "bad-jobs.yaml",
        "jobs:\n  alpha:\n    instructions: a\n    hourly: true\n"
        "  never:\n    instructions: b\n    cron: '0 9 L * *'\n",
    )
    ws.write("blocker", "a regular file\n")
    out = ws.root / "out"
    out.mkdir()
    (out / "keep.txt").write_text("kept\n")
    (out / "tasty-oneshot-x.timer").mkdir()
    if "--output-dir" not in args:
        args = [*args, "--output-dir", str(out)]
    before = snapshot(ws.root)
    result = ws.call("generate-units", "--no-env-file", *args, "--target", "systemd")
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert " - ERROR - " in line and names in line, line
    assert snapshot(ws.root) == before
    assert (out / "keep.txt").read_text() == "kept\n"


# Odd but legal: spaces, both quotes, `%` and `$` (specifiers and variables to systemd), a
# backslash, a `;`, a `#`, non-ASCII. Control characters are refused (tests/test_unit_paths.py).
ODD_DIRS = [
    "my jobs 100%h $HOME",
    'it\'s "odd" 100%n $USER',
    "back\\slash; #hash",
    "naïve café",
]


@pytest.mark.parametrize("odd_name", ODD_DIRS, ids=range(len(ODD_DIRS)))
def test_odd_but_legal_paths_reach_the_units_intact_and_verify(ws, odd_name):
    odd = ws.root / odd_name
    odd.mkdir()
    shutil.copy(JOBS, odd / "jobs.yaml")
    env_file = odd / "creds.env"
    env_file.write_text("TASTYTRADE_CLIENT_SECRET=x\nTASTYTRADE_REFRESH_TOKEN=y\n")
    env_file.chmod(0o600)
    out = odd / "units"
    files = generate(
        ws, out, "--job", "morning-check", "--config", str(odd / "jobs.yaml"),
        "--env-file", str(env_file),
    )  # fmt: skip
    service = parse_unit(files["tasty-oneshot-morning-check.service"])
    args = parse_run(systemd_words(service["Service"]["ExecStart"][0]))
    assert args.config == str(odd / "jobs.yaml")
    # EnvironmentFile= resolves % specifiers too (no $ variables, no quotes).
    [environment_file] = service["Service"]["EnvironmentFile"]
    assert _specifiers(environment_file) == str(env_file)
    if SYSTEMD_ANALYZE:
        verify(out, *files)
