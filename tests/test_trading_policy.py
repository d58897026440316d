"""The trading policy: which broker tools the model is offered, and what reaches the broker.

The policy details run in-process: the real TradingPolicy around the real MCP toolset (built
by `agent.mcp_toolset`, as a run builds it) talking to the fake tasty-agent server, driven by
a scripted FunctionModel that looks at the tools it is offered and then calls some. One CLI
run per policy (in this process) shows the wiring from `--trading` / `trading:` to that
toolset.
"""

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import FAKE_SERVER
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tasty_oneshot.agent import mcp_toolset
from tasty_oneshot.jobs import McpServer
from tasty_oneshot.mcp_server import StdioServer
from tasty_oneshot.server_log import ServerLog
from tasty_oneshot.trading import TradingPolicy

ALL_TOOLS = {
    "account_overview",
    "get_history",
    "place_order",
    "replace_order",
    "cancel_order",
    "list_orders",
    "get_market_metrics",
    "market_status",
    "watchlist",
}
ORDER_TOOLS = {"place_order", "replace_order", "cancel_order"}
LEGS = [{"symbol": "SPY", "action": "Buy to Open", "quantity": 1}]


@dataclass
class Reply:
    """What the model got back for one of its tool calls."""

    tool: str
    outcome: str  # 'success', 'failed', 'retried', ...
    content: str


@dataclass
class PolicyRun:
    offered: list[set[str]]  # the tools offered at each model request
    replies: list[Reply]  # one per tool call the model made, in order
    server_calls: list[dict[str, Any]]  # what the fake server received
    output: str


def run_policy(
    tmp_path: Path, mode: str, turns: list[list[tuple[str, dict]]], *server_flags: str
) -> PolicyRun:
    """Run an agent under `mode`; at request i the model makes the tool calls turns[i], and
    after the last turn it answers 'done'."""
    record = tmp_path / f"calls-{mode}.jsonl"
    offered: list[set[str]] = []

    def model(messages: list, info: AgentInfo) -> ModelResponse:
        offered.append({tool.name for tool in info.function_tools})
        step = len(offered) - 1
        if step < len(turns):
            return ModelResponse(
                parts=[
                    ToolCallPart(tool, args, tool_call_id=f"call-{step}-{i}")
                    for i, (tool, args) in enumerate(turns[step])
                ]
            )
        return ModelResponse(parts=[TextPart("done")])

    # The server and toolset a run builds: a started stdio server, its pipes as the transport.
    server = StdioServer(
        sys.executable,
        [str(FAKE_SERVER), str(record), *server_flags],
        ServerLog(tmp_path / "x.log"),
    )
    server.start()
    try:
        toolset = TradingPolicy(mcp_toolset(McpServer(command=sys.executable), server), mode=mode)
        agent = Agent(FunctionModel(model), toolsets=[toolset])
        result = asyncio.run(agent.run("Do the task"))
    finally:
        server.stop()

    returns = {
        part.tool_call_id: part
        for message in result.all_messages()
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }
    replies = []
    for step, calls in enumerate(turns):
        for i, (tool, _args) in enumerate(calls):
            part = returns[f"call-{step}-{i}"]
            replies.append(Reply(tool, part.outcome, str(part.content)))
    events = [json.loads(line) for line in record.read_text().splitlines()]
    server_calls = [e for e in events if e["event"] == "call"]
    return PolicyRun(offered, replies, server_calls, result.output)


def refused_by_policy(reply: Reply) -> bool:
    return (
        reply.outcome == "failed"
        and "trading policy" in reply.content
        and ("forbids" in reply.content)
    )


# --- read-only (the default) ----------------------------------------------------------------


def test_read_only_offers_no_order_tools_and_refuses_watchlist_changes(tmp_path):
    run = run_policy(
        tmp_path,
        "read-only",
        [
            [("watchlist", {"action": "add", "name": "tech"})],
            [
                ("watchlist", {"action": "remove", "name": "tech"}),
                ("watchlist", {"action": "delete", "name": "tech"}),
            ],
            [("watchlist", {"action": "list"})],
        ],
    )
    # Offered at every request: everything but the order tools.
    assert run.offered and all(tools == ALL_TOOLS - ORDER_TOOLS for tools in run.offered)

    add, remove, delete, listing = run.replies
    for refused in (add, remove, delete):
        assert refused_by_policy(refused), refused
    assert "add" in add.content and "remove" in remove.content
    assert listing.outcome == "success" and listing.content == "<watchlist>ok</watchlist>"

    # Only the listing reached the broker; the refusals did not end the run.
    assert [(c["tool"], c["args"]["action"]) for c in run.server_calls] == [("watchlist", "list")]
    assert run.output == "done"
    assert len(run.offered) == 4  # the model was asked again after each refusal


