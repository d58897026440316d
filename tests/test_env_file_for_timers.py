"""`generate-units` gives the timer what it needs: the env file read as the timer will read it,
the crontab lines in the cron daemon's zone, and a warning for what a unit's private /tmp hides.

systemd's reading of an env file is checked against systemd itself: its environment.d
generator reads files with the same parser as `EnvironmentFile=` (src/basic/env-file.c), so
for values without `$` (which environment.d expands and EnvironmentFile= does not) it says
what a unit's service would get.
"""

import os
import subprocess
from pathlib import Path

import pytest
from conftest import Workspace

from tasty_oneshot import env_file
from tasty_oneshot.generate import _in_private_tmp, systemd_reads_otherwise
from tasty_oneshot.units import crontab, systemd

GENERATOR = Path("/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator")
NEEDS_GENERATOR = pytest.mark.skipif(
    not os.access(GENERATOR, os.X_OK), reason="systemd's environment.d generator is not here"
)
# A job on OpenAI's own API with the tasty-agent server: it needs all three.
CREDENTIALS = ("OPENAI_API_KEY", "TASTYTRADE_CLIENT_SECRET", "TASTYTRADE_REFRESH_TOKEN")
JOB = '  check:\n    instructions: Check my positions\n    schedule: "9:30am"\n    daily: true\n'
COMPLETE = "OPENAI_API_KEY='sk-file-5150'\nTASTYTRADE_CLIENT_SECRET=cs-file-5150\n" + (
    "TASTYTRADE_REFRESH_TOKEN=rt-file-5150\n"
)


def jobs_file(ws: Workspace, *, top: str = "model: openai:gpt-5-mini\n", job: str = JOB) -> None:
    ws.write("tasty-oneshot.yaml", top + "jobs:\n" + job)


def env(ws: Workspace, text: str) -> str:
    path = ws.write("timer.env", text)
    path.chmod(0o600)
    return str(path)


def generate(ws: Workspace, target: str, *args: str) -> subprocess.CompletedProcess:
    extra = ("--cron-tz", "UTC") if target == "crontab" else ("--output-dir", "units")
    return ws.call("generate-units", "--job", "check", "--target", target, *extra, *args)


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one error line of a refusal (exit 2, no traceback, nothing printed or written)."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and " - ERROR - " in lines[0], result.stderr
    assert result.stdout == ""
    return lines[0]


def warnings(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if " - WARNING - " in line]


# --- what systemd's EnvironmentFile= reads ----------------------------------------------------

# Each a file setting T (or, by systemd's rules, not setting it); no `$` (see the docstring),
# and no empty value (environment.d unsets a variable with one, EnvironmentFile= sets it empty).
SYSTEMD_READS = [
    "T=plain\n",
    'T="dq \\" \\\\ \\n \\x end"\n',
    "T='sq \\ \\\\ x'\n",
    "T=unq\\zv\n",
    "T=abc # not a comment\n",
    'T="abc" # c\n',
    'T="abc"def\n',
    "T=  spaced  \n",
    "T='multi\nline'\n",
    "T=a\\\nb\n",
    "T= #c\n",
    'T=a"b"c\n',
    "export T=x\n",
    "  T = v \n",
    "; comment\nT=after\n",
    "T=first\nT=second\n",
    "T='one''two'\n",
]


