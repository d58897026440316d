"""`tasty-oneshot generate-units`: systemd units, crontab lines or Kubernetes CronJobs that call
`run --scheduled`.

Everything is checked and rendered before anything is written; files are written to temporary
names and renamed only when all of them could be written, so nothing is left half-done.
"""

import getpass
import logging
import os
import shutil
import stat
import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasty_oneshot import paths
from tasty_oneshot.env_file import env_values, load_env_file, read_env_text
from tasty_oneshot.errors import EXIT_OK, UsageError
from tasty_oneshot.jobs import MODEL_ENV, SCHEDULE_KEYS, Job, shown
from tasty_oneshot.jobs_file import VARIABLE, load_jobs_file, notify_sources, resolve_job
from tasty_oneshot.mcp_server import command_and_args
from tasty_oneshot.notify import check_urls
from tasty_oneshot.schedule import NYC, cron_fields, now_nyc
from tasty_oneshot.units import crontab, kubernetes, systemd

log = logging.getLogger("tasty_oneshot")

OPEN_SECOND, CLOSE_SECOND = 9 * 3600 + 30 * 60, 16 * 3600  # NYSE regular hours, NYC
# What cron and systemd both give a run without an env file: a `${VAR}` may use these.
TIMER_GIVES = ("HOME", "LOGNAME", "SHELL", "PATH")
PRIVATE_TMP = ("/tmp", "/var/tmp")  # PrivateTmp=yes gives the service its own, empty ones


class GenerateRequest(NamedTuple):
    instructions: str | None
    jobs: list[str]
    all_jobs: bool
    name: str | None
    config: str | None
    options: dict[str, Any]  # schedule keys and ignore_market_hours given on the command line
    target: str  # systemd | crontab | kubernetes
    output_dir: str | None
    system: bool
    env_file: str | None
    cron_tz: str | None
    image: str | None = None  # kubernetes: the image built from the Containerfile
    secret: str | None = None  # kubernetes: the Secret holding the credentials
    namespace: str | None = None  # kubernetes
    no_env_file: bool = False  # credentials reach the timer another way


def generate_units(request: GenerateRequest) -> int:
    """Errors first (nothing written, one line), then warnings, then the files."""
    now = now_nyc()
    check_target_options(request)
    jobs, unscheduled = select_jobs(request)
    refuse_control_characters(jobs, request)
    env_file = _env_file(request.env_file)
    for job in jobs:
        refuse_unhonourable(job, request.target, now)
    files = render(jobs, request, env_file, now)
    refuse_missing_credentials(jobs, request)
    refuse_incomplete_env_file(jobs, request, env_file)
    output_dir = Path(request.output_dir) if request.output_dir else None
    if output_dir is not None:
        prepare_output_dir(output_dir, files)
    for where in unscheduled:
        log.warning("%s: no schedule, no timer generated", where)
    for job in jobs:
        warn_about(job, now)
    if request.target == "kubernetes":
        warn_about_kubernetes(jobs)
    if request.target == "crontab" and request.cron_tz is None:
        warn_about_shell_zone(now)
    if request.target == "systemd":
        warn_about_private_tmp(jobs, request, env_file)
    _warn_if_others_can_read(env_file)
    doctor = doctor_command(jobs, request, env_file)
    if output_dir is None:
        sys.stdout.write(
            "".join(files.values())
            if request.target in ("crontab", "kubernetes")
            else "\n".join(f"# {name}\n{text}" for name, text in files.items())
        )
        if request.target != "kubernetes":  # stdout is the units or lines: say it aside
            log.info("once installed, check what their runs will meet: %s", doctor)
        return EXIT_OK
    write_files(output_dir, files)
    for name in files:
        log.info("wrote %s", output_dir / name)
    if request.target == "systemd":
        sys.stdout.write(enable_commands(jobs, output_dir, request.system))
        sys.stdout.write(f"# Then check what their runs will meet:\n{doctor}\n")
    return EXIT_OK


