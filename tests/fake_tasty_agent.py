"""A small stdio MCP server that mimics tasty-agent's tools and records every call.

    python fake_tasty_agent.py RECORD_FILE [--hang TOOL] [--crash]

Each line of RECORD_FILE is JSON: first {"event": "start", "pid", "env"} (the names of the
environment variables it was given), then {"event": "call", "tool", "args"} per tool call.
--hang TOOL makes that tool sleep forever (for timeout and signal tests); --crash exits
before serving anything (a broken server); --extra-tools adds two tools tasty-agent lacks.
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Literal

from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

parser = argparse.ArgumentParser()
parser.add_argument("record")
parser.add_argument("--hang", default=None)
parser.add_argument("--crash", action="store_true")
parser.add_argument("--extra-tools", action="store_true", help="add tools tasty-agent lacks")
options = parser.parse_args()

if options.crash:
    sys.exit(3)


def record(event: dict[str, Any]) -> None:
    with open(options.record, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


record({"event": "start", "pid": os.getpid(), "env": sorted(os.environ)})
app = FastMCP("TastyTrade")


def called(tool: str, **args: Any) -> str:
    record({"event": "call", "tool": tool, "args": args})
    if options.hang == tool:
        while True:
            time.sleep(1)
    return f"<{tool}>ok</{tool}>"


@app.tool()
def account_overview(include: list[Literal["balances", "positions"]] | None = None) -> str:
    """Balances and positions."""
    return called("account_overview", include=include)


@app.tool()
def get_history(type: Literal["transactions", "orders"], days: int | None = None) -> str:
    """Transactions or order history."""
    return called("get_history", type=type, days=days)


@app.tool()
def place_order(legs: list[dict[str, Any]], dry_run: bool = False) -> str:
    """Place an order."""
    return called("place_order", legs=legs, dry_run=dry_run)


@app.tool()
def replace_order(order_id: str) -> str:
    """Replace a live order."""
    return called("replace_order", order_id=order_id)


@app.tool()
def cancel_order(order_id: str) -> str:
    """Cancel a live order."""
    return called("cancel_order", order_id=order_id)


@app.tool()
def list_orders() -> str:
    """Live orders."""
    return called("list_orders")


@app.tool()
def get_market_metrics(symbols: list[str]) -> str:
    """IV rank and other metrics."""
    return called("get_market_metrics", symbols=symbols)


@app.tool()
def market_status() -> str:
    """Market sessions."""
    return called("market_status")


@app.tool()
def watchlist(action: Literal["list", "add", "remove", "delete"], name: str | None = None) -> str:
    """List or change watchlists."""
    return called("watchlist", action=action, name=name)


if options.extra_tools:
    # Tools a newer tasty-agent or another server might add: one that changes the account
    # without saying so, and one its server declares read-only.
    @app.tool()
    def transfer_funds(amount: float) -> str:
        """Move money out of the account."""
        return called("transfer_funds", amount=amount)

    @app.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def get_news(symbol: str) -> str:
        """Headlines for a symbol."""
        return called("get_news", symbol=symbol)


if __name__ == "__main__":
    app.run("stdio")