def systemd_says(tmp_path: Path, text: str) -> str | None:
    """T as systemd's own env-file parser reads the text (None: not set)."""
    config = tmp_path / "config"
    (config / "environment.d").mkdir(parents=True)
    (config / "environment.d" / "t.conf").write_text(text)
    result = subprocess.run(
        [GENERATOR],
        env={"XDG_CONFIG_HOME": str(config), "XDG_CONFIG_DIRS": str(tmp_path / "none")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # It prints NAME=VALUE, or NAME="VALUE" with \\, \", \n, \$ and \` escaped.
    for line in out.split("\n"):
        if not line.startswith("T="):
            continue
        value = line[2:]
        if not value.startswith('"'):
            return value
        chars, escaped = [], False
        for c in value[1:-1]:
            if escaped:
                chars.append("\n" if c == "n" else c)
                escaped = False
            elif c == "\\":
                escaped = True
            else:
                chars.append(c)
        return "".join(chars)
    return None


@NEEDS_GENERATOR
@pytest.mark.parametrize("text", SYSTEMD_READS, ids=range(len(SYSTEMD_READS)))
def test_our_reading_of_an_environment_file_is_systemds(tmp_path, text):
    read = systemd.read_environment_file(text)
    ours = {a.name: a.value for a in read.assignments if systemd.ENV_NAME.match(a.name)}
    assert ours.get("T") == systemd_says(tmp_path, text)


def test_a_comment_ending_in_a_backslash_is_found_as_joining_the_next_line():
    # systemd 252 (Debian 12) reads the next line as more of the comment; 254 does not.
    assert systemd.read_environment_file("# c\\\nT=x\n").joined_comments == [1]
    assert systemd.read_environment_file("# c\\\n\nT=x\n# d\\\\\nU=y\n").joined_comments == []


# --- lines systemd reads otherwise than `run --env-file` are refused for systemd ------------

READ_OTHERWISE = {
    "export": "export KEY=v\n",
    "dotenv decodes \\n in double quotes": 'KEY="a\\nb"\n',
    "dotenv decodes \\\\ in single quotes": "KEY='a\\\\b'\n",
    "inline comment": "KEY=v # note\n",
    "comment after quotes": 'KEY="v" # note\n',
    "backslash unquoted": "KEY=a\\b\n",
    "dotenv expands ${}": "KEY=${HOME}/x\n",
    "systemd keeps \\$ as $": 'KEY="a\\$b"\n',
    "a name systemd ignores": "KEY.X=v\n",
    "text after the closing quote": 'KEY="v"w\n',
    "comment joining the next line": "# note\\\nKEY=v\n",
}
READ_ALIKE = {
    "plain": "KEY=value\n",
    "single quotes": "KEY='va lue #1'\n",
    'double quotes with \\" and \\\\': 'KEY="va\\"l\\\\ue"\n',
    "a # inside a value": "KEY=a#b\n",
    "comments and blank lines": "# note\n\n; other\nKEY=v\n",
    "spaces around =": "KEY = value\n",
    "empty": "KEY=\n",
    "a backslash in single quotes": "KEY='a\\b'\n",
}


@pytest.mark.parametrize("text", READ_OTHERWISE.values(), ids=READ_OTHERWISE.keys())
def test_a_line_systemd_reads_otherwise_is_found(text):
    assert systemd_reads_otherwise(text, env_file.env_values(text))


@pytest.mark.parametrize("text", READ_ALIKE.values(), ids=READ_ALIKE.keys())
def test_a_line_systemd_reads_alike_is_not(text):
    assert systemd_reads_otherwise(text, env_file.env_values(text)) == []


def test_systemd_refuses_an_env_file_it_reads_otherwise_and_says_the_fix(ws):
    jobs_file(ws)
    path = env(
        ws,
        "export OPENAI_API_KEY=sk-file-5150\n"
        'TASTYTRADE_CLIENT_SECRET="cs-\\n-5150"\n'
        "TASTYTRADE_REFRESH_TOKEN=rt-file-5150\n",
    )
    line = refusal(generate(ws, "systemd", "--env-file", path))
    assert path in line and "EnvironmentFile=" in line
    assert "line 1" in line and "drop `export `" in line
    assert "line 2 (TASTYTRADE_CLIENT_SECRET)" in line and "NAME='value'" in line
    assert "line 3" not in line and "5150" not in line
    assert not (ws.root / "units").exists()
    # cron passes the file to `run --env-file`, which reads it as meant.
    assert generate(ws, "crontab", "--env-file", path).returncode == 0


def test_systemd_takes_the_same_credentials_written_its_way(ws):
    jobs_file(ws)
    result = generate(ws, "systemd", "--env-file", env(ws, COMPLETE))
    assert result.returncode == 0, result.stderr
    assert (ws.root / "units" / "tasty-oneshot-check.service").is_file()


# --- every variable the runs need must be in the file -----------------------------------------


@pytest.mark.parametrize("target", ["systemd", "crontab"])
def test_an_env_file_without_the_credentials_is_refused_naming_each(ws, target):
    jobs_file(ws)
    ws.env.update({name: "set-in-this-shell" for name in CREDENTIALS})
    path = env(ws, "# nothing yet\n")
    line = refusal(generate(ws, target, "--env-file", path))
    assert path in line
    assert all(name in line for name in CREDENTIALS), line


def test_an_empty_key_in_the_env_file_is_missing(ws):
    jobs_file(ws)
    line = refusal(generate(ws, "crontab", "--env-file", env(ws, COMPLETE + "OPENAI_API_KEY=\n")))
    assert "OPENAI_API_KEY" in line
    assert "TASTYTRADE" not in line


def test_each_variable_the_jobs_file_uses_must_be_in_the_env_file(ws):
    jobs_file(
        ws,
        top='model: openai:gpt-5-mini\nnotify: ["${ALERT_URL}"]\n',
        job=JOB + "    ping: https://hc.example.org/${PING_ID}?h=${HOME}&x=$${LITERAL}\n",
    )
    ws.env.update(ALERT_URL="json://localhost/", PING_ID="abc")
    line = refusal(generate(ws, "crontab", "--env-file", env(ws, COMPLETE)))
    assert "${ALERT_URL}" in line and "${PING_ID}" in line and "tasty-oneshot.yaml" in line
    assert "HOME" not in line and "LITERAL" not in line  # a timer has $HOME; $${ is literal
    done = COMPLETE + "ALERT_URL=json://localhost/\nPING_ID=\n"  # set, even empty, will do
    assert generate(ws, "crontab", "--env-file", env(ws, done)).returncode == 0


def test_a_model_named_by_model_identifier_needs_it_in_the_env_file(ws):
    jobs_file(ws, top="")
    ws.env["MODEL_IDENTIFIER"] = "openai:gpt-5-mini"
    line = refusal(generate(ws, "crontab", "--env-file", env(ws, COMPLETE)))
    assert "MODEL_IDENTIFIER" in line
    assert "OPENAI_API_KEY" not in line
    done = COMPLETE + "MODEL_IDENTIFIER=openai:gpt-5-mini\n"
    assert generate(ws, "crontab", "--env-file", env(ws, done)).returncode == 0


def test_a_local_openai_server_in_the_env_file_needs_no_key(ws):
    jobs_file(ws)
    local = "OPENAI_BASE_URL=http://127.0.0.1:9/v1\n" + COMPLETE.split("\n", 1)[1]
    assert generate(ws, "crontab", "--env-file", env(ws, local)).returncode == 0
    # ...but one set only in this shell does not reach the timer.
    ws.env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    line = refusal(generate(ws, "crontab", "--env-file", env(ws, COMPLETE.split("\n", 1)[1])))
    assert "OPENAI_API_KEY" in line


# --- an empty variable in the shell does not hide the file's value ----------------------------


def test_a_variable_already_set_is_never_overridden_even_when_empty(tmp_path, monkeypatch):
    """The contract: an env file never overrides a variable already set; set but empty is
    set (a deliberately empty `OPENAI_BASE_URL=` stays empty). Unset ones are filled."""
    path = tmp_path / "creds.env"
    path.write_text("TASTY_T_EMPTY=from-file\nTASTY_T_SET=from-file\nTASTY_T_UNSET=from-file\n")
    monkeypatch.setenv("TASTY_T_EMPTY", "")
    monkeypatch.setenv("TASTY_T_SET", "from-shell")
    monkeypatch.delenv("TASTY_T_UNSET", raising=False)
    env_file.load_env_file(path, required=True)
    assert os.environ["TASTY_T_EMPTY"] == ""
    assert os.environ["TASTY_T_SET"] == "from-shell"
    assert os.environ["TASTY_T_UNSET"] == "from-file"


# --- crontab lines for the cron daemon's zone, not this shell's $TZ ---------------------------


def test_the_cron_daemons_zone_is_the_systems(tmp_path):
    linked = tmp_path / "linked"
    linked.symlink_to("/usr/share/zoneinfo/Europe/London")
    named = tmp_path / "timezone"
    named.write_text("Asia/Tokyo\n")
    assert crontab.cron_daemon_zone(linked, named) == "Europe/London"
    copied = tmp_path / "copied"
    copied.write_bytes(b"TZif")
    assert crontab.cron_daemon_zone(copied, named) == "Asia/Tokyo"
    assert crontab.cron_daemon_zone(copied, tmp_path / "none") == "UTC"


def cron_fields(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [
        " ".join(line.split()[:5])
        for line in result.stdout.splitlines()
        if line.strip() and not line.startswith("#")
    ]


@pytest.mark.skipif(
    not crontab.same_clock(crontab.cron_daemon_zone(), "UTC", crontab.datetime.now(crontab.UTC)),
    reason="the expected lines are for a host in UTC",
)
def test_lines_follow_the_systems_zone_not_tz_and_say_so(ws):
    args = ["generate-units", "Hi", "--name", "hi", "--market-open", "--daily"]
    args += ["--target", "crontab", "--no-env-file"]
    ws.env["TZ"] = "America/New_York"
    shell_in_new_york = ws.call(*args)
    assert cron_fields(shell_in_new_york) == ["30 13,14 * * *"]  # 9:30 NYC on a UTC cron
    [warning] = warnings(shell_in_new_york)
    assert "America/New_York" in warning and "--cron-tz" in warning
    assert crontab.cron_daemon_zone() in warning
    told = ws.call(*args, "--cron-tz", "America/New_York")
    assert cron_fields(told) == ["30 9 * * *"]
    assert warnings(told) == []
    ws.env["TZ"] = "UTC"
    assert warnings(ws.call(*args)) == []


# --- the service's private /tmp ---------------------------------------------------------------


def test_paths_under_tmp_are_warned_about_for_systemd_and_the_units_still_written(ws):
    server = ws.write("server.sh", "#!/bin/sh\n")
    server.chmod(0o755)
    jobs_file(ws, top=f"model: test\nmcp:\n  command: {server}\n")
    path = env(ws, "X=1\n")
    assert str(ws.root).startswith("/tmp/"), "the workspace must be under /tmp"
    result = generate(ws, "systemd", "--env-file", path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (ws.root / "units").iterdir()) == [
        "tasty-oneshot-check.service",
        "tasty-oneshot-check.timer",
    ]
    found = warnings(result)
    for named in (ws.root / "tasty-oneshot.yaml", path, server):
        [line] = [w for w in found if f" {named} " in w]
        assert "move it out of /tmp" in line
    assert len(found) == 3, found
    assert warnings(generate(ws, "crontab", "--env-file", path)) == []


def test_what_is_under_tmp(tmp_path):
    assert _in_private_tmp("/tmp/x") and _in_private_tmp("/var/tmp/a/b")
    assert not _in_private_tmp("/tmpfiles/x") and not _in_private_tmp("/var/tmpx")
    assert not _in_private_tmp("/home/me/jobs.yaml")
    assert _in_private_tmp("/home/../tmp/x")
    if not str(tmp_path).startswith(("/tmp/", "/var/tmp/")):
        pytest.skip("tmp_path is not under /tmp")
    link = Path("/run") / f"tasty-oneshot-test-{os.getpid()}"
    try:
        link.symlink_to(tmp_path)
    except OSError:
        pytest.skip("cannot make a link outside /tmp")
    try:
        assert _in_private_tmp(str(link / "jobs.yaml"))  # its target is under /tmp
    finally:
        link.unlink()