def doctor_command(jobs: list[Job], request: GenerateRequest, env_file: str | None) -> str:
    """`tasty-oneshot doctor` for these jobs, with the jobs file and env file the units use."""
    import shlex

    words = [*tasty_oneshot_command(), "doctor"]
    config = _jobs_file_path(request)
    if config is not None:
        words += ["--config", str(config.absolute())]
    if env_file is not None:
        words += ["--env-file", env_file]
    for job in jobs:
        words += ["--job", job.name]
    return shlex.join(words)


def refuse_control_characters(jobs: list[Job], request: GenerateRequest) -> None:
    """Refuse a path with a control character anywhere it would go into a unit, a crontab
    line or the printed commands: a newline there ends the line and starts a directive of
    its own (`EnvironmentFile=/a` then `ExecStartPre=...`)."""
    for what, path in _written_paths(jobs, request):
        bad = next((c for c in path if unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise UsageError(
                # Escaped, and long enough to show where (job names and keys get 80).
                f"{what} '{repr(path[:300])[1:-1]}': a control character ({shown(bad)}) in a "
                "path would break the unit or crontab line it goes into: rename or move it to "
                "a path without one"
            )


def _written_paths(jobs: list[Job], request: GenerateRequest) -> list[tuple[str, str]]:
    """(what names it, path) for each path the target writes out, absolute as written."""
    found = [("--output-dir", request.output_dir)]
    if request.target == "kubernetes":  # a manifest holds none of this host's paths
        return [(what, path) for what, path in found if path is not None]
    if request.env_file is not None:  # as given, then made absolute as the unit holds it
        found.append(("--env-file", request.env_file))
        found.append(("--env-file", str(Path(request.env_file).expanduser().absolute())))
    config = _jobs_file_path(request)
    if config is not None:
        found.append((_config_named_by(request), str(config)))
    for job in jobs:  # the service must reach the MCP server's command too
        if job.mcp is not None and job.mcp.command is not None:
            found.append((f"{_where(job)}: key 'mcp.command'", job.mcp.command))
    found += [("the tasty-oneshot command", word) for word in tasty_oneshot_command()]
    return [(what, path) for what, path in found if path is not None]


def _adhoc(request: GenerateRequest) -> bool:
    """An ad hoc job (INSTRUCTIONS, no --job or --all): it needs no jobs file."""
    return request.instructions is not None and not request.jobs and not request.all_jobs


def _jobs_file_path(request: GenerateRequest) -> Path | None:
    """The jobs file the request reads (see paths.config_path), found the same way each time."""
    return paths.config_path(request.config, adhoc=_adhoc(request))


def _config_named_by(request: GenerateRequest) -> str:
    """Where the jobs file's path came from, as an error names it."""
    if request.config:
        return "--config"
    if os.environ.get(paths.CONFIG_ENV):
        return f"${paths.CONFIG_ENV}"
    return "the jobs file"


def enable_commands(jobs: list[Job], output_dir: Path, system: bool) -> str:
    """The commands that make systemd use the units just written, to copy and run."""
    import shlex

    scope = "" if system else " --user"
    timers = " ".join(systemd.unit_names(job)[0] for job in jobs)
    lines = ["# To enable them:"]
    expected = Path("/etc/systemd/system") if system else Path.home() / ".config/systemd/user"
    if output_dir.absolute() != expected:
        lines.append(f"cp {shlex.quote(str(output_dir))}/tasty-oneshot-*.* {expected}/")
    lines += [
        f"systemctl{scope} daemon-reload",
        f"systemctl{scope} enable --now {timers}",
    ]
    if not system:  # user timers stop at logout without it
        lines.append('loginctl enable-linger "$USER"')
    lines.append(f"systemctl{scope} list-timers 'tasty-oneshot-*'")
    return "\n".join(lines) + "\n"


def refuse_missing_credentials(jobs: list[Job], request: GenerateRequest) -> None:
    """A timer's run sees neither this shell's environment nor ./.env (its working directory
    is $HOME or /): refuse to write units whose runs would all fail for want of a credential,
    unless --env-file carries them or --no-env-file says they arrive another way."""
    if request.env_file or request.no_env_file or request.target == "kubernetes":
        return
    from tasty_oneshot.agent import needed_variables

    for job in jobs:
        needed = [" or ".join(group) for group in needed_variables(job)]
        if needed:
            raise UsageError(
                f"{_where(job)}: its runs need {', '.join(needed)}, which a timer does not "
                "get from this shell or ./.env: give --env-file FILE (chmod 600), or "
                "--no-env-file if they reach the timer another way"
            )


def refuse_incomplete_env_file(
    jobs: list[Job], request: GenerateRequest, env_file: str | None
) -> None:
    """Read --env-file as the timer will: for systemd, refuse lines its EnvironmentFile= reads
    otherwise than `run --env-file` does; then refuse a file that leaves out a variable the
    runs need (a credential set but empty is missing, as for `run`)."""
    if env_file is None:
        return
    text = read_env_text(Path(env_file), required=True) or ""
    values = env_values(text)
    if request.target == "systemd":
        problems = systemd_reads_otherwise(text, values)
        if problems:
            raise UsageError(
                f"--env-file {env_file}: systemd's EnvironmentFile= reads "
                f"{'these lines' if len(problems) > 1 else 'this line'} otherwise than "
                f"`run --env-file` does: {'; '.join(problems)}"
            )
    defined = {name: value for name, value in values.items() if value is not None}
    missing = missing_variables(jobs, request, defined)
    if missing:
        raise UsageError(
            f"--env-file {env_file}: the timer's runs need {', '.join(missing)}, not set there "
            "(a timer gets neither this shell's variables nor ./.env): add "
            f"{'them' if len(missing) > 1 else 'it'} to the file"
        )


def systemd_reads_otherwise(text: str, ours: dict[str, str | None]) -> list[str]:
    """Each line of the env file that systemd's EnvironmentFile= reads otherwise than our
    loader (python-dotenv): what is wrong and the fix, without the value (a secret)."""
    read = systemd.read_environment_file(text)
    last = {a.name: a for a in read.assignments}  # the last assignment of a name wins
    theirs = {name: a.value for name, a in last.items() if systemd.ENV_NAME.match(name)}
    problems, differ, named = [], [], set()
    for name, assignment in sorted(last.items(), key=lambda item: item[1].line):
        where = f"line {assignment.line}"
        exported = name.split(None, 1)
        if exported[0] == "export" and len(exported) == 2:
            named.add(exported[1])
            problems.append(
                f"{where}: systemd ignores `export {shown(exported[1])}=`: drop `export `"
            )
        elif name not in theirs:
            problems.append(
                f"{where}: systemd ignores the name '{shown(name)}': use A-Z, 0-9 and _"
            )
        elif ours.get(name) != theirs[name]:
            named.add(name)
            differ.append(f"{where} ({name})")
    differ += [
        f"'{shown(name)}'"
        for name, value in ours.items()
        if value is not None and name not in theirs and name not in named
    ]
    if differ:
        problems.append(
            f"{', '.join(differ)}: quotes, backslashes, a # comment or ${{...}} read otherwise: "
            "write each as NAME='value' on one line, with no ' or \\ inside and nothing after it"
        )
    for line in read.joined_comments:
        problems.append(
            f"line {line}: a comment ending in a backslash hides the next line from systemd "
            "(before version 254): remove the backslash"
        )
    return problems


def missing_variables(
    jobs: list[Job], request: GenerateRequest, values: dict[str, str]
) -> list[str]:
    """The variables the jobs' timer runs need that `values` (the env file's) leave out: the
    model provider's key, TastyTrade's credentials, MODEL_IDENTIFIER when the model comes
    from it, and every `${VAR}` of the jobs file (each run reads all of it)."""
    from tasty_oneshot.agent import needed_variables

    missing: list[str] = []
    for job in jobs:
        needed: list[tuple[str, ...]] = []
        if job.model and job.model_from == f"${MODEL_ENV}":
            needed.append((MODEL_ENV,))
        with _variable("OPENAI_BASE_URL", values.get("OPENAI_BASE_URL")):
            needed += needed_variables(job)  # a local OpenAI-compatible server needs no key
        for group in needed:
            if not any(values.get(name, "").strip() for name in group):
                missing.append(" or ".join(group))
    config = _jobs_file_path(request)
    if config is not None:
        for name in jobs_file_variables(config):
            if name not in values and name not in TIMER_GIVES:
                missing.append(f"{name} (${{{name}}} in {config})")
    return list(dict.fromkeys(missing))


@contextmanager
def _variable(name: str, value: str | None) -> Iterator[None]:
    """The environment variable `name` set to `value` (None: unset) for a while."""
    before = os.environ.pop(name, None)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if before is not None:
            os.environ[name] = before


def jobs_file_variables(config: Path) -> list[str]:
    """The names of every `${VAR}` in the jobs file's values (`$${` is a literal)."""
    import yaml

    try:
        document = yaml.load(
            config.read_text(encoding="utf-8"),
            Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
        )
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        raise UsageError(f"{config}: the jobs file changed while it was read") from None
    names: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            names.extend(m[2] for m in VARIABLE.finditer(value) if not m[1])
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(document)
    return list(dict.fromkeys(names))


def warn_about_shell_zone(now: datetime) -> None:
    """cron runs in the system's zone, whatever this shell's $TZ says: say which zone the
    lines assume when the two differ."""
    shell, system = crontab.shell_zone(), crontab.cron_daemon_zone()
    if shell is not None and not crontab.same_clock(shell, system, now):
        log.warning(
            "$TZ is %s in this shell, but cron runs in the system's zone (/etc/localtime): "
            "these lines are for a cron daemon in %s; if yours runs in another zone, give "
            "--cron-tz ZONE",
            shell[:80],
            system,
        )


def warn_about_private_tmp(jobs: list[Job], request: GenerateRequest, env_file: str | None) -> None:
    """The service gets a private /tmp and /var/tmp (PrivateTmp=yes): what it must reach
    there, it cannot. The env file is read by systemd itself, outside that sandbox, but
    does not last there."""
    found: list[tuple[str, str]] = []
    config = _jobs_file_path(request)
    if config is not None:
        found.append((_config_named_by(request), str(config.absolute())))
    for job in jobs:
        if job.mcp is not None and job.mcp.url:
            continue
        try:
            command, args = command_and_args(job.mcp)
        except UsageError:
            continue
        found.append((f"{_where(job)}: the MCP server", command))
        found += [(f"{_where(job)}: the MCP server's argument", a) for a in args if _a_file(a)]
    found += [("the tasty-oneshot command", word) for word in tasty_oneshot_command()[:1]]
    for what, path in dict.fromkeys(found):
        if _in_private_tmp(path):
            log.warning(
                "%s %s is under /tmp or /var/tmp, which the service's private /tmp "
                "(PrivateTmp=yes) hides from it: move it out of /tmp and /var/tmp and "
                "generate the units again",
                what,
                path,
            )
    if env_file is not None and _in_private_tmp(env_file):
        log.warning(
            "--env-file %s is under /tmp or /var/tmp: systemd reads it before the sandbox, "
            "but /tmp is emptied at boot and old files in /var/tmp are removed "
            "(systemd-tmpfiles), and without it the service does not start: move it out of "
            "/tmp and /var/tmp and generate the units again",
            env_file,
        )


def _a_file(arg: str) -> bool:
    return arg.startswith("/") and Path(arg).is_file()


def _in_private_tmp(path: str) -> bool:
    """Whether the path, as written or with its links resolved, is under /tmp or /var/tmp."""
    for seen in (os.path.abspath(path), os.path.realpath(path)):
        if any(seen == tmp or seen.startswith(tmp + "/") for tmp in PRIVATE_TMP):
            return True
    return False


def render(
    jobs: list[Job], request: GenerateRequest, env_file: str | None, now: datetime
) -> dict[str, str]:
    """Every file's text, by name: a timer and a service per job, one crontab, or one
    Kubernetes YAML stream."""
    if request.target == "kubernetes":
        return {"tasty-oneshot.k8s.yaml": kubernetes_text(jobs, request, now)}
    if request.target == "crontab":
        zone = cron_zone(request.cron_tz)
        return {"tasty-oneshot.crontab": crontab_text(jobs, request, zone, env_file, now)}
    files = {}
    user = (os.environ.get("SUDO_USER") or getpass.getuser()) if request.system else None
    for job in jobs:
        timer, service = systemd.unit_names(job)
        files[timer] = systemd.timer_unit(job, now)
        files[service] = systemd.service_unit(
            job, exec_start(job, request, env_file), env_file, user
        )
    return files


def select_jobs(request: GenerateRequest) -> tuple[list[Job], list[str]]:
    """The jobs to generate for (--job, repeated; --all; or ad hoc INSTRUCTIONS), and the
    jobs of --all that have no schedule (to warn about, once nothing is refused)."""
    chosen = sum([bool(request.jobs), request.all_jobs, request.instructions is not None])
    if chosen != 1:
        raise UsageError("give exactly one of INSTRUCTIONS, --job NAME (repeatable) or --all")
    load_env_file(Path(".env"), required=False)
    if _adhoc(request):
        config = paths.adhoc_config_path(request.config)  # the warning, once
    else:
        config = paths.config_path(request.config)
    jobs_file = load_jobs_file(config) if config else None
    names: list[str | None]  # None: the ad hoc job of INSTRUCTIONS
    if request.all_jobs:
        if jobs_file is None:
            raise UsageError("--all: no jobs file found (use --config FILE)")
        names = [*sorted(jobs_file.jobs)]
    else:
        names = [*request.jobs] or [None]
    jobs: list[Job] = []
    unscheduled: list[str] = []  # warned about once nothing is refused any more
    for name in names:
        job = resolve_job(
            jobs_file,
            job_name=name,
            instructions=request.instructions,
            name=request.name,
            options=request.options,
        )
        if job.schedule.is_empty:
            where = f"{job.source}: job '{job.name}'" if job.source is not None else job.name
            if request.all_jobs:  # a job kept for runs by hand: nothing to schedule
                unscheduled.append(where)
                continue
            raise UsageError(f"{where}: no schedule to generate a timer for")
        jobs.append(job)
    if not jobs:
        raise UsageError(f"{config}: --all: no job of the jobs file has a schedule")
    check_urls(notify_sources(jobs_file, request.options), None)
    if any(job.model not in (None, "test") for job in jobs):
        from tasty_oneshot.agent import check_model_name

        for job in jobs:
            check_model_name(job)
    return jobs, unscheduled


def run_words(job: Job, request: GenerateRequest, env_file: str | None) -> list[str]:
    """The `run ... --scheduled` command a timer or crontab line invokes, by absolute path."""
    words = [*tasty_oneshot_command(), "run"]
    if job.source is None:  # ad hoc: the instructions, their name and their schedule travel
        words += [job.instructions, "--name", job.name, *job.schedule.flags()]
        if job.ignore_market_hours:
            words.append("--ignore-market-hours")
    else:
        words += ["--job", job.name]
        if any(k in request.options for k in SCHEDULE_KEYS):
            words += job.schedule.flags()
        if request.options.get("ignore_market_hours"):
            words.append("--ignore-market-hours")
    config = _jobs_file_path(request)
    if config is not None:
        words += ["--config", str(config.absolute())]
    if env_file:
        words += ["--env-file", env_file]
    return [*words, "--scheduled"]


def exec_start(job: Job, request: GenerateRequest, env_file: str | None) -> str:
    # systemd reads the environment from EnvironmentFile=; the run needs no --env-file.
    return " ".join(_systemd_quote(word) for word in run_words(job, request, None))


def _systemd_quote(word: str) -> str:
    """Quote one ExecStart= word: systemd expands % specifiers and $ variables itself."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and all(c.isalnum() or c in "-_./:=@+," for c in word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    # A raw newline would end the ExecStart= line: control characters as C escapes.
    escaped = "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c for c in escaped)
    return f'"{escaped}"'


def crontab_text(
    jobs: list[Job], request: GenerateRequest, zone: ZoneInfo, env_file: str | None, now: datetime
) -> str:
    out = [
        f"# tasty-oneshot: crontab lines for a cron daemon running in {zone.key}.",
        "# Each New York fire time has a line for every offset between the zones; the slot",
        "# guard of `run --scheduled` runs each slot once and skips the surplus firings.",
    ]
    for job in jobs:
        try:
            command = crontab.crontab_command(run_words(job, request, env_file))
            lines = crontab.cron_lines(job, zone, command, now)
        except (crontab.CannotExpress, ValueError) as exc:
            raise UsageError(f"{_where(job)}: cannot be a crontab line: {exc}") from None
        out.append(f"# {job.name}: {job.schedule.describe()}")
        if job.schedule.is_once:
            fire = next(job.schedule.fire_times(now))
            out.append(
                f"# one-time: remove after {fire:%Y-%m-%d %H:%M} NYC (cron repeats it "
                "yearly; the slot guard would run it again then)"
            )
        out += lines
    return "\n".join(out) + "\n"


def check_target_options(request: GenerateRequest) -> None:
    """Options of one target only, and what --target kubernetes needs, before anything else."""
    given = {"--image": request.image, "--secret": request.secret, "--namespace": request.namespace}
    if request.target != "kubernetes":
        for flag, value in given.items():
            if value is not None:
                raise UsageError(f"{flag}: only with --target kubernetes")
        return
    if not request.image:
        raise UsageError("--target kubernetes needs --image IMAGE (built from the Containerfile)")
    if any(c.isspace() or not c.isprintable() for c in request.image):
        raise UsageError(f"--image {request.image!r}: not an image reference")
    if request.secret is not None and not kubernetes.DNS_SUBDOMAIN.match(request.secret):
        raise UsageError(f"--secret {request.secret[:80]!r}: not a Kubernetes object name")
    if request.namespace is not None and not kubernetes.DNS_LABEL.match(request.namespace):
        raise UsageError(f"--namespace {request.namespace[:80]!r}: not a Kubernetes namespace")
    if request.instructions is not None:
        # The pods read their job from the ConfigMap: an ad hoc job is in no jobs file.
        raise UsageError(
            "--target kubernetes: an ad hoc job (INSTRUCTIONS) cannot be a CronJob; "
            "put it in the jobs file and use --job NAME"
        )
    if request.options:
        raise UsageError(
            "--target kubernetes: schedule flags and --ignore-market-hours are not passed on; "
            "each pod runs its job as the jobs file says: set them there"
        )
    if request.env_file is not None:
        raise UsageError(
            "--env-file: not with --target kubernetes; credentials come from the Secret "
            "(kubectl create secret generic NAME --from-env-file=FILE)"
        )
    if request.cron_tz is not None:
        raise UsageError("--cron-tz: only with --target crontab (CronJobs keep New York time)")


def kubernetes_text(jobs: list[Job], request: GenerateRequest, now: datetime) -> str:
    """The ConfigMap with the jobs file as it is on disk, and each job's CronJobs."""
    schedules = {}
    for job in jobs:
        try:
            schedules[job.name] = kubernetes.schedules(job, now)
        except ValueError as exc:
            raise UsageError(f"{_where(job)}: cannot be a Kubernetes CronJob: {exc}") from None
    source = jobs[0].source  # every job is of the one jobs file: ad hoc jobs are refused
    if source is None:
        raise AssertionError("a Kubernetes job without a jobs file")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source}: cannot read the jobs file: {exc}") from None
    secret = request.secret or kubernetes.DEFAULT_SECRET
    refuse_literal_credentials(source, text, secret)
    try:
        documents = kubernetes.manifests(
            jobs, schedules, text, request.image or "", secret, request.namespace
        )
    except kubernetes.NameClash as exc:
        raise UsageError(f"{source}: {exc}") from None
    return kubernetes.stream(documents)


def refuse_literal_credentials(source: Path, text: str, secret: str) -> None:
    """The ConfigMap carries the jobs file as it is: refuse one that holds a credential as
    text (a password or token in a ledger, notify, ping or mcp.url URL) instead of `${VAR}`."""
    import yaml

    try:
        document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, RecursionError, MemoryError, ValueError, OverflowError):
        raise UsageError(f"{source}: the jobs file changed while it was read") from None
    found = kubernetes.literal_credential(document)
    if found is not None:
        where, problem = found
        raise UsageError(
            f"{source}: {where}: {problem}, which the ConfigMap would show to anyone who can "
            f"read it: write it as ${{VAR}} (the whole URL, or each secret part) and put VAR "
            f"in the Secret {secret} (envFrom)"
        )


