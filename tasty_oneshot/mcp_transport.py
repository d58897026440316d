"""MCP over the pipes of a server process that is already running (see mcp_server.py).

Like the MCP SDK's stdio client, but adopting a process rather than spawning one, and strict:
a line on the server's stdout that is not a JSON-RPC message raises BrokenProtocol in the
session's task, which fastmcp passes on to the waiting call, so the run fails at once.

The MCP handshake happens here, before the session is handed over: a server that dies during
it may be started once more (the server decides, see StdioServer.start_again), and the
session is opened again over the new process's pipes.
"""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from typing import Any, Protocol

import anyio
from fastmcp.client.transports import ClientTransport
from mcp import ClientSession
from mcp.shared.message import SessionMessage
from mcp.types import InitializeResult, JSONRPCMessage

LINE_LIMIT = 64 << 20  # bytes in one JSON-RPC message from the server


class BrokenProtocol(Exception):
    """The server wrote something that is not a JSON-RPC message to stdout."""


class Server(Protocol):
    """The server process a transport speaks to (mcp_server.StdioServer)."""

    process: "subprocess.Popen[bytes] | None"
    stdout_ended: bool

    async def start_again(self) -> bool: ...


class HandshakeDone(ClientSession):
    """A session whose handshake already happened: fastmcp's own `initialize` gets its result."""

    done: InitializeResult | None = None

    async def initialize(self) -> InitializeResult:
        if self.done is None:
            self.done = await super().initialize()
        return self.done


class PipeTransport(ClientTransport):
    def __init__(self, server: Server, label: str) -> None:
        self.server, self.label = server, label

    def __repr__(self) -> str:
        return f"<PipeTransport {self.label}>"

    @contextlib.asynccontextmanager
    async def connect_session(self, **session_kwargs: Any) -> AsyncIterator[ClientSession]:
        while True:
            ready = False
            try:
                async with self._session(session_kwargs) as session:
                    await session.initialize()
                    ready = True
                    yield session
                return
            except Exception:
                # Only a failed handshake is retried, never what happened to a session in use.
                if ready or not await self.server.start_again():
                    raise

    @contextlib.asynccontextmanager
    async def _session(self, session_kwargs: dict[str, Any]) -> AsyncIterator[HandshakeDone]:
        incoming_writer, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        outgoing, outgoing_reader = anyio.create_memory_object_stream[SessionMessage](0)
        reader, writer = await self._pipes()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._read, reader, incoming_writer)
            tasks.start_soon(self._write, writer, outgoing_reader)
            try:
                async with HandshakeDone(incoming, outgoing, **session_kwargs) as session:
                    yield session
            finally:
                tasks.cancel_scope.cancel()
                writer.close()

    async def _pipes(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        process = self.server.process
        if process is None:
            raise RuntimeError("the MCP server was not started")
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT, loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), process.stdout
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, process.stdin
        )
        return reader, asyncio.StreamWriter(transport, protocol, None, loop)

    async def _read(self, reader: asyncio.StreamReader, sink: Any) -> None:
        async with sink:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than LINE_LIMIT
                    raise BrokenProtocol(
                        f"the MCP server broke the protocol: a line of over {LINE_LIMIT} bytes "
                        "on its stdout"
                    ) from None
                if not line:
                    self.server.stdout_ended = True
                    return  # the server closed its stdout (it exited)
                if not line.strip():
                    continue
                try:
                    message = JSONRPCMessage.model_validate_json(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    shown = line[:60].decode("utf-8", errors="backslashreplace").rstrip()
                    raise BrokenProtocol(
                        "the MCP server broke the protocol: it wrote something that is not "
                        f"JSON-RPC to its stdout ({shown!r})"
                    ) from None
                await sink.send(SessionMessage(message))

    async def _write(self, writer: asyncio.StreamWriter, source: Any) -> None:
        async with source:
            async for session_message in source:
                data = session_message.message.model_dump_json(by_alias=True, exclude_none=True)
                writer.write(data.encode() + b"\n")
                await writer.drain()
