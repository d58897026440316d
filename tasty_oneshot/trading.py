"""The trading policy: a wrapper around the broker's toolset, composed once.

read-only  offers tasty-agent's read tools only, and refuses watchlist changes (the default:
           an unattended model with order tools is a real risk).
dry-run    adds place_order, and every call reaches the broker with dry_run=true; no
           replace/cancel; watchlist changes refused, since a dry run changes nothing.
live       offers and allows everything.

read-only and dry-run are allow-lists, not deny-lists: a tool they do not know (from a newer
tasty-agent or another MCP server) is offered only if its server declares it read-only
(the MCP `readOnlyHint` annotation). A refused call fails that tool call with a message the
model sees; the run goes on.
"""

from dataclasses import dataclass
from typing import Any

from pydantic_ai import RunContext
from pydantic_ai.exceptions import ToolFailed
from pydantic_ai.toolsets import ToolsetTool, WrapperToolset

# tasty-agent's tools that only read the account or the market (watchlist: `list` only).
READ_TOOLS = frozenset(
    {
        "account_overview",
        "get_history",
        "list_orders",
        "get_quotes",
        "get_greeks",
        "get_market_metrics",
        "market_status",
        "search_symbols",
        "watchlist",
    }
)
ALLOWED = {"read-only": READ_TOOLS, "dry-run": READ_TOOLS | {"place_order"}}
# Never offered under these policies, whatever a server says about them.
ORDER_TOOLS = frozenset({"place_order", "replace_order", "cancel_order"})
DENIED = {"read-only": ORDER_TOOLS, "dry-run": ORDER_TOOLS - {"place_order"}}


def offered(mode: str, name: str, tool: ToolsetTool[Any]) -> bool:
    """Whether the policy lets the model see (and so call) this tool."""
    if mode == "live" or name in ALLOWED[mode]:
        return True
    if name in DENIED[mode]:
        return False
    annotations = (tool.tool_def.metadata or {}).get("annotations") or {}
    return annotations.get("readOnlyHint") is True


@dataclass
class TradingPolicy(WrapperToolset[Any]):
    mode: str = "read-only"

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        tools = await self.wrapped.get_tools(ctx)
        return {name: tool for name, tool in tools.items() if offered(self.mode, name, tool)}

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        if not offered(self.mode, name, tool):
            raise ToolFailed(f"the trading policy '{self.mode}' forbids {name}")
        if name == "watchlist" and self.mode != "live" and tool_args.get("action") != "list":
            raise ToolFailed(
                f"the trading policy '{self.mode}' forbids watchlist action "
                f"'{tool_args.get('action')}'; only 'list' is allowed"
            )
        if name == "place_order" and self.mode == "dry-run":
            tool_args = {**tool_args, "dry_run": True}
        return await self.wrapped.call_tool(name, tool_args, ctx, tool)