def warn_about_kubernetes(jobs: list[Job]) -> None:
    """What a pod that lives for one run changes: its ledger, its deadline, its MCP server."""
    source = jobs[0].source
    ledger = load_jobs_file(source).defaults.get("ledger") if source else None
    if not kubernetes.postgres_ledger(ledger):
        log.warning(
            "%s: no PostgreSQL ledger (neither its key 'ledger' nor $%s names one): each "
            "pod's SQLite ledger is thrown away with the pod, so the slot guard cannot see "
            "earlier runs, the job lock does not reach other pods, `remember: last` has nothing "
            "to remember and history/status show nothing",
            source,
            kubernetes.LEDGER_ENV,
        )
    for job in jobs:
        if job.max_delay < 10:
            log.warning(
                "%s: max_delay %ss is under 10 s: the CronJob controller may start the pod too "
                "late and skip the run (startingDeadlineSeconds)",
                _where(job),
                job.max_delay,
            )
        if job.mcp is not None and job.mcp.command not in (None, "tasty-agent"):
            log.warning(
                "%s: the MCP server %s runs inside the pod: the image must hold it (the "
                "Containerfile installs tasty-agent only)",
                _where(job),
                job.mcp.command,
            )


def refuse_unhonourable(job: Job, target: str, now: datetime) -> None:
    """Refuse, with the reason, a schedule the target cannot keep."""
    schedule = job.schedule
    if target == "kubernetes":
        try:
            kubernetes.check_schedule(job)
        except crontab.CannotExpress as exc:
            raise UsageError(f"{_where(job)}: cannot be a Kubernetes CronJob: {exc}") from None
    if schedule.is_monotonic and target == "crontab":
        try:
            crontab.check_expressible(schedule)
        except crontab.CannotExpress as exc:
            raise UsageError(f"{_where(job)}: cannot be a crontab line: {exc}") from None
    if target == "systemd" and schedule.cron is not None:
        try:
            systemd.on_calendar(schedule, now)
        except ValueError as exc:
            raise UsageError(f"{_where(job)}: cannot be a systemd calendar: {exc}") from None


