"""The trading policy: a wrapper around the broker's toolset, composed once.

read-only  offers no order tools and refuses watchlist changes (the default: an unattended
           model with order tools is a real risk).
dry-run    offers place_order, but every call reaches the broker with dry_run=true; no
           replace/cancel; watchlist changes refused, since a dry run changes nothing.
live       offers and allows everything.

A refused call fails the tool call with a message the model sees; the run goes on.
"""

from dataclasses import dataclass
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.exceptions import ToolFailed
from pydantic_ai.toolsets import ToolsetTool, WrapperToolset

ORDER_TOOLS = frozenset({"place_order", "replace_order", "cancel_order"})
NOT_OFFERED = {
    "read-only": ORDER_TOOLS,
    "dry-run": frozenset({"replace_order", "cancel_order"}),
    "live": frozenset(),
}


@dataclass
class TradingPolicy(WrapperToolset[Any]):
    mode: str = "read-only"

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        tools = await self.wrapped.get_tools(ctx)
        return {name: tool for name, tool in tools.items() if name not in NOT_OFFERED[self.mode]}

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        if name in NOT_OFFERED[self.mode]:
            raise ToolFailed(f"the trading policy '{self.mode}' forbids {name}")
        if name == "watchlist" and self.mode != "live" and tool_args.get("action") != "list":
            raise ToolFailed(
                f"the trading policy '{self.mode}' forbids watchlist action "
                f"'{tool_args.get('action')}'; only 'list' is allowed"
            )
        if name == "place_order" and self.mode == "dry-run":
            tool_args = {**tool_args, "dry_run": True}
        return await self.wrapped.call_tool(name, tool_args, ctx, tool)
