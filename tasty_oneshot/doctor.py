"""`tasty-oneshot doctor`: what a timer's run of each job will meet, checked without running it.

A timer's run does not get this shell's environment: it gets the few variables systemd and
cron give every job (HOME, PATH, ...), its env file (`--env-file`, as the units pass it) and
`$HOME/.env` (its working directory is $HOME). Doctor switches to that environment before it
loads anything, so every check sees what the timer's run will see; a variable a job needs
that is set only in this shell (or ./.env) is named as such.

It never runs the agent, takes no lock, uses no slot and writes no ledger row: the ledger is
opened read-only, the MCP server is started, asked for its tools and stopped, and its stderr
is kept in memory (not in the job's MCP log).
"""

import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tasty_oneshot import paths, secrets, terminal
from tasty_oneshot.env_file import load_env_file
from tasty_oneshot.errors import EXIT_FAILED, EXIT_OK, UsageError, one_line
from tasty_oneshot.jobs import MODEL_ENV, Job, McpServer
from tasty_oneshot.jobs_file import JobsFile, resolve_job
from tasty_oneshot.mcp_server import TASTYTRADE_ENV
from tasty_oneshot.schedule import NYC, now_nyc
from tasty_oneshot.server_log import ServerLog, last_error
from tasty_oneshot.units.crontab import cron_daemon_zone

# What systemd's user manager and cron give every job, whatever the shell had.
TIMER_BASE = ("HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG", "LC_ALL", "XDG_RUNTIME_DIR")
# Variables that change where a run keeps its state or what it runs, when only this shell has them.
STEERING = (
    paths.STATE_ENV,
    "XDG_STATE_HOME",
    "TASTY_ONESHOT_LEDGER",
    "TASTY_ONESHOT_LEDGER_WAIT",
    "TASTY_ONESHOT_MAX_PARALLEL",
    MODEL_ENV,
    "OPENAI_BASE_URL",
)
SERVER_BOUND = 60.0  # seconds an MCP server gets to start and list its tools, at most
ASK_TIMEOUT = 5.0  # seconds for systemctl, loginctl or crontab to answer
FIRE_TIMES = 20  # fire times looked at for one the market check lets run
CRON_HEADER = re.compile(r"^# tasty-oneshot: crontab lines for a cron daemon running in (\S+)\.$")


class Check(NamedTuple):
    check: str
    job: str | None
    status: str  # ok, warn or fail
    message: str


class Environments(NamedTuple):
    shell: dict[str, str]  # this shell's, ./.env included
    env_file: Path | None


def doctor(names: list[str], config: str | None, env_file: str | None, as_json: bool) -> int:
    """Every check, one line each (or a JSON array); exit 1 when any check fails."""
    os.umask(0o077)  # anything SQLite makes beside the ledger while reading it stays private
    config_path, config_problem = _jobs_file_path(config)
    envs = enter_timer_environment(env_file)
    checks = list(run_checks(names, config_path, config_problem, envs))
    write(checks, as_json)
    return EXIT_FAILED if any(c.status == "fail" for c in checks) else EXIT_OK


def _jobs_file_path(config: str | None) -> tuple[Path | None, str | None]:
    """The jobs file, found from this shell (the units name it by its absolute path)."""
    load_env_file(Path(".env"), required=False)
    try:
        path = paths.config_path(config)
    except UsageError as exc:
        return None, str(exc)
    if path is None:
        return None, f"no jobs file found: {paths.where_looked()}"
    return path, None


def enter_timer_environment(env_file: str | None) -> Environments:
    """Make this process's environment the one a timer's run gets: the basics, the env file,
    then $HOME/.env, each never overriding what is set (as `run --env-file` loads them)."""
    load_env_file(Path(".env"), required=False)
    shell = dict(os.environ)
    secrets.register_environment()  # a secret of this shell is a secret all the same
    file = paths.given_path("--env-file", env_file).absolute() if env_file else None
    os.environ.clear()
    os.environ.update({name: shell[name] for name in TIMER_BASE if name in shell})
    if file is not None:
        load_env_file(file, required=True)
    home = os.environ.get("HOME")
    if home:
        load_env_file(Path(home) / ".env", required=False)
    secrets.register_environment()
    return Environments(shell, file)