def warn_about(job: Job, now: datetime) -> None:
    """Warn before writing: schedules that never run, DST hours, short or monotonic periods."""
    schedule = job.schedule
    if schedule.is_monotonic:
        message = (
            f"{_where(job)}: period {schedule.period}s does not divide 24 hours, so it "
            "cannot be pinned to the New York wall clock"
        )
        if schedule.at is not None:
            message += f", and its start time {schedule.flags()[1]} is not kept"
        log.warning(
            "%s; the timer runs every %ss from when it starts (monotonic), with no slot check",
            message,
            schedule.period,
        )
        return
    if schedule.period is not None and schedule.period < 60:
        log.warning(
            "%s: a period of %ss is under a minute: a run rarely finishes that fast, "
            "and each firing while one runs exits 75",
            _where(job),
            schedule.period,
        )
    seconds, weekdays = _times_of_day(job, now)
    in_hours = any(OPEN_SECOND <= t < CLOSE_SECOND for t in seconds) and weekdays
    if not job.ignore_market_hours and not in_hours:
        log.warning(
            "%s: could never run: every fire time (%s) is outside NYSE regular hours "
            "(9:30am-4pm NYC, Monday-Friday) and the market check is on",
            _where(job),
            schedule.describe(),
        )
    if job.ignore_market_hours and any(3600 <= t < 3 * 3600 for t in seconds):
        # With the market check on, those fire times are skips anyway: no warning then.
        log.warning(
            "%s: fire times between 1am and 3am NYC are skipped on the spring-forward day and "
            "fire once (the first) on the fall-back day",
            _where(job),
        )


