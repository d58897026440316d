"""The whole path of one run through the CLI (in this process: tests/test_run_lifecycle.py runs
the same happy path in a process of its own): the happy path and the market's answer."""


def test_job_runs_agent_against_mcp_server_and_records_ok(ws):
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n"
        + ws.fake_mcp_yaml()
        + ("jobs:\n  check:\n    instructions: Check my positions\n"),
    )
    result = ws.call("run", "--job", "check", "--ignore-market-hours")
    assert result.returncode == 0, result.stderr
    assert "account_overview" in result.stdout
    [row] = ws.history()
    assert row["job"] == "check" and row["status"] == "ok" and row["exit_code"] == 0
    assert row["usage"]["tool_calls"] == len(ws.calls()) > 0


def test_thanksgiving_is_a_skip_that_never_starts_the_mcp_server(ws):
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\n"
        + ws.fake_mcp_yaml()
        + ("jobs:\n  check:\n    instructions: Check my positions\n"),
    )
    result = ws.call("run", "--job", "check", at="2026-11-26 15:00:00")
    assert result.returncode == 0, result.stderr
    assert "offline NYSE calendar" in result.stderr
    assert ws.server_starts() == []
    [row] = ws.history()
    assert row["status"] == "skipped" and "market closed" in row["reason"]
