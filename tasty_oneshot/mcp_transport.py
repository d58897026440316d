"""MCP over the pipes of a server process that is already running (see mcp_server.py).

Like the MCP SDK's stdio client, but adopting a process rather than spawning one, and strict:
a line on the server's stdout that is not a JSON-RPC message raises BrokenProtocol in the
session's task, which fastmcp passes on to the waiting call, so the run fails at once.
"""

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastmcp.client.transports import ClientTransport
from mcp import ClientSession
from mcp.shared.message import SessionMessage
from mcp.types import JSONRPCMessage

from tasty_oneshot.mcp_server import LINE_LIMIT, BrokenProtocol


class PipeTransport(ClientTransport):
    def __init__(self, process: "subprocess.Popen[bytes]", label: str) -> None:
        self.process, self.label = process, label

    def __repr__(self) -> str:
        return f"<PipeTransport {self.label}>"

    @contextlib.asynccontextmanager
    async def connect_session(self, **session_kwargs: Any) -> AsyncIterator[ClientSession]:
        incoming_writer, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        outgoing, outgoing_reader = anyio.create_memory_object_stream[SessionMessage](0)
        reader, writer = await self._pipes()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._read, reader, incoming_writer)
            tasks.start_soon(self._write, writer, outgoing_reader)
            try:
                async with ClientSession(incoming, outgoing, **session_kwargs) as session:
                    yield session
            finally:
                tasks.cancel_scope.cancel()
                writer.close()

    async def _pipes(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT, loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), self.process.stdout
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, self.process.stdin
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
