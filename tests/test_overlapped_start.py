"""A run that goes ahead spawns its MCP server before it imports pydantic-ai (issue 10), so
the server's own imports overlap the client's; and it spawns nothing before the market says
the run goes ahead. The order is observed, not timed: tests/import_gate holds the CLI's import
of pydantic_ai until the fake server has written its start record."""

import json
import os
import sys
from pathlib import Path

from conftest import FAKE_SERVER

GATE_DIR = Path(__file__).resolve().parent / "import_gate"


def gated(ws, record: Path) -> None:
    ws.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GATE_DIR), ws.env.get("PYTHONPATH")]))
    ws.env["IMPORT_GATE_FILE"] = str(record)
    args = json.dumps([str(FAKE_SERVER), str(record)])
    ws.write(
        "tasty-oneshot.yaml",
        "model: test\njobs:\n  check:\n    instructions: Check\n"
        f"    mcp:\n      command: {sys.executable}\n      args: {args}\n",
    )


def test_the_mcp_server_is_spawned_before_pydantic_ai_is_imported(ws):
    record = ws.root / "server.jsonl"
    gated(ws, record)
    result = ws.cli("run", "--job", "check", "--ignore-market-hours", "--timeout", "120")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["event"] for line in record.read_text().splitlines()]
    assert events[0] == "start" and "call" in events


def test_a_market_closed_skip_spawns_no_server_and_imports_no_pydantic_ai(ws):
    record = ws.root / "server.jsonl"
    gated(ws, record)
    result = ws.cli("run", "--job", "check", "--timeout", "120", at="2026-11-26 15:00:00")
    assert result.returncode == 0, result.stderr
    assert "market closed" in result.stderr
    assert not record.exists()
