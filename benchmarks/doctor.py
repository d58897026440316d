"""What `tasty-oneshot doctor` costs: wall time and peak memory for a jobs file of 2 jobs on
the fake MCP server (tests/fake_tasty_agent.py), against `python -I -c pass`.

    .venv/bin/python benchmarks/doctor.py [-n 3]

Each round runs `doctor --json --env-file FILE` in a fresh workspace (a state directory with
no ledger yet, no timers installed, so the timer checks fail: exit 1 is expected) and reads
its peak RSS from wait4 (the largest of doctor and the children it waited for). Not a test:
figures depend on the machine.
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
FAKE_SERVER = ROOT / "tests" / "fake_tasty_agent.py"


def workspace(base: Path) -> tuple[dict[str, str], list[str]]:
    home = base / "home"
    home.mkdir()
    record = base / "calls.jsonl"
    args = json.dumps([str(FAKE_SERVER), str(record)])
    (base / "jobs.yaml").write_text(
        "model: openai:gpt-5-mini\n"
        f"mcp:\n  command: {sys.executable}\n  args: {args}\n"
        "jobs:\n"
        '  morning:\n    instructions: Check\n    schedule: "9:30am"\n    daily: true\n'
        '  closing:\n    instructions: Check\n    schedule: "3:55pm"\n    daily: true\n'
    )
    env_file = base / "timer.env"
    env_file.write_text(f"OPENAI_API_KEY=sk-bench\nTASTY_ONESHOT_STATE_DIR={base / 'state'}\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
    command = [
        sys.executable, "-m", "tasty_oneshot", "doctor", "--json",
        "--config", str(base / "jobs.yaml"), "--env-file", str(env_file),
    ]  # fmt: skip
    return env, command


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB (wait4's: the largest of the process and the children it
    waited for, the MCP server included), exit code."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3, help="rounds (default 3)")
    rounds = parser.parse_args().n
    base_walls = []
    for _ in range(rounds):
        wall, _, _ = measure([sys.executable, "-I", "-c", "pass"], dict(os.environ))
        base_walls.append(wall)
    walls, rss = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="doctor-bench-") as tmp:
            env, command = workspace(Path(tmp))
            wall, peak, code = measure(command, env)
            walls.append(wall)
            rss.append(peak)
            starts = (Path(tmp) / "calls.jsonl").read_text().count('"start"')
    print(f"python -I -c pass: {statistics.median(base_walls) * 1000:.0f} ms (median)")
    print(
        f"doctor, 2 jobs, fake MCP server: {statistics.median(walls):.2f} s median "
        f"(min {min(walls):.2f}, max {max(walls):.2f}), peak RSS {max(rss):.0f} MiB "
        f"(doctor or its largest child), exit {code}, MCP server started {starts} time(s) per run"
    )


if __name__ == "__main__":
    main()
