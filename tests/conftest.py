"""Shared test helpers: the real CLI in a subprocess, a clean environment, real files."""

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FAKE_SERVER = TESTS / "fake_tasty_agent.py"
STUB = TESTS / "openai_stub.py"
FAKETIME = shutil.which("faketime")
# faketime's wrapper keeps a semaphore and a shared memory object named by its pid in
# /dev/shm and leaves them behind when it is killed (as tests that stop runs do); a later
# wrapper given the same pid (pid_max is small) then fails with "sem_open: File exists". So
# each wrapper starts from a shell that removes what a dead process of its pid left, then
# becomes the wrapper (exec keeps the pid).
FAKETIME_CLEAN = 'rm -f /dev/shm/sem.faketime_sem_$$ /dev/shm/faketime_shm_$$; exec "$0" "$@"'


def faketime(at: str) -> list[str]:
    """The command prefix that runs a command with its clock starting at `at` (UTC)."""
    if FAKETIME is None:
        pytest.skip("faketime is not installed (apt-get install faketime)")
    return ["sh", "-c", FAKETIME_CLEAN, FAKETIME, at]


# Variables a test may set; everything else of the host's environment is left out, so a
# developer's real credentials or config never leak into a test.
BASE_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")


@dataclass
class Workspace:
    """A working directory, a state directory and an environment for one test."""

    root: Path
    env: dict[str, str]

    @property
    def state(self) -> Path:
        return Path(self.env["TASTY_ONESHOT_STATE_DIR"])

    @property
    def record(self) -> Path:
        """Where the fake MCP server records its start and tool calls."""
        return self.root / "mcp-calls.jsonl"

    def fake_mcp_yaml(self, *extra: str) -> str:
        """The `mcp:` block of a jobs file that points at the fake tasty-agent server."""
        args = [str(FAKE_SERVER), str(self.record), *extra]
        return f"mcp:\n  command: {sys.executable}\n  args: {json.dumps(args)}\n"

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def calls(self) -> list[dict]:
        """The tool calls the fake server received, in order."""
        if not self.record.exists():
            return []
        events = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [e for e in events if e["event"] == "call"]

    def server_starts(self) -> list[dict]:
        if not self.record.exists():
            return []
        events = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [e for e in events if e["event"] == "start"]

    def cli(
        self, *args: str, at: str | None = None, timeout: float = 60, **popen
    ) -> subprocess.CompletedProcess:
        """Run `python -m tasty_oneshot ARGS` here; `at` fakes the clock ('2026-11-27 14:31:00'
        is read as UTC)."""
        return subprocess.run(
            self.command(*args, at=at),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **popen,
        )

    def call(
        self, *args: str, at: str | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """The same command, run in this process: for what does not depend on the process
        boundary (parsing, resolution, unit text, schedules, status arithmetic). Only a test
        of exit codes as the shell sees them, signals, locks or the timers' environment
        needs `cli`. (`timeout` is accepted for `cli`'s sake: a run bounds itself.)"""
        return call_cli(args, cwd=self.root, env=self.env, at=at)

    def popen(self, *args: str, at: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args, at=at),
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def command(self, *args: str, at: str | None = None) -> list[str]:
        cmd = [sys.executable, "-m", "tasty_oneshot", *args]
        if at is not None:
            cmd = [*faketime(at), *cmd]
        return cmd

    def history(self, *args: str) -> list[dict]:
        result = self.call("history", "--json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def call_cli(
    args: tuple[str, ...] | list[str], cwd: Path, env: dict[str, str], at: str | None = None
) -> subprocess.CompletedProcess:
    """`tasty-oneshot ARGS` in this process, as `python -m tasty_oneshot` would run it: in
    `cwd`, with exactly `env` as the environment, stdout and stderr captured, the clock moved
    to `at` (read as UTC, then ticking, as faketime does) and everything the command changes
    in the process (environment, directory, logging, registered secrets) put back after."""
    from tasty_oneshot import cli

    out, err = io.StringIO(), io.StringIO()
    with (
        _process_state(cwd, env),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _clock(at),
    ):
        try:
            code = cli.dispatch(list(args))
        except SystemExit as exc:  # argparse's --help and usage errors
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return subprocess.CompletedProcess(
        ["tasty-oneshot", *args], code, out.getvalue(), err.getvalue()
    )


# The loggers whose levels the CLI sets (tasty_oneshot/cli.py's setup_logging): the root one,
# ours, and apprise's (kept quiet: it logs the URLs it rejects, credentials included).
CLI_LOGGERS = ("", "tasty_oneshot", "apprise")


@contextlib.contextmanager
def _process_state(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    from tasty_oneshot import secrets, stdio

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    saved_levels = {logger: logger.level for logger in map(logging.getLogger, CLI_LOGGERS)}
    saved_secrets = secrets._values
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    saved_signals = {sig: signal.getsignal(sig) for sig in signals}
    # A run's agent phase sends library warnings to the log; doctor narrows the umask.
    saved_showwarning, saved_umask = warnings.showwarning, os.umask(0o022)
    os.umask(saved_umask)
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        time.tzset()
        root.handlers[:] = saved_handlers
        for logger, level in saved_levels.items():
            logger.setLevel(level)
        secrets._values = saved_secrets
        stdio.failure = None
        warnings.showwarning = saved_showwarning
        os.umask(saved_umask)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)


# The offline calendar a process of the real CLI builds once, its range counted from its own
# today: in this process, one per faked day (exchange_calendars caches one calendar per name,
# so it is swapped in and out of that cache; building one costs a tenth of a second).
_calendars: dict[object, tuple[object, dict]] = {}
_calendar_day: list[object] = [datetime.now(UTC).date()]


@contextlib.contextmanager
def _clock(at: str | None) -> Iterator[None]:
    if at is None:
        yield
        return
    import time_machine

    moment = datetime.fromisoformat(at).replace(tzinfo=UTC)
    _offline_calendar_of(moment.date())
    try:
        with time_machine.travel(moment, tick=True):
            yield
    finally:  # the calendar of this process's real today again, for what runs next
        _offline_calendar_of(datetime.now(UTC).date())


def _offline_calendar_of(day: object) -> None:
    if _calendar_day[0] == day:
        return
    from exchange_calendars.calendar_utils import global_calendar_dispatcher

    from tasty_oneshot import market

    cache = global_calendar_dispatcher._factory_output_cache
    if "XNYS" in cache:
        _calendars[_calendar_day[0]] = cache["XNYS"]
    cache.pop("XNYS", None)
    if day in _calendars:
        cache["XNYS"] = _calendars[day]  # type: ignore[assignment]
    market._xnys.cache_clear()
    _calendar_day[0] = day


def clean_env(root: Path) -> dict[str, str]:
    """Nothing of the developer's environment (no real credentials or config), the host in
    UTC (its zone must not matter; faked times are read as UTC), state and home under root."""
    env = {k: os.environ[k] for k in BASE_ENV_KEEP if k in os.environ}
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        TZ="UTC",
        TASTY_ONESHOT_STATE_DIR=str(root / "state"),
        XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def make_workspace(root: Path) -> Workspace:
    work = root / "work"
    work.mkdir()
    return Workspace(root=work, env=clean_env(root))


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)


