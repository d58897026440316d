"""The real tasty-agent MCP server, end to end, against a fake TastyTrade HTTP API.

The product runs as a timer runs it (the CLI in a subprocess, the scripted model of
openai_stub.py); the MCP server is the installed tasty-agent, started by
tasty_agent_launcher.py with the tastytrade SDK pointed at fake_tastytrade_api.py.
"""

import json
import re
import sys
import time

import pytest
from conftest import TESTS, closed_port
from fake_tastytrade_api import ACCOUNT, CASH, NET_LIQ, FakeTastytradeApi

from tasty_oneshot.trading import ORDER_TOOLS, READ_TOOLS

LAUNCHER = TESTS / "tasty_agent_launcher.py"
RUN = ("run", "--job", "check", "--ignore-market-hours")
LEG = {"symbol": "SPY", "action": "Buy to Open", "quantity": 1}


@pytest.fixture(scope="module")
def api():
    server = FakeTastytradeApi()
    yield server
    server.close()


@pytest.fixture
def broker(api, ws, stub):
    """The fake API, fresh, and a job `check` whose MCP server is the real tasty-agent."""
    api.reset()
    ws.env["TASTYTRADE_CLIENT_SECRET"] = api.client_secret
    ws.env["TASTYTRADE_REFRESH_TOKEN"] = api.refresh_token
    jobs(ws, api.url)
    return api


def jobs(ws, api_url: str) -> None:
    args = json.dumps([str(LAUNCHER), api_url, "stdio"])
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n"
        f"mcp:\n  command: {sys.executable}\n  args: {args}\n"
        "jobs:\n  check:\n    instructions: Check my account\n    timeout: 120\n",
    )


def tool_results(stub) -> list[str]:
    """The tool results (and retry prompts) the model was sent, in the last request."""
    messages = stub.requests()[-1]["messages"]
    return [json.dumps(m["content"]) for m in messages if m["role"] == "tool"]


def mcp_log(ws) -> str:
    return (ws.state / "logs" / "check.mcp.log").read_text()


def test_account_overview_reaches_the_model_and_the_output_and_no_order_endpoint(ws, stub, broker):
    stub.mode("calls", json.dumps([["account_overview", {}]]))
    result = ws.cli(*RUN)
    assert result.returncode == 0, result.stderr
    [sent] = tool_results(stub)
    assert NET_LIQ in sent and CASH in sent
    assert NET_LIQ in result.stdout
    paths = broker.paths()
    assert paths[:2] == ["/oauth/token", "/customers/me/accounts"]
    assert f"/accounts/{ACCOUNT}/balances/USD" in paths
    assert f"/accounts/{ACCOUNT}/positions" in paths
    assert not [p for p in paths if "/orders" in p]
    [row] = ws.history()
    assert row["status"] == "ok" and row["usage"]["tool_calls"] == 1


def test_dry_run_place_order_reaches_the_broker_only_as_a_dry_run(ws, stub, broker):
    # the model asks for a real order; the policy makes it a dry run
    stub.mode("calls", json.dumps([["place_order", {"legs": [LEG], "dry_run": False}]]))
    result = ws.cli(*RUN, "--trading", "dry-run")
    assert result.returncode == 0, result.stderr
    posted = broker.paths("POST")
    assert f"/accounts/{ACCOUNT}/orders/dry-run" in posted
    assert f"/accounts/{ACCOUNT}/orders" not in posted
    [sent] = tool_results(stub)
    assert "Buy to Open 1 SPY" in sent and "bp_effect" in sent
    assert "Buy to Open 1 SPY" in result.stdout