def _times_of_day(job: Job, now: datetime) -> tuple[list[int], bool]:
    """A wall-clock schedule's fire times as seconds after NYC midnight, and whether any of
    them can fall on a weekday. Read off the schedule, not by listing a year of fire times."""
    schedule = job.schedule
    if schedule.is_once:
        fire = next(schedule.fire_times(now)).astimezone(NYC)
        return [fire.hour * 3600 + fire.minute * 60], fire.weekday() < 5
    if schedule.cron is None:
        return schedule.offsets(), True
    minutes, hours, days, _months, weekdays = cron_fields(schedule.cron)
    # cron: a day-of-month restriction reaches weekdays; a day-of-week one must name one.
    weekday = weekdays is None or days is not None or any(1 <= d <= 5 for d in weekdays)
    return [h * 3600 + m * 60 for h in hours for m in minutes], weekday


def _where(job: Job) -> str:
    return f"{job.source}: job '{job.name}'" if job.source else f"job '{job.name}'"


def cron_zone(name: str | None) -> ZoneInfo:
    """--cron-tz, else the zone the cron daemon runs in (the system's)."""
    name = name or crontab.cron_daemon_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--cron-tz {name!r}: not a known time zone") from None


def tasty_oneshot_command() -> list[str]:
    """This installation's `tasty-oneshot`, by absolute path: the script beside this Python,
    else the one on PATH, else this Python running the package."""
    beside = Path(sys.executable).parent / "tasty-oneshot"
    if beside.is_file():
        return [str(beside.absolute())]
    found = shutil.which("tasty-oneshot")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "tasty_oneshot"]