def test_read_only_never_lets_an_order_tool_reach_the_broker(tmp_path):
    # A model that calls an order tool it was not offered (hallucinated, or injected by a
    # tool result) is told so and the run goes on; the broker never sees the call.
    run = run_policy(
        tmp_path,
        "read-only",
        [
            [
                ("place_order", {"legs": LEGS, "dry_run": True}),
                ("cancel_order", {"order_id": "42"}),
                ("account_overview", {}),
            ]
        ],
    )
    place, cancel, overview = run.replies
    assert place.outcome != "success" and cancel.outcome != "success"
    assert overview.outcome == "success"
    assert [c["tool"] for c in run.server_calls] == ["account_overview"]
    assert run.output == "done"


# --- dry-run ---------------------------------------------------------------------------------


def test_dry_run_offers_place_order_but_not_replace_or_cancel(tmp_path):
    run = run_policy(tmp_path, "dry-run", [[("list_orders", {})]])
    assert run.offered and all(
        tools == ALL_TOOLS - {"replace_order", "cancel_order"} for tools in run.offered
    )
    assert [c["tool"] for c in run.server_calls] == ["list_orders"]


def test_dry_run_sends_every_order_with_dry_run_true(tmp_path):
    run = run_policy(
        tmp_path,
        "dry-run",
        [
            [("place_order", {"legs": LEGS, "dry_run": False})],
            [("place_order", {"legs": LEGS})],
            [("place_order", {"legs": LEGS, "dry_run": True})],
            [("replace_order", {"order_id": "42"}), ("cancel_order", {"order_id": "42"})],
            [("watchlist", {"action": "add", "name": "tech"})],
        ],
    )
    orders = [c for c in run.server_calls if c["tool"] == "place_order"]
    assert len(orders) == 3
    for order in orders:
        assert order["args"]["dry_run"] is True
        assert order["args"]["legs"] == LEGS  # the rest of the order is passed on unchanged
    assert all(r.outcome == "success" for r in run.replies[:3])

    # replace/cancel are not offered and never reach the broker; a dry run changes nothing,
    # watchlists included.
    replace, cancel, watch_add = run.replies[3:]
    assert replace.outcome != "success" and cancel.outcome != "success"
    assert refused_by_policy(watch_add), watch_add
    assert {c["tool"] for c in run.server_calls} == {"place_order"}
    assert run.output == "done"


# --- live ------------------------------------------------------------------------------------


def test_live_offers_and_passes_on_everything(tmp_path):
    run = run_policy(
        tmp_path,
        "live",
        [
            [("place_order", {"legs": LEGS, "dry_run": False})],
            [("replace_order", {"order_id": "42"}), ("cancel_order", {"order_id": "43"})],
            [("watchlist", {"action": "add", "name": "tech"})],
        ],
    )
    assert run.offered and all(tools == ALL_TOOLS for tools in run.offered)
    assert all(r.outcome == "success" for r in run.replies), run.replies
    by_tool = {c["tool"]: c["args"] for c in run.server_calls}
    assert by_tool == {
        "place_order": {"legs": LEGS, "dry_run": False},
        "replace_order": {"order_id": "42"},
        "cancel_order": {"order_id": "43"},
        "watchlist": {"action": "add", "name": "tech"},
    }
    assert run.output == "done"


# --- the wiring through the CLI --------------------------------------------------------------
# `--model test` is pydantic-ai's TestModel: it calls every tool it is offered, once.


