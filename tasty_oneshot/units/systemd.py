"""systemd units for a job: a `.timer` pinned to New York time and a sandboxed `.service`."""

import re
from datetime import datetime
from typing import NamedTuple

from tasty_oneshot.jobs import Job
from tasty_oneshot.schedule import Schedule, cron_fields
from tasty_oneshot.units import hours_by_pattern

ZONE = "America/New_York"
WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")

# Hardening a careful admin would add; the run still needs the network (broker, model) and
# its state directory, nothing else.
SANDBOX = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
PrivateIPC=yes
KeyringMode=private
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
UMask=0077
"""


def on_calendar(schedule: Schedule, now: datetime) -> list[str]:
    """The OnCalendar= values for a wall-clock schedule, each pinned to New York time."""
    if schedule.cron is not None:
        return _cron_calendars(schedule.cron)
    if schedule.is_once:
        fire = next(schedule.fire_times(now))
        return [f"{fire:%Y-%m-%d %H:%M:%S} {ZONE}"]
    return _offset_calendars(schedule.offsets())


def _offset_calendars(offsets: list[int]) -> list[str]:
    """Daily offsets (seconds after midnight) as few calendar lines as it takes: hours that
    share the same minutes and seconds go on one line, a line per second."""
    times = [(offset // 3600, divmod(offset % 3600, 60)) for offset in offsets]
    lines = []
    for pattern, hours in hours_by_pattern(times):
        by_second: dict[int, list[int]] = {}
        for minute, second in pattern:
            by_second.setdefault(second, []).append(minute)
        for second, minutes in sorted(by_second.items()):
            hh, mm = _values(hours, 24), _values(minutes, 60)
            lines.append(f"*-*-* {hh}:{mm}:{second:02d} {ZONE}")
    return lines


def _cron_calendars(expression: str) -> list[str]:
    minutes, hours, days, months, weekdays = cron_fields(expression)
    time = f"{_values(hours, 24)}:{_values(minutes, 60)}:00 {ZONE}"
    month = _values(months, 12, start=1)

    def line(dom: str, dow: list[int] | None) -> str:
        prefix = ",".join(WEEKDAYS[d] for d in dow) + " " if dow is not None else ""
        return f"{prefix}*-{month}-{dom} {time}"

    from croniter import croniter

    parsed = croniter(expression)
    if parsed.nearest_weekday:
        raise ValueError(f"{expression!r}: 'W' (nearest weekday) has no systemd calendar form")
    if parsed.nth_weekday_of_month:
        if days is not None:
            raise ValueError(f"{expression!r}: '#' with a day of month has no calendar form")
        # The n-th such weekday of a month is one of the days 7n-6 .. 7n; systemd ANDs the
        # weekday and the day, so `Fri *-*-08..14` is the second Friday.
        calendars = []
        for d, nths in sorted(parsed.nth_weekday_of_month.items()):
            numbers = sorted(n for n in nths if isinstance(n, int))
            if len(numbers) != len(nths):  # "l": `L`, the last such weekday of the month
                raise ValueError(f"{expression!r}: 'L' (last weekday) has no systemd calendar form")
            days_of_nths = ",".join(f"{7 * n - 6:02d}..{min(7 * n, 31):02d}" for n in numbers)
            calendars.append(line(days_of_nths, [d]))
        return calendars
    if days is None or weekdays is None:
        # cron: with only one of day-of-month and day-of-week restricted, that one applies.
        dom = "*" if days is None else _values(days, 31, start=1)
        return [line(dom, weekdays)]
    # cron fires when either matches; systemd would need both, so say it in two lines.
    return [line(_values(days, 31, start=1), None), line("*", weekdays)]


def _values(values: list[int], size: int, start: int = 0) -> str:
    """A systemd calendar component: `*`, `start/step` or a comma list, two digits each."""
    values = sorted(set(values))
    if values == list(range(start, start + size)):
        return "*"
    if len(values) >= 3:
        step = values[1] - values[0]
        if values == list(range(values[0], start + size, step)):
            return f"{values[0]:02d}/{step}"
    return ",".join(f"{v:02d}" for v in values)


def timer_unit(job: Job, now: datetime) -> str:
    """The .timer: calendar lines in New York time, or a monotonic period."""
    schedule = job.schedule
    lines = ["[Unit]", f"Description=tasty-oneshot {job.name}: {schedule.describe()}", ""]
    lines.append("[Timer]")
    if schedule.is_monotonic:
        lines += [f"OnActiveSec={schedule.period}s", f"OnUnitActiveSec={schedule.period}s"]
    else:
        lines += [f"OnCalendar={value}" for value in on_calendar(schedule, now)]
        # A run missed while the machine was off is started at boot; `run --scheduled`
        # then decides with --max-delay whether that slot is still fresh.
        lines.append("Persistent=true")
    lines += ["AccuracySec=1s", "", "[Install]", "WantedBy=timers.target", ""]
    return "\n".join(lines)


def service_unit(job: Job, exec_start: str, env_file: str | None, user: str | None) -> str:
    """The .service: one `run --scheduled` per timer firing, sandboxed."""
    lines = [
        "[Unit]",
        f"Description=tasty-oneshot {job.name}: one run of the agent",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={exec_start}",
    ]
    if env_file:
        lines.append(f"EnvironmentFile={env_file.replace('%', '%%')}")  # % specifiers
    if user:
        lines.append(f"User={user}")
    lines += [
        # The run stops itself at its timeout (exit 124); this is only the backstop.
        f"TimeoutStartSec={int(job.timeout) + 60}",
        "StateDirectory=tasty-oneshot",
        "StateDirectoryMode=0700",
        f"SyslogIdentifier=tasty-oneshot-{job.name}",
        # `journalctl TASTY_ONESHOT_JOB=NAME` finds one job's lines, the MCP server's too.
        f"LogExtraFields=TASTY_ONESHOT_JOB={job.name}",
        SANDBOX,
    ]
    return "\n".join(lines)


def unit_names(job: Job) -> tuple[str, str]:
    return f"tasty-oneshot-{job.name}.timer", f"tasty-oneshot-{job.name}.service"


# --- EnvironmentFile= ----------------------------------------------------------------------

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # systemd ignores any other name
_WHITESPACE, _NEWLINE, _COMMENTS, _ESCAPED = " \t\n\r", "\n\r", "#;", '"\\`$'


class Assignment(NamedTuple):
    line: int  # where its name starts, counting from 1
    name: str
    value: str


class EnvironmentFile(NamedTuple):
    assignments: list[Assignment]  # in order, names systemd ignores included
    joined_comments: list[int]  # comment lines ending in `\`, which join the next line


def read_environment_file(text: str) -> EnvironmentFile:
    """The text as systemd's EnvironmentFile= reads it (src/basic/env-file.c): no `export`,
    no inline comments, a quote opens anywhere a value starts and closes back into the
    value, backslashes escape as sh does outside quotes and only `"\\`$` inside double quotes,
    nothing inside single quotes, no `${VAR}` expansion. Up to systemd 253 a comment line
    ending in a backslash swallows the next line; these are listed apart."""
    found: list[Assignment] = []
    joined: list[int] = []
    state, name, value, start = "pre_key", "", "", 0
    name_space = value_space = -1  # where trailing whitespace starts, -1: none

    def push(chomp: bool) -> None:
        key = name[:name_space] if name_space >= 0 else name
        kept = value[:value_space] if chomp and value_space >= 0 else value
        found.append(Assignment(text.count("\n", 0, start) + 1, key, kept))

    for i, c in enumerate(text):
        if state == "pre_key":
            if c in _COMMENTS:
                state = "comment"
            elif c not in _WHITESPACE:
                state, name, name_space, start = "key", c, -1, i
        elif state == "key":
            if c in _NEWLINE:
                state = "pre_key"
            elif c == "=":
                state, value, value_space = "pre_value", "", -1
            else:
                if c not in _WHITESPACE:
                    name_space = -1
                elif name_space < 0:
                    name_space = len(name)
                name += c
        elif state == "pre_value":
            if c in _NEWLINE:
                push(chomp=False)
                state = "pre_key"
            elif c == "'":
                state = "single"
            elif c == '"':
                state = "double"
            elif c == "\\":
                state = "escape"
            elif c not in _WHITESPACE:
                state, value = "value", value + c
        elif state == "value":
            if c in _NEWLINE:
                push(chomp=True)
                state = "pre_key"
            elif c == "\\":
                state, value_space = "escape", -1
            else:
                if c not in _WHITESPACE:
                    value_space = -1
                elif value_space < 0:
                    value_space = len(value)
                value += c
        elif state == "escape":
            state = "value"
            if c not in _NEWLINE:  # an escaped line break continues the value
                value += c
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value += c
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value += c
        elif state == "double_escape":
            state = "double"
            if c in _ESCAPED:
                value += c
            elif c != "\n":
                value += "\\" + c
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NEWLINE:
                state = "pre_key"
        elif state == "comment_escape":
            if c in _NEWLINE:
                if text[i + 1 :].split("\n", 1)[0].strip():
                    joined.append(text.count("\n", 0, i) + 1)
                state = "pre_key"
            else:
                state = "comment"
    if state in ("pre_value", "value", "escape", "single", "double", "double_escape"):
        push(chomp=state == "value")
    return EnvironmentFile(found, joined)
