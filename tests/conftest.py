"""Shared test helpers: the real CLI in a subprocess, a clean environment, real files."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FAKE_SERVER = TESTS / "fake_tasty_agent.py"
FAKETIME = shutil.which("faketime")

# Variables a test may set; everything else of the host's environment is left out, so a
# developer's real credentials or config never leak into a test.
BASE_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")


@dataclass
class Workspace:
    """A working directory, a state directory and an environment for one test."""

    root: Path
    env: dict[str, str]

    @property
    def state(self) -> Path:
        return Path(self.env["TASTY_ONESHOT_STATE_DIR"])

    @property
    def record(self) -> Path:
        """Where the fake MCP server records its start and tool calls."""
        return self.root / "mcp-calls.jsonl"

    def fake_mcp_yaml(self, *extra: str) -> str:
        """The `mcp:` block of a jobs file that points at the fake tasty-agent server."""
        args = [str(FAKE_SERVER), str(self.record), *extra]
        return f"mcp:\n  command: {sys.executable}\n  args: {json.dumps(args)}\n"

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path

    def calls(self) -> list[dict]:
        """The tool calls the fake server received, in order."""
        if not self.record.exists():
            return []
        events = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [e for e in events if e["event"] == "call"]

    def server_starts(self) -> list[dict]:
        if not self.record.exists():
            return []
        events = [json.loads(line) for line in self.record.read_text().splitlines()]
        return [e for e in events if e["event"] == "start"]

    def cli(
        self, *args: str, at: str | None = None, timeout: float = 60, **popen
    ) -> subprocess.CompletedProcess:
        """Run `python -m tasty_oneshot ARGS` here; `at` fakes the clock ('2026-11-27 14:31:00'
        is read as UTC)."""
        return subprocess.run(
            self.command(*args, at=at),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **popen,
        )

    def popen(self, *args: str, at: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args, at=at),
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def command(self, *args: str, at: str | None = None) -> list[str]:
        cmd = [sys.executable, "-m", "tasty_oneshot", *args]
        if at is not None:
            if FAKETIME is None:
                pytest.skip("faketime is not installed (apt-get install faketime)")
            cmd = [FAKETIME, at, *cmd]
        return cmd

    def history(self, *args: str) -> list[dict]:
        result = self.cli("history", "--json", *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def clean_env(root: Path) -> dict[str, str]:
    """Nothing of the developer's environment (no real credentials or config), the host in
    UTC (its zone must not matter; faked times are read as UTC), state and home under root."""
    env = {k: os.environ[k] for k in BASE_ENV_KEEP if k in os.environ}
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        TZ="UTC",
        TASTY_ONESHOT_STATE_DIR=str(root / "state"),
        XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def make_workspace(root: Path) -> Workspace:
    work = root / "work"
    work.mkdir()
    return Workspace(root=work, env=clean_env(root))


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path)