def run_checks(
    names: list[str], config: Path | None, config_problem: str | None, envs: Environments
) -> Iterator[Check]:
    yield from environment_checks(envs)
    state, state_check = check_state_dir()
    yield state_check
    if config is None:
        yield Check("jobs-file", None, "fail", f"{config_problem}; fix: give --config FILE")
        return
    defaults, jobs, job_checks = load_jobs(config, names, envs)
    yield from job_checks
    if defaults is not None:
        yield ledger_check(state, defaults.get("ledger"), envs)
    servers: dict[McpServer | None, Check] = {}
    timers = Timers.ask(envs.shell)
    for job in jobs:
        yield from model_checks(job, envs)
        missing = list(credential_checks(job, envs))
        yield from missing
        key = job.mcp
        if key not in servers:
            if any(c.status == "fail" for c in missing):
                servers[key] = Check(
                    "mcp-server", job.name, "fail", "not started: its credentials are missing"
                )
            else:
                servers[key] = server_check(job)
        yield servers[key]._replace(job=job.name)
        if not job.schedule.is_empty:
            yield timers.check(job)
            yield next_fire_check(job)
    if timers.user_units:
        yield linger_check(envs.shell)
    if timers.cron_lines:
        yield cron_zone_check(timers.crontab or "")


# --- the environment -----------------------------------------------------------------------


def _shell_only(name: str, envs: Environments) -> bool:
    return bool(envs.shell.get(name, "").strip()) and not os.environ.get(name, "").strip()


def _add_it(name: str, envs: Environments) -> str:
    """Where a missing variable goes, and whether only this shell has it."""
    where = str(envs.env_file) if envs.env_file else "an env file given with --env-file"
    if _shell_only(name, envs):
        return (
            f"; it is set only in this shell (or ./.env), which a timer does not get: "
            f"fix: add it to {where}"
        )
    return f"; fix: set it in {where}"


def environment_checks(envs: Environments) -> Iterator[Check]:
    if envs.env_file is None:
        yield Check(
            "environment",
            None,
            "warn",
            "no --env-file given: checking what a timer gets without one "
            f"({', '.join(TIMER_BASE[:5])} and $HOME/.env); fix: give the --env-file the "
            "units pass",
        )
    else:
        yield Check("environment", None, "ok", f"the timer's environment: {envs.env_file}")
    for name in STEERING:
        if envs.shell.get(name) and envs.shell.get(name) != os.environ.get(name):
            yield Check(
                "environment",
                None,
                "warn",
                f"${name} is set in this shell, but the timer's runs do not get that value; "
                f"fix: set it in {envs.env_file or 'the env file the units pass'} if they need it",
            )


# --- the state directory and the ledger ----------------------------------------------------


