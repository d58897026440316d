"""The README's first set-up command: the main job, offline, with no credentials, from any
directory, writing nothing outside the state directory."""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from conftest import clean_env

ROOT = Path(__file__).resolve().parent.parent
DEMO_LOG = Path("/tmp/tasty-oneshot-demo-calls.jsonl")  # where an older demo wrote its calls


def first_setup_command() -> str:
    """The command under `# 1.` in the README's set-up block."""
    block = re.search(
        r"## Set-up: two commands.*?```sh\n(.*?)```", ROOT.joinpath("README.md").read_text(), re.S
    )
    assert block, "the README has no set-up block"
    commands = [line for line in block[1].splitlines() if line and not line.startswith("#")]
    return commands[0]


def test_the_first_setup_command_runs_the_offline_demo_from_any_directory(tmp_path):
    command = first_setup_command()
    tail = re.search(r"uv run (tasty-oneshot run .*)$", command)
    assert tail, command
    args = tail[1].split()[1:]  # run --job demo --config examples/offline-demo.yaml
    config = args[args.index("--config") + 1]
    assert not os.path.isabs(config)
    args[args.index("--config") + 1] = str(ROOT / config)  # as `cd elsewhere` would need
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(tmp_path)  # no credentials, no model key
    # `uv run` puts the environment's bin first on PATH: the demo's `python3` is that one.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    existed = DEMO_LOG.exists()
    result = subprocess.run(
        [sys.executable, "-m", "tasty_oneshot", *args], cwd=elsewhere, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the demo printed no output"
    assert existed or not DEMO_LOG.exists(), "the demo wrote its calls into /tmp"
    assert list(elsewhere.iterdir()) == []  # nothing in the working directory either
    for path in (tmp_path / "state").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
