"""The command line: parse, then hand over to the module named after the command.

argparse rather than typer: a skipped run must exit in well under 150 ms, and importing typer
alone costs most of that on the machines this runs on.
"""

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from tasty_oneshot import __version__, jobs, terminal
from tasty_oneshot.errors import (
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_USAGE,
    StateFault,
    UsageError,
    one_line,
)
from tasty_oneshot.jobs import JOB_KEYS, check_keys
from tasty_oneshot.schedule import NYC
from tasty_oneshot.secrets import RedactingFilter

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
log = logging.getLogger("tasty_oneshot")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, as the contract says
        raise UsageError(f"{self.prog}: {message}")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, sized to the terminal without importing shutil.

    argparse builds a formatter for every option it adds, and sizes it with
    shutil.get_terminal_size: importing shutil (bz2 and lzma with it) is a tenth of a
    skipped run's CPU time. This asks the same questions as shutil does: $COLUMNS, then
    the terminal on stdout, else 80 columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _typed[N: (int, float)](
    convert: Callable[[str], N], check: Callable[[N], N]
) -> Callable[[str], N]:
    """An argparse type from one of the jobs file's checkers: the same ranges, one line."""

    def parse(text: str) -> N:
        try:
            return check(convert(text))
        except (ValueError, OverflowError) as exc:
            # int("1e20") fails too: say what was wanted, not that 1e20 is no number.
            kind = "a whole number" if convert is int else "a number"
            message = str(exc) if "expected" in str(exc) else f"{text[:40]!r} is not {kind}"
            raise argparse.ArgumentTypeError(message) from None

    return parse


_period = _typed(int, jobs.PERIOD)
_max_delay = _typed(int, jobs.MAX_DELAY)
_timeout = _typed(float, jobs.TIMEOUT)
_max_requests = _typed(int, jobs.MAX_REQUESTS)
_max_tool_calls = _typed(int, jobs.MAX_TOOL_CALLS)
_max_tokens = _typed(int, jobs.MAX_TOKENS)
_max_cost = _typed(float, jobs.MAX_COST)
_count = _typed(int, jobs.whole(1, 1000))
_limit = _typed(int, jobs.whole(1, 1_000_000))
_days = _typed(int, jobs.whole(1, 366))


EXIT_CODES = """\
exit status of run:
  0        the agent ran and finished, or the run was deliberately skipped
  1        the run failed, or a fault of the surroundings (ledger, disk) stopped it
  2        usage or configuration error: nothing ran
  75       another run of this job holds its lock, or no place came free (busy)
  124      the run passed its timeout and was stopped
  129/130/143  interrupted by SIGHUP / SIGINT / SIGTERM
"""


# The other commands' exit status: each says its own, not run's.
PLAIN_EXIT = """\
exit status:
  0        done
  1        a fault of the surroundings (ledger, disk) stopped it
  2        usage or configuration error
"""
STATUS_EXIT = """\
exit status:
  0        done (with --check: no listed job is failing, missed or not installed)
  1        with --check: a listed job is failing, missed a slot, or is not installed;
           or a fault of the surroundings (ledger, disk)
  2        usage or configuration error
"""
DOCTOR_EXIT = """\
exit status:
  0        no check failed (warnings allowed)
  1        a check failed
  2        usage error, or an env file that is missing or unreadable
"""
JSON_HELP = "print JSON instead of text"


def _add_schedule_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("schedule (New York time)")
    group.add_argument("--schedule", metavar="TIME", help="9:30am, 4pm, 16:00 ...")
    group.add_argument("--market-open", action="store_true", help="same as --schedule 9:30am")
    group.add_argument("--hourly", action="store_true", help="every 3600 s")
    group.add_argument("--daily", action="store_true", help="every 86400 s")
    group.add_argument(
        "--period",
        type=_period,
        metavar="SECONDS",
        help="every SECONDS, aligned to NYC midnight (or to --schedule) when it divides a day",
    )
    group.add_argument("--cron", metavar='"M H DOM MON DOW"', help="five fields, NYC time")
    group.add_argument(
        "--ignore-market-hours",
        action="store_true",
        help="run even when the NYSE regular session is closed",
    )