# --- the model stub: tests/openai_stub.py, an OpenAI-compatible server (see its docstring)


class Stub:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def mode(self, *mode: str) -> None:
        (self.dir / "mode.json").write_text(json.dumps(mode))

    def requests(self) -> list[dict]:
        path = self.dir / "requests.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def stub(ws, tmp_path):
    directory = tmp_path / "stub"
    directory.mkdir()
    proc = subprocess.Popen([sys.executable, str(STUB), str(directory), "answer", "ok"])
    port_file = directory / "port"
    deadline = time.monotonic() + 10
    while not port_file.exists():
        assert proc.poll() is None, "the OpenAI stub exited"
        assert time.monotonic() < deadline, "the OpenAI stub did not start"
        time.sleep(0.02)
    ws.env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port_file.read_text()}/v1"
    ws.env.setdefault("OPENAI_API_KEY", "sk-test-stub")
    yield Stub(directory)
    proc.terminate()
    proc.wait(timeout=10)


# --- the alert receiver -----------------------------------------------------------------------


class Receiver:
    """An HTTP server in a thread that records each POST; `hang` makes it never answer (a
    string: never answer a POST whose body contains it)."""

    def __init__(self, hang: bool | str = False) -> None:
        self.posts: list[dict] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(
                    {"path": self.path, "body": body.decode(), "at": time.monotonic()}
                )
                if hang is True or (isinstance(hang, str) and hang in body.decode()):
                    receiver.release.wait(60)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "alerts", credentials: str = "") -> str:
        return f"json://{credentials}127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(hang: bool | str = False) -> Receiver:
        made.append(Receiver(hang))
        return made[-1]

    yield make
    for r in made:
        r.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
