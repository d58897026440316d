"""How long `generate-units --all` takes for 200 jobs, warnings included.

    .venv/bin/python benchmarks/generate_units.py [-n 5] [--jobs 200]

Writes a jobs file of JOBS jobs with a mix of schedules (daily, anchored periods, hourly,
cron, one at 8am that warns it could never run), then times the real CLI for each target,
against `python -I -c pass` in the same run. Target (issue 3): under 2 s for 200 jobs.
Not a test: the figures depend on the machine.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "tasty-oneshot")
SCHEDULES = [
    'schedule: "9:30am"\n    daily: true',
    "market_open: true\n    period: 1800",
    "hourly: true",
    'cron: "*/15 9-16 * * 1-5"',
    'schedule: "8:00am"\n    daily: true',  # warns: could never run
    "period: 5400",
]


def jobs_yaml(count: int) -> str:
    lines = ["model: test", "jobs:"]
    for i in range(count):
        schedule = SCHEDULES[i % len(SCHEDULES)]
        lines.append(f"  job-{i}:\n    instructions: Check position {i}\n    {schedule}")
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "jobs.yaml"
        config.write_text(jobs_yaml(args.jobs))
        env = {**os.environ, "TASTY_ONESHOT_STATE_DIR": str(root / "state")}
        base = [CLI, "generate-units", "--no-env-file", "--all", "--config", str(config)]
        cases = {
            "python -I -c pass": [sys.executable, "-I", "-c", "pass"],
            f"systemd, {args.jobs} jobs": [
                *base,
                "--target",
                "systemd",
                "--output-dir",
                str(root / "units"),
            ],
            f"crontab, {args.jobs} jobs (UTC)": [*base, "--target", "crontab", "--cron-tz", "UTC"],
        }
        print(
            f"{args.runs} runs each; load average {os.getloadavg()[0]:.2f} on "
            f"{os.cpu_count()} CPUs\n"
        )
        print(f"{'case':<34} {'median s':>9} {'max s':>7}  target")
        for name, cmd in cases.items():
            times = timed(cmd, env, args.runs)
            median = statistics.median(times)
            target = "" if "pass" in name else ("< 2 s: met" if median < 2 else "< 2 s: MISSED")
            print(f"{name:<34} {median:9.3f} {max(times):7.3f}  {target}")
        written = len(list((root / "units").iterdir()))
        print(f"\nunits written: {written} ({args.jobs} timers + {args.jobs} services)")


if __name__ == "__main__":
    main()
