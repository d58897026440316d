"""A path with a control character never reaches a unit, a crontab line or the printed
commands: `generate-units` refuses it (exit 2, one line naming the option and the fix) for
every path it writes out, through the CLI. Odd but legal paths (spaces, quotes, `%`,
`$`) are checked with systemd-analyze in tests/test_systemd_units.py.

Without the refusal a newline in `--env-file` ends the `EnvironmentFile=` line and the rest
of the path becomes a directive of its own (`ExecStartPre=...`)."""

import os
import sys
from pathlib import Path

import pytest
from conftest import Workspace, call_cli, make_workspace

from tasty_oneshot import generate
from tasty_oneshot.errors import UsageError

# A newline that would start a directive, and other control characters.
CONTROLS = {
    "newline": "\nExecStartPre=",
    "carriage-return": "\rExecStartPre=",
    "escape": "\x1b[31m",
    "tab": "\t",
    "c1": "\x85",
}
TARGETS = ["systemd", "crontab"]
JOBS = (
    "model: openai:gpt-5-mini\n"
    "jobs:\n  check:\n    instructions: Check my positions\n"
    '    schedule: "9:30am"\n    daily: true\n'
)


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(ws: Workspace, *args: str, cwd: Path | None = None) -> str:
    """generate-units ARGS refused: exit 2, nothing on stdout, nothing written, no traceback;
    its one error line."""
    before = snapshot(ws.root)
    result = call_cli(("generate-units", *args), cwd=cwd or ws.root, env=ws.env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and " - ERROR - " in lines[0], result.stderr
    assert snapshot(ws.root) == before
    assert "control character" in lines[0], lines[0]
    return lines[0]


def says_the_fix(line: str) -> bool:
    return "rename or move it to a path without one" in line


def odd_dir(ws: Workspace, control: str) -> Path:
    """A directory whose name holds `control`, with a jobs file and an env file in it."""
    odd = ws.root / f"odd{control}dir"
    odd.mkdir()
    (odd / "jobs.yaml").write_text(JOBS)
    (odd / "creds.env").write_text("OPENAI_API_KEY=sk-x\n")
    (odd / "creds.env").chmod(0o600)
    return odd


@pytest.mark.parametrize("control", CONTROLS.values(), ids=CONTROLS.keys())
@pytest.mark.parametrize("target", TARGETS)
def test_an_env_file_path_with_a_control_character_is_refused(ws, target, control):
    ws.write("jobs.yaml", JOBS)
    odd = odd_dir(ws, control)
    line = refused(
        ws, "--job", "check", "--config", "jobs.yaml", "--target", target,
        "--env-file", str(odd / "creds.env"), "--output-dir", str(ws.root / "out"),
    )  # fmt: skip
    assert "--env-file" in line and says_the_fix(line)
    # The path as it is, escaped: where the control character sits, and which it is.
    assert repr(str(odd / "creds.env"))[1:-1] in line, line


@pytest.mark.parametrize("control", CONTROLS.values(), ids=CONTROLS.keys())
@pytest.mark.parametrize("target", TARGETS)
def test_a_jobs_file_path_with_a_control_character_is_refused(ws, target, control):
    odd = odd_dir(ws, control)
    line = refused(
        ws, "--job", "check", "--config", str(odd / "jobs.yaml"), "--target", target,
        "--no-env-file", "--output-dir", str(ws.root / "out"),
    )  # fmt: skip
    # paths.given_path refuses C0 characters in --config itself, before generate-units.
    assert "--config" in line


@pytest.mark.parametrize("control", ["\n", "\x01"], ids=["newline", "soh"])
def test_a_jobs_file_named_by_the_variable_is_named_so(ws, control):
    odd = odd_dir(ws, control)
    ws.env["TASTY_ONESHOT_CONFIG"] = str(odd / "jobs.yaml")
    line = refused(ws, "--job", "check", "--target", "systemd", "--no-env-file")
    assert "$TASTY_ONESHOT_CONFIG" in line


@pytest.mark.parametrize("control", ["\n", "\x7f"], ids=["newline", "del"])
@pytest.mark.parametrize("target", TARGETS)
def test_a_working_directory_with_a_control_character_is_refused(tmp_path, target, control):
    """Relative paths are made absolute against the working directory: its name goes into
    the unit with them, and with a jobs file found as ./tasty-oneshot.yaml."""
    ws = make_workspace(tmp_path)
    odd = odd_dir(ws, control)
    (odd / "tasty-oneshot.yaml").write_text(JOBS)
    line = refused(ws, "--job", "check", "--target", target, "--no-env-file", cwd=odd)
    assert "the jobs file" in line and says_the_fix(line)
    line = refused(
        ws, "--job", "check", "--config", "jobs.yaml", "--env-file", "creds.env",
        "--target", target, cwd=odd,
    )  # fmt: skip
    assert "--env-file" in line and says_the_fix(line)


@pytest.mark.parametrize("control", ["\n", "\x1b"], ids=["newline", "escape"])
@pytest.mark.parametrize("target", [*TARGETS, "kubernetes"])
def test_an_output_dir_with_a_control_character_is_refused(ws, target, control):
    ws.write("jobs.yaml", JOBS)
    extra = ["--image", "registry.example.org/t:1"] if target == "kubernetes" else ["--no-env-file"]
    line = refused(
        ws, "--job", "check", "--config", "jobs.yaml", "--target", target, *extra,
        "--output-dir", str(ws.root / f"units{control}cp -r / /tmp"),
    )  # fmt: skip
    assert "--output-dir" in line and says_the_fix(line)


@pytest.mark.parametrize("control", ["\n", "\x1b"], ids=["newline", "escape"])
@pytest.mark.parametrize("target", TARGETS)
def test_an_mcp_command_with_a_control_character_is_refused(ws, target, control):
    server = ws.root / f"mcp{control}bin" / "server"
    server.parent.mkdir()
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    ws.write(
        "jobs.yaml",
        JOBS.replace("jobs:", f"mcp:\n  command: {json_string(str(server))}\njobs:"),
    )
    line = refused(
        ws, "--job", "check", "--config", "jobs.yaml", "--target", target, "--no-env-file"
    )
    assert "job 'check'" in line and "mcp.command" in line and says_the_fix(line)


def json_string(text: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's)."""
    import json

    return json.dumps(text)


@pytest.mark.parametrize("control", ["\n", "\x1b"], ids=["newline", "escape"])
@pytest.mark.parametrize("target", TARGETS)
def test_a_tasty_oneshot_command_with_a_control_character_is_refused(
    tmp_path, monkeypatch, target, control
):
    """This installation's own path (the script beside this Python) goes into every unit
    and line; in-process, with sys.executable moved to such a directory."""
    bin_dir = tmp_path / f"venv{control}bin"
    bin_dir.mkdir()
    (bin_dir / "tasty-oneshot").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("TASTY_ONESHOT_")]:
        monkeypatch.delenv(name)
    request = generate.GenerateRequest(
        instructions=None, jobs=["check"], all_jobs=False, name=None, config=str(jobs),
        options={}, target=target, output_dir=None, system=False, env_file=None,
        cron_tz="UTC" if target == "crontab" else None, no_env_file=True,
    )  # fmt: skip
    with pytest.raises(UsageError) as raised:
        generate.generate_units(request)
    message = str(raised.value)
    assert "the tasty-oneshot command" in message and "control character" in message
    assert "\n" not in message and "\x1b" not in message
