"""A small stdio MCP server that mimics tasty-agent's tools and records every call.

    python fake_tasty_agent.py RECORD_FILE [--hang TOOL] [--wait-for FILE] [--crash]
        [--print-env] [--bad-stdout binary|text] [--ignore-sigterm] [--extra-tools]
        [--blank-lines] [--big-results BYTES]

Each line of RECORD_FILE is JSON: first {"event": "start", "pid", "ppid", "env"} (the names of the
environment variables it was given), then {"event": "call", "tool", "args"} per tool call.
--hang TOOL makes that tool sleep forever (for timeout and signal tests); --wait-for FILE makes
every tool call wait until FILE exists (a test does something mid-run, then lets it finish);
--crash exits before serving anything (a broken server); --print-env writes its whole
environment to stderr (a careless server: its log must not keep the secrets); --bad-stdout
writes, at each tool call, bytes that are not JSON-RPC to stdout (a broken protocol): `binary`
is not even UTF-8, `text` is a line of text;
--ignore-sigterm makes it ignore SIGTERM (it must be killed); --extra-tools adds two tools
tasty-agent lacks; --blank-lines writes blank lines to stdout at each tool call (between
messages, which a reader must pass over); --big-results BYTES makes account_overview's result
about that many bytes (a JSON-RPC line longer than asyncio's default limit of 64 KiB);
--weigh-like-tasty-agent imports the real tasty-agent first, so that it takes the real one's
time and memory to start (for benchmarks).
"""

import argparse
import json
import os
import signal
import sys
import time
from typing import Any, Literal

from mcp.server.fastmcp import FastMCP
from mcp.types import ToolAnnotations

parser = argparse.ArgumentParser()
parser.add_argument("record")
parser.add_argument("--hang", default=None)
parser.add_argument("--wait-for", default=None)
parser.add_argument("--crash", action="store_true")
parser.add_argument("--print-env", action="store_true")
parser.add_argument("--bad-stdout", choices=("binary", "text"))
parser.add_argument("--ignore-sigterm", action="store_true")
parser.add_argument("--extra-tools", action="store_true", help="add tools tasty-agent lacks")
parser.add_argument("--weigh-like-tasty-agent", action="store_true")
parser.add_argument("--blank-lines", action="store_true")
parser.add_argument("--big-results", type=int, default=0)
options = parser.parse_args()

if options.crash:
    sys.exit(3)
if options.weigh_like_tasty_agent:
    # Cost what the real server costs to start (seconds, ~130 MB): import it, serve ours.
    import tasty_agent.server  # noqa: F401


def record(event: dict[str, Any]) -> None:
    with open(options.record, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


if options.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if options.print_env:
    for key, value in sorted(os.environ.items()):
        print(f"{key}={value}", file=sys.stderr, flush=True)
record(
    {
        "event": "start",
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "env": sorted(os.environ),
        "time": time.time(),
    }
)
app = FastMCP("TastyTrade")


def called(tool: str, **args: Any) -> str:
    record({"event": "call", "tool": tool, "args": args})
    if options.bad_stdout:
        garbage = {"binary": b"\x00\xff\xfe\x89PNG\r\n\x1a\n", "text": b"hello from the server\n"}
        sys.stdout.buffer.write(garbage[options.bad_stdout])
        sys.stdout.buffer.flush()
    if options.blank_lines:
        sys.stdout.buffer.write(b"\n\r\n \t\n")
        sys.stdout.buffer.flush()
    if options.wait_for:
        while not os.path.exists(options.wait_for):
            time.sleep(0.05)
    if options.hang == tool:
        while True:
            time.sleep(1)
    return f"<{tool}>ok</{tool}>"


@app.tool()
def account_overview(include: list[Literal["balances", "positions"]] | None = None) -> str:
    """Balances and positions."""
    result = called("account_overview", include=include)
    if options.big_results:  # "<account_overview>ok...</account_overview>", padded by digits
        return result.replace("ok", "ok" + "0123456789" * (options.big_results // 10), 1)
    return result


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