def _add_job_selection(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    parser.add_argument(
        "instructions",
        nargs="?",
        metavar="INSTRUCTIONS",
        help="what the agent is asked to do (an ad hoc job; else --job)",
    )
    if many:
        parser.add_argument(
            "--job", metavar="NAME", action="append", default=[], help="a job (repeatable)"
        )
        parser.add_argument("--all", action="store_true", help="every job of the jobs file")
    else:
        parser.add_argument("--job", metavar="NAME", help="a job of the jobs file")
    parser.add_argument("--name", metavar="NAME", help="name of an ad hoc job")
    parser.add_argument("--config", metavar="FILE", help="the jobs file")


def _command(commands: Any, name: str, help: str, epilog: str = PLAIN_EXIT) -> _Parser:
    parser: _Parser = commands.add_parser(
        name,
        help=help,
        description=help,
        epilog=epilog,
        formatter_class=_Formatter,
    )
    return parser


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; with `command`, only that command's part of it.

    A timer's `run` then builds none of the other commands' options (a skip is counted in
    milliseconds); a bare `tasty-oneshot`, `--help` or an unknown command gets all of them."""
    parser = _Parser(
        prog="tasty-oneshot",
        description="Run a TastyTrade agent once per timer firing, from systemd or cron.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"tasty-oneshot {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for name, add in COMMANDS.items():
        if command is None or name == command:
            add(commands)
    return parser


def _add_run(commands: Any) -> None:
    run = _command(commands, "run", "resolve exactly one run and exit", EXIT_CODES)
    _add_job_selection(run)
    run.add_argument("--env-file", metavar="FILE", help="dotenv file loaded first")
    _add_schedule_flags(run)
    run.add_argument("--scheduled", action="store_true", help="invoked by a timer: slot guard")
    run.add_argument(
        "--max-delay",
        type=_max_delay,
        metavar="SECONDS",
        help="how late after a fire time a --scheduled run may start (default 300)",
    )
    run.add_argument("--model", metavar="ID", help="pydantic-ai model, e.g. openai:gpt-5-mini")
    run.add_argument(
        "--timeout",
        type=_timeout,
        metavar="SECONDS",
        help="bounds the whole invocation, market check included (default 300)",
    )
    run.add_argument(
        "--trading",
        choices=("read-only", "dry-run", "live"),
        help="what the model may do to the account (default read-only)",
    )
    run.add_argument(
        "--max-requests", type=_max_requests, metavar="N", help="model requests (default 30)"
    )
    run.add_argument(
        "--max-tool-calls", type=_max_tool_calls, metavar="N", help="tool calls (default 60)"
    )
    run.add_argument(
        "--max-tokens", type=_max_tokens, metavar="N", help="tokens in and out (default 400000)"
    )
    run.add_argument("--max-cost", type=_max_cost, metavar="USD", help="dollars (default none)")
    run.add_argument(
        "--remember",
        choices=("last", "none"),
        help="give the model the last successful output (default none)",
    )
    run.add_argument("--notify", metavar="URL", action="append", help="Apprise URL (repeatable)")
    run.add_argument(
        "--notify-on",
        action="append",
        choices=("output", "failure", "skip"),
        help="when the run itself alerts, repeatable (default failure)",
    )
    run.add_argument("--ping", metavar="URL", help="healthchecks.io-style dead-man's switch")


def _add_generate_units(commands: Any) -> None:
    units = _command(
        commands, "generate-units", "systemd timers, crontab lines or Kubernetes CronJobs"
    )
    _add_job_selection(units, many=True)
    _add_schedule_flags(units)
    units.add_argument(
        "--target",
        choices=("systemd", "crontab", "kubernetes"),
        required=True,
        help="what to generate",
    )
    units.add_argument("--output-dir", metavar="DIR", help="write files here (else print)")
    scope = units.add_mutually_exclusive_group()
    scope.add_argument("--user", action="store_true", help="user units (the default)")
    scope.add_argument("--system", action="store_true", help="system units")
    units.add_argument("--env-file", metavar="PATH", help="credentials, by reference")
    units.add_argument(
        "--no-env-file",
        action="store_true",
        help="the credentials reach the timer another way (no --env-file needed)",
    )
    units.add_argument("--cron-tz", metavar="ZONE", help="the cron daemon's zone (default: host)")
    units.add_argument("--image", metavar="IMAGE", help="kubernetes: the tasty-oneshot image")
    units.add_argument(
        "--secret", metavar="NAME", help="kubernetes: credentials (default tasty-oneshot)"
    )
    units.add_argument("--namespace", metavar="NS", help="kubernetes: the objects' namespace")


def _add_next(commands: Any) -> None:
    upcoming = _command(commands, "next", "preview the next fire times")
    _add_job_selection(upcoming, many=True)
    _add_schedule_flags(upcoming)
    upcoming.add_argument(
        "--count", type=_count, metavar="N", default=10, help="fire times (default 10)"
    )
    upcoming.add_argument("--json", action="store_true", help=JSON_HELP)


def _add_history(commands: Any) -> None:
    history = _command(commands, "history", "read the run ledger")
    history.add_argument("--job", metavar="NAME", help="only this job's runs")
    history.add_argument("--status", choices=ledger_statuses(), help="only runs that ended so")
    history.add_argument("--limit", type=_limit, metavar="N", default=20, help="rows (default 20)")
    history.add_argument("--since", metavar="DATE", help="YYYY-MM-DD (NYC) or ISO-8601")
    history.add_argument(
        "--config", metavar="FILE", help="the jobs file (its `ledger` key; else the state dir's)"
    )
    history.add_argument("--json", action="store_true", help=JSON_HELP)


def _add_ledger(commands: Any) -> None:
    ledger = _command(commands, "ledger", "the run ledger itself")
    ledger_commands = ledger.add_subparsers(
        dest="ledger_command", parser_class=_Parser, required=True
    )
    importing = ledger_commands.add_parser(
        "import",
        help="copy a SQLite ledger's rows into the configured ledger (idempotent)",
        formatter_class=_Formatter,
    )
    importing.add_argument("file", metavar="FILE", help="a ledger.sqlite3")
    importing.add_argument("--config", metavar="FILE", help="the jobs file (its `ledger` key)")


def _add_status(commands: Any) -> None:
    status = _command(
        commands, "status", "every job at a glance: last run, missed slots", STATUS_EXIT
    )
    status.add_argument(
        "--job", metavar="NAME", action="append", default=[], help="a job (repeatable)"
    )
    status.add_argument("--config", metavar="FILE", help="the jobs file")
    status.add_argument(
        "--days",
        type=_days,
        metavar="N",
        default=7,
        help="look back N days for missed slots (default 7)",
    )
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    status.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a job is failing, missed a slot, or is not installed",
    )


def _add_doctor(commands: Any) -> None:
    doctor = _command(
        commands, "doctor", "check what a timer's run of each job will meet", DOCTOR_EXIT
    )
    doctor.add_argument(
        "--job", metavar="NAME", action="append", default=[], help="a job (repeatable)"
    )
    doctor.add_argument("--config", metavar="FILE", help="the jobs file")
    doctor.add_argument("--env-file", metavar="FILE", help="the env file the units pass")
    doctor.add_argument("--json", action="store_true", help=JSON_HELP)


# The commands, in the order the help lists them.
COMMANDS: dict[str, Callable[[Any], None]] = {
    "run": _add_run,
    "generate-units": _add_generate_units,
    "next": _add_next,
    "history": _add_history,
    "ledger": _add_ledger,
    "status": _add_status,
    "doctor": _add_doctor,
}


def ledger_statuses() -> tuple[str, ...]:
    return ("ok", "failed", "skipped", "locked", "timeout", "interrupted", "running", "abandoned")


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The job keys given on the command line (flags left at their defaults are not given)."""
    given = {}
    for key in JOB_KEYS:
        value = getattr(args, key, None)
        if value is not None and value is not False:
            given[key] = value
    return check_keys(given, JOB_KEYS, "")


class _OneLineFormatter(logging.Formatter):
    """A log line stays one line, whatever it quotes: a job name, a key or a path from the
    user may hold a newline (`"abc\\n":` in YAML, `--config $'a\\nb'`) or a NUL. Under
    journald each line starts with its syslog priority (`<3>` for an error), so that
    `journalctl -p err` finds failures."""

    def __init__(self, *args: Any, journald: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.journald = journald

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = terminal.one_line(super().formatMessage(record))
        if self.journald:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


# Python's log levels as syslog priorities.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _under_journald() -> bool:
    """Whether stderr is the journal's stream: $JOURNAL_STREAM names its device and inode."""
    import os

    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        info = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = _OneLineFormatter(
        LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S", journald=_under_journald()
    )
    # Log times are New York times, like every time in a schedule.
    formatter.converter = _nyc_time
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("tasty_oneshot").setLevel(logging.INFO)
    # apprise logs each URL it rejects or fails to reach, credentials included.
    logging.getLogger("apprise").setLevel(logging.CRITICAL)


def _nyc_time(seconds: float | None) -> time.struct_time:
    """A log record's time as New York wall-clock time (None: now, as time.localtime has it)."""
    moment = datetime.now(NYC) if seconds is None else datetime.fromtimestamp(seconds, NYC)
    return moment.timetuple()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    from tasty_oneshot import stdio

    stdio.guard()  # before any file is opened: a closed stdout must not become the ledger's
    stdio.exit_now(dispatch(argv))


def dispatch(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
        args = parser.parse_args(words)
        if args.command is None:  # a bare `tasty-oneshot`: say what it can do
            parser.print_help()
            return EXIT_USAGE
        if args.command == "run":
            from tasty_oneshot.invocation import RunRequest
            from tasty_oneshot.runner import run

            return run(
                RunRequest(
                    instructions=args.instructions,
                    job=args.job,
                    name=args.name,
                    config=args.config,
                    env_file=args.env_file,
                    scheduled=args.scheduled,
                    options=_job_options(args),
                    command=(sys.executable, *sys.orig_argv[1:]) if argv is None else (),
                )
            )
        if args.command == "generate-units":
            from tasty_oneshot.generate import GenerateRequest, generate_units

            options = _job_options(args)
            return generate_units(
                GenerateRequest(
                    instructions=args.instructions,
                    jobs=args.job,
                    all_jobs=args.all,
                    name=args.name,
                    config=args.config,
                    options=options,
                    target=args.target,
                    output_dir=args.output_dir,
                    system=args.system,
                    env_file=args.env_file,
                    cron_tz=args.cron_tz,
                    image=args.image,
                    secret=args.secret,
                    namespace=args.namespace,
                    no_env_file=args.no_env_file,
                )
            )
        if args.command == "next":
            return _next(args)
        if args.command == "history":
            from tasty_oneshot.history import history
            from tasty_oneshot.runner import configured_ledger

            return history(
                job=args.job,
                limit=args.limit,
                since=args.since,
                status=args.status,
                as_json=args.json,
                ledger=configured_ledger(args.config),
            )
        if args.command == "status":
            from tasty_oneshot.runner import configured_ledger, file_jobs
            from tasty_oneshot.status import status

            selected = file_jobs(args.config, args.job, scheduled_only=False)
            return status(
                selected, args.days, args.json, args.check, configured_ledger(args.config)
            )
        if args.command == "doctor":
            from tasty_oneshot.doctor import doctor

            return doctor(args.job, args.config, args.env_file, args.json)
        if args.command == "ledger":
            from tasty_oneshot.ledger_import import import_ledger
            from tasty_oneshot.runner import configured_ledger

            return import_ledger(Path(args.file), configured_ledger(args.config))
    except UsageError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except StateFault as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:  # before a run started: nothing to stop or record
        return EXIT_SIGINT
    except Exception as exc:
        from tasty_oneshot.runner import Interrupted

        if isinstance(exc, Interrupted):  # SIGTERM or SIGHUP while the ledger was opened
            return exc.exit_code
        # No traceback ever reaches the user: one line, and the exit code of a failure.
        log.error("internal error: %s (please report it)", one_line(exc))
        return EXIT_FAILED
    raise AssertionError(args.command)


def _next(args: argparse.Namespace) -> int:
    """`next`: one ad hoc schedule, the jobs named, or every scheduled job of the file."""
    from tasty_oneshot.invocation import RunRequest
    from tasty_oneshot.next_fires import show_next
    from tasty_oneshot.runner import file_jobs, load_job

    options = _job_options(args)
    flags_alone = args.instructions is None and not args.job and not args.all
    if args.instructions is not None or (flags_alone and options):
        if args.job or args.all:
            raise UsageError("give INSTRUCTIONS or schedule flags, or --job/--all, not both")
        request = RunRequest(
            instructions=args.instructions or "(schedule preview)",
            name=args.name or (None if args.instructions else "preview"),
            config=args.config,
            options=options,
        )
        job, _ = load_job(request)
        return show_next([job], args.count, args.json)
    if options and not args.job:
        raise UsageError("schedule flags with --all: name the job (--job NAME) they apply to")
    selected = file_jobs(args.config, args.job, scheduled_only=True, options=options)
    return show_next(selected, args.count, args.json)