def _env_file(path: str | None) -> str | None:
    """The env file's absolute path."""
    if path is None:
        return None
    file = Path(path).expanduser().absolute()
    if not file.is_file():
        raise UsageError(f"--env-file {file}: not found")
    return str(file)


def _warn_if_others_can_read(env_file: str | None) -> None:
    """The env file holds secrets: say so when other users can read it."""
    if env_file and Path(env_file).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s can be read by other users; it holds secrets: chmod 600 %s", env_file, env_file
        )


def prepare_output_dir(directory: Path, files: dict[str, str]) -> None:
    """Make sure every file can be written there, before anything is."""
    for name in files:  # a rename onto a directory would fail halfway through
        if (directory / name).is_dir():
            raise UsageError(f"--output-dir {directory}: {name} is a directory, not a file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output-dir {directory}: cannot create it: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--output-dir {directory}: not writable")


def write_files(directory: Path, files: dict[str, str]) -> None:
    """Write every file or none: temporary names first, then renames."""
    prepare_output_dir(directory, files)
    written = []
    try:
        for name, text in files.items():
            tmp = directory / f".{name}.{os.getpid()}.tmp"
            written.append((tmp, directory / name))
            tmp.write_text(text)
    except OSError as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise UsageError(f"--output-dir {directory}: cannot write: {exc.strerror}") from None
    for tmp, final in written:
        tmp.replace(final)