def check_state_dir() -> tuple[Path | None, Check]:
    """The state directory: the trust checks of a run, then a file written and removed."""
    try:
        state = paths.state_dir()
        for entry in sorted(state.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                paths.private_dir(entry)
    except UsageError as exc:
        return None, Check("state-dir", None, "fail", str(exc))
    probe = state / f".doctor-{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"doctor\n")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        problem = f"{state}: cannot write in the state directory ({exc.strerror})"
        return None, Check("state-dir", None, "fail", f"{problem}; fix: free the disk")
    return state, Check("state-dir", None, "ok", f"{state}: ours, private and writable")


def ledger_check(state: Path | None, configured: str | None, envs: Environments) -> Check:
    from tasty_oneshot.ledger import ledger_url

    try:
        url = ledger_url(configured)
    except UsageError as exc:
        return Check("ledger", None, "fail", str(exc))
    if url:
        return _postgres_check(url)
    if state is None:
        return Check("ledger", None, "fail", "not checked: the state directory is refused")
    return _sqlite_check(state)


def _sqlite_check(state: Path) -> Check:
    """The SQLite ledger, opened read-only: its schema version and how many rows it holds."""
    import sqlite3

    from tasty_oneshot.ledger.sqlite import FILE_NAME, SCHEMA_VERSION

    path = state / FILE_NAME
    try:
        if not paths.check_private_file(path):
            return Check("ledger", None, "ok", f"{path}: not made yet; the first run makes it")
        for suffix in ("-wal", "-shm", "-journal"):
            paths.check_private_file(path.with_name(FILE_NAME + suffix))
    except UsageError as exc:
        return Check("ledger", None, "fail", str(exc))
    except OSError as exc:
        return Check("ledger", None, "fail", f"{path}: cannot open it: {exc.strerror}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            rows = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if version else 0
        finally:
            db.close()
    except sqlite3.Error as exc:
        from tasty_oneshot.ledger.sqlite import describe

        return Check("ledger", None, "fail", describe(path, exc))
    if version < SCHEMA_VERSION:
        return Check(
            "ledger",
            None,
            "ok",
            f"{path}: schema {version}, {rows} rows; the next run brings it to {SCHEMA_VERSION}",
        )
    return Check("ledger", None, "ok", f"{path}: schema {version}, {rows} rows")


def _postgres_check(url: str) -> Check:
    """The PostgreSQL ledger: reachable, its schema version; a read-only session, no row."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from tasty_oneshot.ledger.postgres import SCHEMA_VERSION, TCP_BOUNDS
    from tasty_oneshot.ledger.postgres_url import SECRET_KEYS, shown_url, url_passwords

    secrets.register(*url_passwords(url))
    where = shown_url(url)
    try:
        given = conninfo_to_dict(url)
        secrets.register(*(str(given.get(key) or "") for key in SECRET_KEYS))
        with psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=5,
            application_name="tasty-oneshot doctor",
            **TCP_BOUNDS,
        ) as db:
            db.execute("SET default_transaction_read_only = on; SET statement_timeout = 5000")
            meta = db.execute("SELECT to_regclass('tasty_oneshot_meta')").fetchone()
            version = None
            if meta is not None and meta[0] is not None:
                row = db.execute(
                    "SELECT value FROM tasty_oneshot_meta WHERE key = 'schema_version'"
                ).fetchone()
                version = int(row[0]) if row else None
    except (psycopg.Error, ValueError) as exc:
        return Check(
            "ledger",
            None,
            "fail",
            f"{where}: the PostgreSQL ledger cannot be reached ({one_line(exc)}); fix: check "
            "that the server is up, reachable from this host, and the URL's user and password",
        )
    if version is None:
        return Check("ledger", None, "ok", f"{where}: reachable; the first run makes its tables")
    if version > SCHEMA_VERSION:
        return Check(
            "ledger",
            None,
            "fail",
            f"{where}: schema {version} is newer than this tasty-oneshot's "
            f"({SCHEMA_VERSION}); fix: upgrade tasty-oneshot on this host",
        )
    return Check("ledger", None, "ok", f"{where}: reachable, schema {version}")


# --- the jobs ------------------------------------------------------------------------------


def load_jobs(
    path: Path, names: list[str], envs: Environments
) -> tuple[dict[str, Any] | None, list[Job], list[Check]]:
    """The jobs file's defaults and each job, loaded in the timer's environment; a job that
    does not load is a failed check, and the others are still loaded."""
    from tasty_oneshot import jobs_file

    checks: list[Check] = []
    try:
        defaults, raw_jobs = jobs_file._top_level(path)
    except UsageError as exc:
        return None, [], [Check("jobs-file", None, "fail", _with_shell_hint(str(exc), envs))]
    chosen = list(dict.fromkeys(names)) or sorted(raw_jobs, key=str)
    checks.append(Check("jobs-file", None, "ok", f"{path}: {len(raw_jobs)} jobs"))
    jobs = []
    for name in chosen:
        try:
            if name not in raw_jobs:
                known = ", ".join(sorted(map(str, raw_jobs))) or "none"
                raise UsageError(f"{path}: job '{name}': no such job (jobs: {known})")
            keys = _job_keys(path, name, raw_jobs[name])
            job = resolve_job(
                JobsFile(path, defaults, {name: keys}),
                job_name=name,
                instructions=None,
                name=None,
                options={},
            )
        except UsageError as exc:
            checks.append(Check("job", str(name), "fail", _with_shell_hint(str(exc), envs)))
            continue
        checks.append(Check("job", name, "ok", f"loads: {job.schedule.describe()}"))
        jobs.append(job)
    return defaults, jobs, checks


def _job_keys(path: Path, name: Any, raw: Any) -> dict[str, Any]:
    """One job's checked keys, as load_jobs_file checks each (it stops at the first bad one)."""
    from tasty_oneshot import jobs_file
    from tasty_oneshot.jobs import JOB_KEYS, NAME, NAME_RULE, check_keys, schedule_from, shown

    where = f"{path}: job '{shown(name)}': "
    if not isinstance(name, str) or not NAME.match(name):
        raise UsageError(f"{where}the name must be {NAME_RULE}")
    if not isinstance(raw, dict):
        raise UsageError(f"{where}expected a mapping of keys")
    keys = check_keys(jobs_file._interpolated(raw, where), JOB_KEYS, where)
    keys = jobs_file._relative_mcp(keys, path)
    if "instructions" not in keys:
        raise UsageError(f"{where}key 'instructions': missing")
    schedule_from(keys, where)
    return keys


def _with_shell_hint(message: str, envs: Environments) -> str:
    """A `${VAR} is not set` error, with whether only this shell has VAR."""
    match = re.search(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\} is not set", message)
    if match and _shell_only(match[1], envs):
        return message + _add_it(match[1], envs)
    return message


def model_checks(job: Job, envs: Environments) -> Iterator[Check]:
    """The model resolves, and its provider's key is set (an empty key is no key)."""
    from tasty_oneshot.agent import check_model_name, key_set, resolve_model

    if not job.model:
        yield Check(
            "model",
            job.name,
            "fail",
            "no model: set 'model' in the jobs file or MODEL_IDENTIFIER" + _add_it(MODEL_ENV, envs),
        )
        return
    groups = [group for group in _needed(job) if not set(group) & set(TASTYTRADE_ENV)]
    missing = [group for group in groups if not any(map(key_set, group))]
    try:
        if missing:
            check_model_name(job)  # a key is missing: only the name can be checked
        else:
            resolve_model(job)
    except UsageError as exc:
        yield Check("model", job.name, "fail", str(exc))
        return
    for group in missing:
        names = " or ".join(group)
        yield Check(
            "model",
            job.name,
            "fail",
            f"{names} is not set (or empty), needed by the model {job.model}"
            + _add_it(group[0], envs),
        )
    if not missing:
        have = f"; {' / '.join(g[0] for g in groups)} set" if groups else ""
        yield Check("model", job.name, "ok", f"{job.model} resolves{have}")


def _needed(job: Job) -> list[tuple[str, ...]]:
    """The credential groups a run of the job needs (agent.needed_variables); a server
    command that cannot start is the MCP check's to report."""
    from tasty_oneshot.agent import needed_variables

    try:
        return needed_variables(job)
    except UsageError:
        return needed_variables(job._replace(mcp=McpServer(url="https://unused.invalid")))


def credential_checks(job: Job, envs: Environments) -> Iterator[Check]:
    """TastyTrade's credentials, for a job whose server is tasty-agent."""
    from tasty_oneshot.agent import key_set

    for group in _needed(job):
        if not set(group) & set(TASTYTRADE_ENV):
            continue
        name = group[0]
        if key_set(name):
            yield Check("credentials", job.name, "ok", f"{name} is set")
        else:
            yield Check(
                "credentials",
                job.name,
                "fail",
                f"{name} is not set (or empty), needed by the tasty-agent MCP server to "
                f"reach the account{_add_it(name, envs)}",
            )


# --- the MCP server ------------------------------------------------------------------------


class _StderrTail(ServerLog):
    """The server's stderr kept in memory, its last lines only (no log file is written)."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self._pipe: TextIO | None = None
        self._reader: threading.Thread | None = None

    def stderr(self) -> TextIO:
        if self._pipe is None:
            read_fd, write_fd = os.pipe()
            self._pipe = os.fdopen(write_fd, "w")
            self._reader = threading.Thread(target=self._read, args=(read_fd,), daemon=True)
            self._reader.start()
        return self._pipe

    def _read(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                self.lines.append(line.decode("utf-8", errors="replace").rstrip())

    def begin(self, run_id: int | None) -> None:
        pass

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._reader is not None:
            self._reader.join(2.0)


def server_check(job: Job) -> Check:
    """Start the job's MCP server as a run would, list its tools, stop it (bounded)."""
    from tasty_oneshot.mcp_server import StdioServer, command_and_args

    bound = min(job.timeout, SERVER_BOUND)
    if job.mcp is not None and job.mcp.url:
        return _remote_check(job, job.mcp.url, bound)
    try:
        command, args = command_and_args(job.mcp)
    except UsageError as exc:
        return Check("mcp-server", job.name, "fail", str(exc))
    tasty = Path(command).name == "tasty-agent"
    tail = _StderrTail()
    server = StdioServer(command, args, tail)
    started = time.monotonic()
    try:
        server.start()
    except OSError as exc:
        tail.close()
        return Check("mcp-server", job.name, "fail", f"{command}: cannot start: {exc.strerror}")
    try:
        tools, problem = asyncio.run(_list_tools(server, bound))
    finally:
        server.stop()
    took = time.monotonic() - started
    label = Path(command).name
    if problem is None:
        what = "started, authenticated with TastyTrade" if tasty else "started"
        return Check("mcp-server", job.name, "ok", f"{label} {what}; {tools} tools ({took:.1f}s)")
    said = last_error(list(tail.lines))
    if tasty:
        if said and re.search(r"connect|timed? ?out|name or service|unreachable", said, re.I):
            found = f"TastyTrade could not be reached: {said}"
        elif said:
            found = f"TastyTrade authentication failed: {said}"
        else:
            found = f"it {problem}, saying nothing"
        fix = "check TASTYTRADE_CLIENT_SECRET and TASTYTRADE_REFRESH_TOKEN, and the network"
    else:
        found = f"it {problem}" + (f": {said}" if said else ", saying nothing")
        fix = f"run {command} {' '.join(args)} by hand to see why"
    return Check("mcp-server", job.name, "fail", f"{label}: {found}; fix: {fix}")


async def _list_tools(server: Any, bound: float) -> tuple[int, str | None]:
    """How many tools the server offers, or what went wrong: it exited, or did not answer."""
    process = server.process

    async def tools() -> int:
        async with server.transport().connect_session() as session:
            await session.initialize()
            return len((await session.list_tools()).tools)

    asking = asyncio.ensure_future(tools())
    exiting = asyncio.ensure_future(asyncio.to_thread(process.wait))
    done, _ = await asyncio.wait({asking, exiting}, timeout=bound, return_when="FIRST_COMPLETED")
    if asking in done and asking.exception() is None:
        return asking.result(), None
    asking.cancel()
    with contextlib.suppress(BaseException):  # why it ended is told below
        await asking
    if exiting in done or process.poll() is not None:
        return 0, f"exited (status {process.wait()}) before listing its tools"
    if asking in done and (error := asking.exception()) is not None:
        return 0, f"failed while listing its tools ({one_line(error)})"
    return 0, f"did not list its tools within {bound:.0f}s"


def _remote_check(job: Job, url: str, bound: float) -> Check:
    """A remote streamable-HTTP server: reached, and its tools listed."""
    secrets.register_urls((url,))

    async def tools() -> int:
        from fastmcp import Client

        async with Client(url, timeout=bound) as client:
            return len(await client.list_tools())

    try:
        count = asyncio.run(asyncio.wait_for(tools(), bound))
    except Exception as exc:  # any failure is the check's answer
        return Check(
            "mcp-server",
            job.name,
            "fail",
            f"{url}: could not be reached ({one_line(exc)}); fix: check the URL and the network",
        )
    return Check("mcp-server", job.name, "ok", f"{url}: reached; {count} tools")


# --- timers --------------------------------------------------------------------------------


def _ask(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(command[0], path=env.get("PATH")) is None:
        return None
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=ASK_TIMEOUT, env=env, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


class Timers:
    """This user's systemd timers and crontab, as this shell's tools see them."""

    def __init__(self, env: dict[str, str], crontab: str | None) -> None:
        self.env = env
        self.crontab = crontab
        self.user_units = False  # a job has a user timer: lingering matters
        self.cron_lines = False  # a job has a crontab line: the cron daemon's zone matters

    @classmethod
    def ask(cls, env: dict[str, str]) -> "Timers":
        result = _ask(["crontab", "-l"], env)
        crontab = result.stdout if result is not None and result.returncode == 0 else None
        return cls(env, crontab)

    def check(self, job: Job) -> Check:
        name = f"tasty-oneshot-{job.name}.timer"
        config = Path(
            self.env.get("XDG_CONFIG_HOME") or Path(self.env.get("HOME", "/")) / ".config"
        )
        places = (
            (config / "systemd" / "user" / name, ["systemctl", "--user"], True),
            (Path("/etc/systemd/system") / name, ["systemctl"], False),
        )
        installed = []
        for unit, systemctl, user in places:
            if not unit.exists():
                continue
            answer = _ask([*systemctl, "is-enabled", name], self.env)
            state = answer.stdout.strip() if answer is not None else "unknown"
            if state in ("enabled", "enabled-runtime", "linked", "linked-runtime"):
                self.user_units |= user
                return Check("timer", job.name, "ok", f"{unit}: {state}")
            installed.append((unit, systemctl, state))
        lines = self._cron_lines(job.name)
        if lines:
            self.cron_lines = True
            return Check("timer", job.name, "ok", f"crontab: {len(lines)} lines run it")
        if installed:
            unit, systemctl, state = installed[0]
            return Check(
                "timer",
                job.name,
                "fail",
                f"{unit} is installed but {state}, so it never fires; fix: "
                f"{' '.join(systemctl)} enable --now {name}",
            )
        return Check(
            "timer",
            job.name,
            "fail",
            f"no systemd timer ({config / 'systemd' / 'user' / name}) and no crontab line runs "
            f"it; fix: tasty-oneshot generate-units --job {job.name} --target systemd "
            f"--output-dir {config / 'systemd' / 'user'} --env-file FILE, then "
            f"systemctl --user enable --now {name} (or --target crontab, then crontab -e)",
        )

    def _cron_lines(self, job: str) -> list[str]:
        """The crontab's lines that run the job (`run --job NAME`, or `--name NAME`)."""
        names = (f"--job {job} ", f"--name {job} ")
        return [
            line
            for line in (self.crontab or "").splitlines()
            if not line.lstrip().startswith("#") and any(n in f"{line} " for n in names)
        ]


def linger_check(shell: dict[str, str]) -> Check:
    """User timers fire only while the user is logged in, unless lingering is on."""
    import getpass

    user = shell.get("USER") or getpass.getuser()
    if Path("/var/lib/systemd/linger", user).exists():
        return Check("lingering", None, "ok", f"lingering is on for {user}")
    answer = _ask(["loginctl", "show-user", user, "--property=Linger", "--value"], shell)
    if answer is not None and answer.stdout.strip() == "yes":
        return Check("lingering", None, "ok", f"lingering is on for {user}")
    return Check(
        "lingering",
        None,
        "warn",
        f"lingering is off for {user}: user timers fire only while {user} is logged in; "
        f"fix: loginctl enable-linger {user}",
    )


def next_fire_check(job: Job) -> Check:
    """The next fire time, and whether the market check lets it run."""
    from tasty_oneshot.next_fires import fire_time_rows

    try:
        rows = fire_time_rows(job, FIRE_TIMES, now_nyc())
    except UsageError as exc:
        return Check("next-fire", job.name, "warn", str(exc))
    if not rows:
        return Check("next-fire", job.name, "warn", "no fire time ahead: it will not fire again")
    first = rows[0]
    at = first["at"][:16].replace("T", " ")
    if first["will_run"]:
        return Check("next-fire", job.name, "ok", f"next fire {at} NYC: it runs")
    runs = [row for row in rows if row["will_run"]]
    if runs:
        then = runs[0]["at"][:16].replace("T", " ")
        return Check(
            "next-fire",
            job.name,
            "ok",
            f"next fire {at} NYC: the market is closed then, the market check skips it; "
            f"the first that runs: {then} NYC",
        )
    return Check(
        "next-fire",
        job.name,
        "warn",
        f"next fire {at} NYC, but the market is closed at each of the next {len(rows)} fire "
        "times: the market check skips them all; fix: a schedule within the session, or "
        "ignore_market_hours: true",
    )


def cron_zone_check(crontab: str) -> Check:
    """Crontab lines are made for one zone; the cron daemon must run in it."""
    system = cron_daemon_zone()
    assumed = [m[1] for line in crontab.splitlines() if (m := CRON_HEADER.match(line.strip()))]
    fix = f"fix: tasty-oneshot generate-units --target crontab --cron-tz {system}, then crontab -e"
    if not assumed:
        return Check(
            "cron-zone",
            None,
            "warn",
            f"the crontab does not say which zone its lines were made for; cron runs them in "
            f"{system}; {fix}",
        )
    wrong = sorted({zone for zone in assumed if not same_zone(zone, system)})
    if wrong:
        return Check(
            "cron-zone",
            None,
            "fail",
            f"crontab lines made for a cron daemon in {', '.join(wrong)}, but cron runs in "
            f"{system} (/etc/localtime): they fire at the wrong times; {fix}",
        )
    return Check("cron-zone", None, "ok", f"crontab lines made for {system}, cron's zone")


def same_zone(a: str, b: str) -> bool:
    """Whether two zones keep the same clock for the next year (Etc/UTC is UTC)."""
    try:
        first, second = ZoneInfo(a), ZoneInfo(b)
    except (ZoneInfoNotFoundError, ValueError):
        return a == b
    start = datetime.now(NYC)
    for hours in range(0, 366 * 24, 6):
        moment = start + timedelta(hours=hours)
        if moment.astimezone(first).utcoffset() != moment.astimezone(second).utcoffset():
            return False
    return True


# --- output --------------------------------------------------------------------------------


def write(checks: list[Check], as_json: bool) -> None:
    """One line per check, or the JSON array; secrets masked, control characters escaped."""
    shown = [c._replace(message=secrets.redact(c.message)) for c in checks]
    if as_json:
        sys.stdout.write(json.dumps([c._asdict() for c in shown], indent=2) + "\n")
        return
    for c in shown:
        job = f" ({c.job})" if c.job else ""
        sys.stdout.write(terminal.one_line(f"{c.status:<5}{c.check}{job}: {c.message}") + "\n")
