"""systemd units for a job: a `.timer` pinned to New York time and a sandboxed `.service`."""

from datetime import datetime

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
