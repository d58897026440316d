"""The MCP server a run talks to: which command, what environment, its process and its log.

A stdio server is started with `subprocess` as soon as the run knows the agent will run, and
before pydantic-ai is imported: the server imports its own world (seconds, for tasty-agent)
while this process imports pydantic-ai, so the first model request waits for the slower of
the two rather than their sum. The transport then speaks MCP over the pipes it already has.

Whatever the server writes to stdout must be JSON-RPC, one message a line: anything else
(bytes that are not UTF-8, a stray print) ends the run at once as a broken protocol, instead
of leaving a request waiting until the timeout. The server's stderr goes to its masked log.

A server that exits during start-up (before the MCP handshake is done) having said it could not
reach the network is started once more, after RETRY_PAUSE; a server that exits, then or later,
gives the run's reason what it said last.
"""

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tasty_oneshot.errors import UsageError

if TYPE_CHECKING:
    import subprocess

    from fastmcp.client.transports import ClientTransport

    from tasty_oneshot.jobs import McpServer
    from tasty_oneshot.server_log import ServerLog

# The variables the TastyTrade MCP server needs; it is given these and nothing else beyond
# the few every MCP client passes on (the MCP SDK's own list, for a POSIX host).
TASTYTRADE_ENV = ("TASTYTRADE_CLIENT_SECRET", "TASTYTRADE_REFRESH_TOKEN", "TASTYTRADE_ACCOUNT_ID")
INHERITED_ENV = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")
DEFAULT_COMMAND, DEFAULT_ARGS = "tasty-agent", ("stdio",)
STOP_GRACE = 2.0  # seconds a server gets to exit after its stdin closes, then after SIGTERM
RETRY_PAUSE = 1.0  # seconds before a server that could not reach the network is started again

log = logging.getLogger(__name__)


def server_command(command: str) -> str:
    """A stdio server's command: a path must name an executable file; a bare name is looked
    for beside this tasty-oneshot first (where `tasty-agent` is installed with it), then on
    PATH. Either way, a command that cannot be started is a usage error (exit 2)."""
    if os.sep in command:
        if not (os.path.isfile(command) and os.access(command, os.X_OK)):
            raise UsageError(f"MCP server command {command!r}: not an executable file")
        return command
    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    import shutil  # not for the usual command, found beside tasty-oneshot

    found = shutil.which(command)
    if not found:
        raise UsageError(
            f"MCP server command {command!r}: not found beside tasty-oneshot or on PATH"
        )
    return found


def command_and_args(server: "McpServer | None") -> tuple[str, list[str]]:
    """The resolved command line of a stdio server (the default: `tasty-agent stdio`)."""
    if server is None or server.command is None:
        return server_command(DEFAULT_COMMAND), list(DEFAULT_ARGS)
    return server_command(server.command), list(server.args)


def server_env() -> dict[str, str]:
    """The environment a stdio server gets: the few basics and TastyTrade's variables."""
    keep = (*INHERITED_ENV, *TASTYTRADE_ENV)
    # As the MCP SDK does: a value starting with "()" is an exported shell function, not data.
    return {k: v for k in keep if (v := os.environ.get(k)) and not v.startswith("()")}


class StdioServer:
    """One stdio MCP server process for one run, stopped with its whole process group."""

    def __init__(self, command: str, args: list[str], log: "ServerLog") -> None:
        self.command, self.args, self.log = command, args, log
        self.process: subprocess.Popen[bytes] | None = None
        self.started_again = False
        self.stdout_ended = False  # the transport read the end of its stdout: it is exiting

    def start(self) -> None:
        """Spawn the server now; the MCP handshake happens when the agent connects."""
        import subprocess  # here: only a run that starts the agent pays for it

        self.process = subprocess.Popen(
            [self.command, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.stderr(),
            env=server_env(),
            start_new_session=True,  # its own process group: stopped whole, children too
            close_fds=True,
            preexec_fn=_die_with(os.getpid()),
        )

    def stop(self, *, graceful: bool = True) -> None:
        """Close its stdin and give it STOP_GRACE seconds (`graceful`: the run finished), then
        SIGTERM, then SIGKILL the group (a run stopped by a timeout or a signal starts here)."""
        self._end(graceful=graceful)
        self.log.close()

    async def start_again(self) -> bool:
        """After its MCP handshake failed: if it exited saying it could not reach the network,
        and was not started again before, start it once more (True)."""
        import asyncio

        from tasty_oneshot.server_log import NETWORK_ERROR

        if self.started_again or self.process is None:
            return False
        status = await asyncio.to_thread(self.exit_status)
        if status is None:
            return False
        await asyncio.to_thread(self.log.sync)
        said = self.log.said()
        if said is None or not NETWORK_ERROR.search(said):
            return False
        self.started_again = True
        log.warning(
            "the MCP server exited during start-up (%s): starting it once more in %gs",
            said,
            RETRY_PAUSE,
        )
        self.log.note("the server could not reach the network; it is started once more")
        await asyncio.sleep(RETRY_PAUSE)
        self._end(graceful=False)  # its children too
        self.stdout_ended = False
        self.start()
        return True

    def exit_status(self) -> int | None:
        """Its exit status, once it exited; a server whose stdout ended is given STOP_GRACE
        seconds to exit."""
        import subprocess

        if self.process is None:
            return None
        try:
            return self.process.wait(STOP_GRACE if self.stdout_ended else 0)
        except subprocess.TimeoutExpired:
            return None

    def failure(self, error: str) -> str:
        """The run's reason for a failure that may be the server's: what it said last when it
        exited, else `error`; either way, where its log is."""
        status = self.exit_status()
        if status is None:
            return f"{error} (MCP server log: {self.log.path})"
        self.log.sync()
        said = self.log.said()
        exited = f"the MCP server exited (status {status})"
        told = f"{exited}: {said}" if said else f"{exited}, saying nothing ({error})"
        return f"{told} (MCP server log: {self.log.path})"

    def _end(self, *, graceful: bool) -> None:
        import subprocess

        process = self.process
        if process is None:
            return
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        steps = (
            (None, signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGTERM, signal.SIGKILL)
        )
        for sig in steps:
            if sig is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)
            try:
                process.wait(STOP_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        # Its children may hold the group after it exited: they go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def transport(self) -> "ClientTransport":
        """A fastmcp transport over this process's pipes."""
        from tasty_oneshot.mcp_transport import PipeTransport

        if self.process is None:
            raise RuntimeError("the MCP server was not started")
        return PipeTransport(self, f"{Path(self.command).name} {' '.join(self.args)}")


def _die_with(parent: int) -> "Callable[[], None] | None":
    """In the child before exec: ask Linux to SIGKILL it when this process dies, however it
    dies (SIGKILL included), so a killed run under cron leaves no server behind."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    set_parent_death_signal = 1  # PR_SET_PDEATHSIG

    def arrange() -> None:
        prctl(set_parent_death_signal, signal.SIGKILL)
        if os.getppid() != parent:  # the run died before the request was made
            os._exit(1)

    return arrange
