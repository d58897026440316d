"""A model provider's key that is set but empty (`OPENAI_API_KEY=`) is a missing key, for
`run` and `generate-units` alike, through the CLI: the same outcome and the same message
as when the variable is not set at all, never the provider client's own error."""

import re
import subprocess

import pytest

TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - ")
EMPTY = ["", " ", "\t"]  # what `OPENAI_API_KEY=` or a blank value in an env file gives


def jobs_file(ws) -> None:
    """One job on OpenAI's own API (no OPENAI_BASE_URL: the key is needed) and the fake MCP
    server (no TastyTrade credentials needed)."""
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai:gpt-5-mini\n"
        + ws.fake_mcp_yaml()
        + "jobs:\n  check:\n    instructions: Check my positions\n"
        + '    schedule: "9:30am"\n    daily: true\n',
    )


def outcome(ws, key: str | None, *args: str) -> tuple[int, str, list[str]]:
    """Exit code, stdout and the stderr lines without their time stamps, with
    OPENAI_API_KEY set to `key` (None: not set)."""
    ws.env.pop("OPENAI_API_KEY", None)
    if key is not None:
        ws.env["OPENAI_API_KEY"] = key
    result: subprocess.CompletedProcess = ws.call(*args)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return (
        result.returncode,
        result.stdout,
        [TIME.sub("", line) for line in result.stderr.splitlines()],
    )


GENERATE = {
    "crontab": ("--target", "crontab", "--cron-tz", "UTC", "--no-env-file"),
    "systemd": ("--target", "systemd", "--no-env-file"),
    "kubernetes": ("--target", "kubernetes", "--image", "registry.example.org/t:1"),
}


@pytest.mark.parametrize("key", EMPTY, ids=repr)
@pytest.mark.parametrize("target", sorted(GENERATE))
def test_generate_units_with_an_empty_key_does_as_with_no_key(ws, target, key):
    jobs_file(ws)
    args = ("generate-units", "--job", "check", *GENERATE[target])
    missing = outcome(ws, None, *args)
    assert missing[0] == 0, missing
    assert outcome(ws, key, *args) == missing


@pytest.mark.parametrize("key", EMPTY, ids=repr)
def test_generate_units_names_an_empty_key_among_what_a_timer_needs(ws, key):
    jobs_file(ws)
    args = ("generate-units", "--job", "check", "--target", "crontab", "--cron-tz", "UTC")
    missing = outcome(ws, None, *args)
    assert missing[0] == 2 and missing[1] == "", missing
    [line] = missing[2]
    assert "OPENAI_API_KEY" in line and "--env-file" in line, line
    assert outcome(ws, key, *args) == missing


@pytest.mark.parametrize("key", EMPTY, ids=repr)
def test_run_with_an_empty_key_is_the_missing_key_error(ws, key):
    jobs_file(ws)
    args = ("run", "--job", "check", "--ignore-market-hours")
    missing = outcome(ws, None, *args)
    assert missing[0] == 2 and missing[1] == "", missing
    [line] = missing[2]
    assert line.startswith("ERROR - job check: OPENAI_API_KEY not set"), line
    assert outcome(ws, key, *args) == missing
    assert ws.history() == []  # nothing ran: no row, no slot used up


def test_an_empty_key_in_dotenv_is_no_key_either(ws):
    """`OPENAI_API_KEY=` in ./.env sets the variable to "": the same as not setting it."""
    jobs_file(ws)
    args = ("generate-units", "--job", "check", *GENERATE["systemd"])
    missing = outcome(ws, None, *args)
    assert missing[0] == 0, missing
    ws.write(".env", "OPENAI_API_KEY=\n")
    assert outcome(ws, None, *args) == missing