def test_refused_credentials_fail_at_once_saying_what_tastytrade_answered(ws, stub, broker):
    wrong = "wrong-refresh-token-7f3a"
    ws.env["TASTYTRADE_REFRESH_TOKEN"] = wrong
    # a broker that echoes what it was sent: the reason must not carry it
    body = {"error_code": "invalid_grant", "error_description": f"Grant revoked: {wrong}"}
    broker.fail("/oauth/token", 401, body)
    started = time.monotonic()
    result = ws.cli(*RUN)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert took < 60, took  # the job's timeout is 120 s
    [row] = ws.history()
    reason = row["reason"]
    assert row["status"] == "failed", reason
    assert "TastyTrade authentication failed" in reason, reason
    assert "401 Unauthorized to POST /oauth/token" in reason, reason
    assert "Grant revoked: ***" in reason and wrong not in reason, reason
    assert "MCP server log:" in reason and "\n" not in reason
    assert wrong not in mcp_log(ws) and wrong not in result.stderr
    assert broker.paths() == ["/oauth/token"]  # refused credentials are not tried again
    assert stub.requests() == []  # the model was never asked


def test_unreachable_broker_is_started_once_more_and_the_second_failure_is_the_reason(ws, stub):
    ws.env["TASTYTRADE_CLIENT_SECRET"], ws.env["TASTYTRADE_REFRESH_TOKEN"] = "s", "t"
    jobs(ws, f"http://127.0.0.1:{closed_port()}")
    result = ws.cli(*RUN)
    assert result.returncode == 1, result.stderr
    [row] = ws.history()
    reason = row["reason"]
    assert re.search(r"TastyTrade could not be reached: [\w.]*ConnectError: All connection", reason)
    assert "starting it once more" in result.stderr
    assert mcp_log(ws).count("Failed to authenticate with Tastytrade") == 2


def test_a_broker_that_drops_the_first_login_is_reached_by_the_second_start(ws, stub, broker):
    broker.drop("/oauth/token", 1)
    stub.mode("calls", json.dumps([["account_overview", {}]]))
    result = ws.cli(*RUN)
    assert result.returncode == 0, result.stderr
    assert broker.paths().count("/oauth/token") == 2
    assert NET_LIQ in result.stdout


def test_unknown_account_id_is_named_in_the_reason(ws, stub, broker):
    ws.env["TASTYTRADE_ACCOUNT_ID"] = "5WT99999"
    result = ws.cli(*RUN)
    assert result.returncode == 1, result.stderr
    [row] = ws.history()
    assert re.search(r"Account '5WT99999' not found", row["reason"]), row["reason"]
    assert ACCOUNT in row["reason"]  # and the ones there are


def test_a_500_from_a_tools_endpoint_fails_that_call_and_the_run_goes_on(ws, stub, broker):
    broker.fail(f"/accounts/{ACCOUNT}/positions", 500)
    stub.mode("calls", json.dumps([["account_overview", {}]]))
    result = ws.cli(*RUN)
    assert result.returncode == 0, result.stderr
    [sent] = tool_results(stub)
    assert "fake 500" in sent  # the model was told, and answered
    assert "account_overview: " in result.stdout and "fake 500" in result.stdout
    [row] = ws.history()
    assert row["status"] == "ok"


def test_every_tool_of_the_real_server_is_classified_by_the_trading_policy(api, tmp_path):
    """A new tasty-agent tool fails here instead of being offered under read-only unseen."""
    import anyio
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    api.reset()
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(LAUNCHER), api.url, "stdio"],
        env={
            "HOME": str(tmp_path),
            "TASTYTRADE_CLIENT_SECRET": api.client_secret,
            "TASTYTRADE_REFRESH_TOKEN": api.refresh_token,
        },
    )

    async def names() -> set[str]:
        with (tmp_path / "server.log").open("w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return {tool.name for tool in (await session.list_tools()).tools}

    tools = anyio.run(names)
    assert READ_TOOLS.isdisjoint(ORDER_TOOLS)
    assert tools == READ_TOOLS | ORDER_TOOLS, (
        f"not classified in trading.py: {sorted(tools - READ_TOOLS - ORDER_TOOLS)}; "
        f"gone from tasty-agent: {sorted(READ_TOOLS | ORDER_TOOLS - tools)}"
    )
