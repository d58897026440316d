"""Live progress in the log while the agent works: a line per model request and per tool
call as it happens (the tool's name and duration, never its arguments), and a closing line
with the run's duration, requests, tokens and cost."""

import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.toolsets import ToolsetTool, WrapperToolset

from tasty_oneshot.errors import one_line

log = logging.getLogger("tasty_oneshot")


@dataclass
class LoggedTools(WrapperToolset[Any]):
    """Logs each tool call of the wrapped toolset when it ends."""

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        started = time.monotonic()
        try:
            result = await self.wrapped.call_tool(name, tool_args, ctx, tool)
        except Exception as exc:
            log.info(
                "tool %s failed after %.1fs: %s", name, time.monotonic() - started, one_line(exc)
            )
            raise
        log.info("tool %s done in %.1fs", name, time.monotonic() - started)
        return result


class RequestClock:
    """Times the model requests of one run from the agent graph's nodes."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._request_started: float | None = None
        self.requests = 0

    def saw(self, node: object, usage: Any) -> None:
        """Called with each node as the run reaches it."""
        from pydantic_ai import ModelRequestNode

        if self._request_started is not None:
            self.requests += 1
            log.info(
                "model request %d answered in %.1fs (%d tokens so far)",
                self.requests,
                time.monotonic() - self._request_started,
                usage.input_tokens + usage.output_tokens,
            )
            self._request_started = None
        if isinstance(node, ModelRequestNode):
            self._request_started = time.monotonic()
            log.info("model request %d sent", self.requests + 1)

    def summary(self, usage: Any, cost: float | None) -> None:
        priced = f"${cost:.4f}" if cost is not None else "cost unknown"
        log.info(
            "agent finished in %.1fs: %d requests, %d tokens (%d in, %d out), %d tool calls, %s",
            time.monotonic() - self.started,
            usage.requests,
            usage.input_tokens + usage.output_tokens,
            usage.input_tokens,
            usage.output_tokens,
            usage.tool_calls,
            priced,
        )