@pytest.mark.parametrize(
    ("job_key", "flag", "expected"),
    [
        # no trading anywhere: read-only
        (None, None, "read-only"),
        # the command line overrides the job's key, towards the safer mode here
        ("live", "dry-run", "dry-run"),
        # the job's key alone
        ("live", None, "live"),
    ],
)
def test_cli_applies_the_trading_policy(ws, job_key, flag, expected):
    job = "    instructions: Check my positions\n"
    if job_key:
        job += f"    trading: {job_key}\n"
    ws.write("tasty-oneshot.yaml", "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n  check:\n" + job)
    args = ["run", "--job", "check", "--ignore-market-hours"]
    if flag:
        args += ["--trading", flag]
    result = ws.call(*args)
    assert result.returncode == 0, result.stderr

    called = {c["tool"] for c in ws.calls()}
    orders = [c for c in ws.calls() if c["tool"] == "place_order"]
    if expected == "read-only":
        assert called == ALL_TOOLS - ORDER_TOOLS
    elif expected == "dry-run":
        assert called == ALL_TOOLS - {"replace_order", "cancel_order"}
        assert orders and all(o["args"]["dry_run"] is True for o in orders)
    else:
        assert called == ALL_TOOLS
        # TestModel asks for dry_run false: live passes that on, so the dry-run case above
        # shows the policy forcing it.
        assert orders and all(o["args"]["dry_run"] is False for o in orders)
    # Whatever watchlist action the model chose, a non-live run lets only 'list' through.
    if expected != "live":
        assert all(c["args"]["action"] == "list" for c in ws.calls() if c["tool"] == "watchlist")
    [row] = ws.history()
    assert row["status"] == "ok" and row["trading"] == expected


# --- tools the policy does not know ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["read-only", "dry-run"])
def test_an_unknown_tool_is_offered_only_when_its_server_declares_it_read_only(tmp_path, mode):
    # transfer_funds changes the account without saying so; get_news is declared read-only.
    run = run_policy(tmp_path, mode, [[("get_news", {"symbol": "SPY"})]], "--extra-tools")
    assert all("get_news" in tools and "transfer_funds" not in tools for tools in run.offered)
    assert [c["tool"] for c in run.server_calls] == ["get_news"]


def test_live_offers_unknown_tools_too(tmp_path):
    run = run_policy(tmp_path, "live", [[("transfer_funds", {"amount": 5})]], "--extra-tools")
    assert all({"get_news", "transfer_funds"} <= tools for tools in run.offered)
    assert [c["tool"] for c in run.server_calls] == ["transfer_funds"]


@pytest.mark.parametrize(
    ("mode", "name"),
    [("read-only", "place_order"), ("read-only", "cancel_order"), ("dry-run", "replace_order")],
)
def test_an_order_tool_a_server_calls_read_only_is_still_not_offered(mode, name):
    from types import SimpleNamespace

    from tasty_oneshot.trading import offered

    mislabelled = SimpleNamespace(
        tool_def=SimpleNamespace(metadata={"annotations": {"readOnlyHint": True}})
    )
    assert not offered(mode, name, mislabelled)
    assert offered(mode, "get_news", mislabelled)  # an unknown read-only tool still is


@pytest.mark.parametrize(
    ("mode", "name", "args"),
    [
        ("read-only", "place_order", {"legs": LEGS}),
        ("read-only", "cancel_order", {"order_id": "1"}),
        ("dry-run", "replace_order", {"order_id": "1"}),
        ("dry-run", "cancel_order", {"order_id": "1"}),
    ],
)
def test_the_policy_itself_refuses_a_tool_it_did_not_offer(mode, name, args):
    # pydantic-ai would refuse an unknown tool before the policy sees it; here the wrapper is
    # called directly, as a toolset composed around it would call it, so only its own check
    # stands between the call and the broker.
    from types import SimpleNamespace

    from pydantic_ai.exceptions import ToolFailed

    reached: list[str] = []

    class Broker:
        async def call_tool(self, name, tool_args, ctx, tool):
            reached.append(name)
            return "done"

    tool = SimpleNamespace(tool_def=SimpleNamespace(metadata=None))
    policy = TradingPolicy(Broker(), mode=mode)
    with pytest.raises(ToolFailed, match=f"the trading policy '{mode}' forbids {name}"):
        asyncio.run(policy.call_tool(name, args, None, tool))
    assert reached == []
    # The same call under live reaches the broker: the refusal above was the policy's.
    asyncio.run(TradingPolicy(Broker(), mode="live").call_tool(name, args, None, tool))
    assert reached == [name]
