"""The real tasty-agent MCP server against the fake TastyTrade API, compared with the fake MCP
server (tests/fake_tasty_agent.py), in the same run: seconds from `tasty-oneshot run` to the
first tool result reaching the model, and the whole run.

    .venv/bin/python benchmarks/real_server.py [-n 3]

Each round runs `run --job check --ignore-market-hours` in a fresh workspace with the scripted
model of tests/openai_stub.py calling `account_overview` once. "First tool result" is when the
model's second request arrives (the stub stamps each request), which carries the tool's
result. The real server (tests/tasty_agent_launcher.py) logs in to the fake API
(tests/fake_tastytrade_api.py) at start-up and reads balances and positions over HTTP; the
fake server answers from memory. Not a test: figures depend on the machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from fake_tastytrade_api import CLIENT_SECRET, REFRESH_TOKEN, FakeTastytradeApi  # type: ignore[import-not-found]  # noqa: E402


def start_stub(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    calls = json.dumps([["account_overview", {}]])
    stub = subprocess.Popen(
        [sys.executable, str(TESTS / "openai_stub.py"), str(directory), "calls", calls]
    )
    port = directory / "port"
    deadline = time.monotonic() + 30
    while not port.exists():
        if stub.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the OpenAI stub did not start")
        time.sleep(0.02)
    return stub, f"http://127.0.0.1:{port.read_text()}/v1"


def one_run(base: Path, mcp_args: list[str], stub_url: str, stub_dir: Path) -> tuple[float, float]:
    """(seconds to the first tool result, seconds for the whole run)."""
    (base / "home").mkdir(parents=True)
    (base / "jobs.yaml").write_text(
        "model: openai-chat:stub\n"
        f"mcp:\n  command: {sys.executable}\n  args: {json.dumps(mcp_args)}\n"
        "jobs:\n  check:\n    instructions: Check my account\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(base / "home"),
        "LANG": "C.UTF-8",
        "TASTY_ONESHOT_STATE_DIR": str(base / "state"),
        "OPENAI_BASE_URL": stub_url,
        "OPENAI_API_KEY": "sk-bench",
        "TASTYTRADE_CLIENT_SECRET": CLIENT_SECRET,
        "TASTYTRADE_REFRESH_TOKEN": REFRESH_TOKEN,
    }
    requests = stub_dir / "requests.jsonl"
    requests.unlink(missing_ok=True)
    command = [sys.executable, "-m", "tasty_oneshot", "run", "--job", "check"]
    started = time.time()
    result = subprocess.run(
        [*command, "--config", str(base / "jobs.yaml"), "--ignore-market-hours"],
        env=env,
        cwd=base,
        capture_output=True,
        text=True,
    )
    whole = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"the run failed:\n{result.stderr}")
    arrived = [json.loads(line)["arrived"] for line in requests.read_text().splitlines()]
    return arrived[1] - started, whole


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3, help="rounds of each")
    rounds = parser.parse_args().n
    api = FakeTastytradeApi()
    with tempfile.TemporaryDirectory() as tmp:
        stub_dir = Path(tmp) / "stub"
        stub_dir.mkdir()
        stub, stub_url = start_stub(stub_dir)
        try:
            servers = {
                "fake server": [str(TESTS / "fake_tasty_agent.py"), str(Path(tmp) / "calls")],
                "real tasty-agent": [str(TESTS / "tasty_agent_launcher.py"), api.url, "stdio"],
            }
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
            for index in range(rounds):  # alternate, so load on the machine falls on both
                for name, args in servers.items():
                    base = Path(tmp) / f"{name.replace(' ', '-')}-{index}"
                    figures[name].append(one_run(base, args, stub_url, stub_dir))
        finally:
            stub.terminate()
            stub.wait()
            api.close()
    print(f"{rounds} rounds each, medians (min-max):")
    for name, runs in figures.items():
        first = [f for f, _ in runs]
        whole = [w for _, w in runs]
        print(
            f"  {name:17} first tool result {statistics.median(first):5.2f}s "
            f"({min(first):.2f}-{max(first):.2f}), whole run {statistics.median(whole):5.2f}s "
            f"({min(whole):.2f}-{max(whole):.2f})"
        )


if __name__ == "__main__":
    main()
