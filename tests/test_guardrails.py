"""Guardrails for unattended runs (issue 4), through the real CLI in a subprocess.

The model is `openai-chat:stub`: tests/openai_stub.py, an OpenAI-compatible HTTP server on
127.0.0.1 that records every request, in one of three modes (a runaway tool loop, a fixed
answer, or "call the notify tool when a word shows up"). Alerts go through Apprise's
`json://` to a small HTTP receiver running in a thread of the test.
"""

import json
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import closed_port

from tasty_oneshot.jobs import Limits
from tasty_oneshot.notify import DELIVERY_TIMEOUT

RUN = ("run", "--job", "check", "--ignore-market-hours")
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - [A-Z]+ - \S.*$")
LIMIT_NAMES = ("request_limit", "tool_calls_limit", "total_tokens_limit", "cost_limit")


def jobs_file(ws, job: str = "", top: str = "", name: str = "check") -> Path:
    """A jobs file on the stub model and the fake MCP server, with one job `name`."""
    return ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n"
        + ws.fake_mcp_yaml()
        + top
        + f"jobs:\n  {name}:\n    instructions: Check my positions\n"
        + "".join(f"    {line}\n" for line in job.splitlines()),
    )


def messages_text(request: dict) -> str:
    """Everything the model was sent in one request's messages."""
    return json.dumps(request["messages"])


# --- limits ------------------------------------------------------------------------------------


def assert_stopped_by(ws, result, limit: str) -> dict:
    assert result.returncode == 1, result.stderr
    [row] = ws.history()
    assert row["status"] == "failed" and row["exit_code"] == 1, row
    assert limit in row["reason"], row["reason"]
    assert row["output"] is None and result.stdout == ""
    return row


def test_max_requests_on_the_command_line_stops_a_runaway_model(ws, stub):
    stub.mode("loop")
    jobs_file(ws)
    result = ws.call(*RUN, "--max-requests", "3")
    row = assert_stopped_by(ws, result, "request_limit")
    assert 1 <= len(stub.requests()) <= 3
    assert row["usage"]["requests"] == len(stub.requests())


def test_max_tool_calls_in_the_jobs_file_stops_a_runaway_model(ws, stub):
    stub.mode("loop")
    jobs_file(ws, "max_tool_calls: 2")
    result = ws.call(*RUN)
    assert_stopped_by(ws, result, "tool_calls_limit")
    assert 1 <= len(ws.calls()) <= 2
    assert len(stub.requests()) <= 3  # two tool calls made, the third refused


def test_max_tokens_in_the_jobs_file_stops_a_runaway_model(ws, stub):
    stub.mode("loop")
    jobs_file(ws, "max_tokens: 300")  # the stub reports 120 tokens per response
    result = ws.call(*RUN)
    row = assert_stopped_by(ws, result, "total_tokens_limit")
    assert len(stub.requests()) <= 3
    assert row["usage"]["input_tokens"] + row["usage"]["output_tokens"] > 0


def test_a_job_without_limits_still_stops_a_runaway_loop(ws, stub):
    stub.mode("loop")
    jobs_file(ws)
    result = ws.call(*RUN, timeout=120)
    assert result.returncode == 1, result.stderr
    [row] = ws.history()
    assert row["status"] == "failed", row
    assert any(name in row["reason"] for name in LIMIT_NAMES), row["reason"]
    # The documented default of 30 requests: the loop calls one tool a request (29 tool
    # calls, 3600 tokens), so the request limit is the one that stops it.
    assert "request_limit of 30" in row["reason"], row["reason"]
    assert len(stub.requests()) == 30


def test_the_documented_default_limits():
    assert Limits() == (30, 60, 400_000, None)
    assert Limits()._fields == ("max_requests", "max_tool_calls", "max_tokens", "max_cost")


def test_max_cost_stops_a_model_whose_price_is_known_and_the_cost_is_recorded(ws, stub):
    # pydantic-ai prices gpt-4o; the stub answers for it like for any other name
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:gpt-4o\n" + ws.fake_mcp_yaml() + "jobs:\n"
        "  check:\n    instructions: Check my positions\n    max_cost: 0.001\n",
    )
    stub.mode("loop")
    result = ws.call(*RUN)
    row = assert_stopped_by(ws, result, "cost_limit")
    assert row["cost"] is not None and row["cost"] > 0.001, row["cost"]
    assert len(stub.requests()) < Limits().max_requests
    plain = ws.call("history")
    tokens = row["usage"]["input_tokens"] + row["usage"]["output_tokens"]
    assert totals_table(plain.stdout) == {"check": ["1", "0", str(tokens), f"${row['cost']:.4f}"]}


def test_max_cost_for_a_model_without_a_known_price_is_logged_not_enforced(ws, stub):
    jobs_file(ws, "max_cost: 0.5")
    stub.mode("answer", "fine")
    result = ws.call(*RUN)
    assert result.returncode == 0, result.stderr
    # pydantic-ai's warning that it cannot price the model comes out as one of our log lines
    for line in result.stderr.splitlines():
        assert LOG_LINE.match(line), line
    assert re.search(r" - WARNING - .*cost", result.stderr), result.stderr
    [row] = ws.history()
    assert row["status"] == "ok" and row["cost"] is None


@pytest.mark.parametrize(
    "line, key",
    [
        ("max_tokens: -5", "max_tokens"),
        ("max_requests: 0", "max_requests"),
        ("max_tool_calls: -1", "max_tool_calls"),
        ("max_cost: -0.5", "max_cost"),
        ("max_cost: 0", "max_cost"),
    ],
)
def test_a_limit_that_is_not_positive_is_a_usage_error(ws, stub, line, key):
    assert_usage_error(ws, stub, jobs_file(ws, line), key)


def assert_usage_error(ws, stub, path: Path, key: str) -> None:
    result = ws.call(*RUN)
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr and "job 'check'" in result.stderr
    assert f"'{key}'" in result.stderr, result.stderr
    assert stub.requests() == [] and ws.server_starts() == []
    assert ws.history() == []


# --- memory --------------------------------------------------------------------------------


def test_remember_last_gives_the_previous_successful_output_and_its_time(ws, stub):
    jobs_file(ws, "remember: last")
    long_output = "FIRST-OUTPUT-7731 " + "x" * 20_000 + " FIRST-TAIL-7731"
    stub.mode("answer", long_output)
    first = ws.call(*RUN)
    assert first.returncode == 0, first.stderr
    # the first run has nothing to remember
    assert "previous" not in messages_text(stub.requests()[0]).lower()

    stub.mode("loop")  # the second run fails on a limit
    second = ws.call(*RUN, "--max-requests", "2")
    assert second.returncode == 1, second.stderr
    stub.mode("answer", "THIRD-OUTPUT")
    seen = len(stub.requests())
    third = ws.call(*RUN)
    assert third.returncode == 0, third.stderr

    run3, run2, run1 = ws.history()
    assert (run1["status"], run2["status"], run3["status"]) == ("ok", "failed", "ok")
    # the second (failed) and the third run were both given the first run's output and time
    for request in (stub.requests()[1], stub.requests()[seen]):
        text = messages_text(request)
        assert "FIRST-OUTPUT-7731" in text
        assert run1["finished_at"] in text or _nyc(run1["finished_at"]) in text, text[:2000]
    third_text = messages_text(stub.requests()[seen])
    # nothing of the failed run: not its reason, not its time (when it differs)
    assert "request_limit" not in third_text
    if run2["finished_at"] != run1["finished_at"]:
        assert run2["finished_at"] not in third_text
    # bounded: a long output is cut, not sent whole
    assert "FIRST-TAIL-7731" not in third_text
    assert len(third_text) < 10_000


def _nyc(iso: str) -> str:
    """An ISO time as the plain NYC wall-clock text a prompt might use instead."""
    return (
        datetime.fromisoformat(iso)
        .astimezone(ZoneInfo("America/New_York"))
        .strftime("%Y-%m-%d %H:%M")
    )


def test_without_remember_no_previous_output_is_sent_and_remember_on_the_command_line(ws, stub):
    jobs_file(ws)
    stub.mode("answer", "FIRST-OUTPUT-5512")
    assert ws.call(*RUN).returncode == 0
    stub.mode("answer", "SECOND-OUTPUT-5512")
    assert ws.call(*RUN).returncode == 0
    second = messages_text(stub.requests()[1])
    assert "FIRST-OUTPUT-5512" not in second
    # and without `notify`, no notify tool is offered
    tools = [t["function"]["name"] for t in stub.requests()[1].get("tools", [])]
    assert "account_overview" in tools and "notify" not in tools

    stub.mode("answer", "THIRD-OUTPUT-5512")
    third = ws.call(*RUN, "--remember", "last")
    assert third.returncode == 0, third.stderr
    text = messages_text(stub.requests()[2])
    assert "SECOND-OUTPUT-5512" in text  # the latest successful run, and only that one
    assert "FIRST-OUTPUT-5512" not in text


# --- alerts --------------------------------------------------------------------------------


def alert_job(url: str, *extra: str) -> str:
    return "\n".join([f"notify: [{json.dumps(url)}]", *extra])


def test_notify_on_output_posts_the_output_once(ws, stub, receiver):
    rx = receiver()
    jobs_file(ws, alert_job(rx.url(), "notify_on: [output]"))
    stub.mode("answer", "ALL-GOOD-4242")
    result = ws.call(*RUN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ALL-GOOD-4242"
    [post] = rx.posts
    assert post["path"] == "/alerts" and "ALL-GOOD-4242" in post["body"]
    [row] = ws.history()
    assert row["status"] == "ok" and row["notify"] == "output alert: sent", row["notify"]


def test_failure_posts_once_by_default_and_output_does_not(ws, stub, receiver):
    rx = receiver()
    jobs_file(ws, alert_job(rx.url()))
    stub.mode("loop")
    failed = ws.call(*RUN, "--max-requests", "2")
    assert failed.returncode == 1, failed.stderr
    [post] = rx.posts
    assert "request_limit" in post["body"] or "limit" in post["body"]
    [row] = ws.history()
    # a delivered alert about a failed run, worded so it cannot read as a failed delivery
    assert row["status"] == "failed" and row["notify"] == "failure alert: sent", row["notify"]

    stub.mode("answer", "fine")
    ok = ws.call(*RUN)
    assert ok.returncode == 0, ok.stderr
    assert len(rx.posts) == 1  # default notify_on is [failure]: a good run sends nothing
    assert ws.history()[0]["notify"] is None


def test_notify_tool_sends_only_when_the_condition_holds(ws, stub, receiver):
    rx = receiver()
    stub.mode("notify-if", "IVRANK-HIGH-93")
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n" + ws.fake_mcp_yaml() + "jobs:\n"
        "  quiet:\n    instructions: Alert me if IV rank is above 80\n"
        f"    notify: [{json.dumps(rx.url())}]\n"
        "  loud:\n    instructions: Today IVRANK-HIGH-93. Alert me if IV rank is above 80\n"
        f"    notify: [{json.dumps(rx.url())}]\n",
    )
    quiet = ws.call("run", "--job", "quiet", "--ignore-market-hours")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "nothing to report"
    assert rx.posts == []
    # the tool was offered
    tools = [t["function"]["name"] for t in stub.requests()[0].get("tools", [])]
    assert "notify" in tools

    loud = ws.call("run", "--job", "loud", "--ignore-market-hours")
    assert loud.returncode == 0, loud.stderr
    assert loud.stdout.strip() == "alerted"
    [post] = rx.posts
    assert "ALERT: IVRANK-HIGH-93 seen" in json.loads(post["body"])["message"]
    rows = {r["job"]: r for r in ws.history()}
    assert rows["quiet"]["notify"] is None
    assert rows["loud"]["notify"] == "notify tool: sent", rows["loud"]["notify"]
    # the model was told it was delivered
    tool_results = [m for m in stub.requests()[-1]["messages"] if m.get("role") == "tool"]
    assert any("delivered" in json.dumps(m) for m in tool_results)


@pytest.mark.parametrize(
    "trouble, via",
    # a closed port for the run's own alert is covered by the secrets test
    [("hang", "outcome"), ("hang", "tool"), ("closed", "tool")],
)
def test_a_delivery_that_hangs_or_is_refused_does_not_fail_the_run(
    ws, stub, receiver, trouble, via
):
    if trouble == "hang":
        rx = receiver(hang=True)
        url = rx.url() + "?rto=60"  # Apprise itself would wait a minute for the answer
    else:
        rx, url = None, f"json://127.0.0.1:{closed_port()}/alerts"
    if via == "outcome":
        jobs_file(ws, alert_job(url, "notify_on: [output]"))
        stub.mode("answer", "done")
    else:
        jobs_file(ws, alert_job(url))
        stub.mode("notify-if", "Check")  # the instructions say Check: the model alerts
    proc = ws.popen(*RUN)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("a hung delivery held the run for a minute")
    ended = time.monotonic()
    assert proc.returncode == 0, err
    assert out.strip() in ("done", "alerted")
    if rx is not None:
        [post] = rx.posts
        # given up within a few seconds of the delivery timeout
        assert ended - post["at"] < DELIVERY_TIMEOUT + 4, ended - post["at"]
    [row] = ws.history()
    assert row["status"] == "ok" and row["exit_code"] == 0
    note = {"outcome": "output alert: not sent: ", "tool": "notify tool: not sent: "}[via]
    assert (row["notify"] or "").startswith(note), row["notify"]
    assert re.search(r"fail|gave up|timed? ?out|not delivered", row["notify"]), row["notify"]
    assert re.search(r"WARNING - .*notify", err), err


# --- secrets -------------------------------------------------------------------------------

SECRETS = {
    "TASTYTRADE_CLIENT_SECRET": "ttcs-Zq8V3kLm0Pq",
    "TASTYTRADE_REFRESH_TOKEN": "ttrt-Hw5Pn2XcB7d",
    "OPENAI_API_KEY": "sk-stub-Rf7Yt4UbN1s",
    "ANTHROPIC_API_KEY": "sk-ant-Kd9Ej6WsT3v",
}
URL_PASSWORDS = ("S3cretPassw0rd", "An0therPassw0rd")


def test_secrets_appear_in_no_output_channel(ws, stub, receiver, tmp_path):
    ws.env.update(SECRETS)
    rx = receiver()
    good = rx.url(credentials=f"user:{URL_PASSWORDS[0]}@")
    bad = f"json://user:{URL_PASSWORDS[1]}@127.0.0.1:{closed_port()}/alerts"
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n" + ws.fake_mcp_yaml() + "jobs:\n"
        "  check:\n    instructions: Check my positions\n"
        '    schedule: "9:30am"\n    daily: true\n'
        f"    notify: [{json.dumps(good)}, {json.dumps(bad)}]\n"
        "    notify_on: [output, failure]\n",
    )
    # the model leaks secrets in its answer
    leak = (
        f"refresh token {SECRETS['TASTYTRADE_REFRESH_TOKEN']}, "
        f"key {SECRETS['OPENAI_API_KEY']}, password {URL_PASSWORDS[0]}"
    )
    stub.mode("answer", leak)
    texts = {}
    result = ws.call(*RUN)
    assert result.returncode == 0, result.stderr
    assert "refresh token ***" in result.stdout  # the answer arrived, hidden
    assert re.search(r"WARNING - .*notify", result.stderr)  # the failing URL was logged
    assert rx.posts  # the good URL was used
    texts["run stdout"], texts["run stderr"] = result.stdout, result.stderr

    stub.mode("loop")  # and a failed run, which alerts too
    failed = ws.call(*RUN, "--max-requests", "1")
    assert failed.returncode == 1, failed.stderr
    texts["failed stdout"], texts["failed stderr"] = failed.stdout, failed.stderr

    for args in (("history",), ("history", "--json")):
        shown = ws.call(*args)
        assert shown.returncode == 0, shown.stderr
        texts[" ".join(args)] = shown.stdout + shown.stderr
    assert "***" in texts["history --json"]

    ledger_files = [p for p in ws.state.iterdir() if p.name.startswith("ledger.sqlite3")]
    assert ledger_files
    for path in ledger_files:
        texts[path.name] = path.read_bytes().decode("latin-1")

    env_file = ws.write("secrets.env", "".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    env_file.chmod(0o600)
    units = tmp_path / "units"
    systemd = ws.call(
        "generate-units", "--job", "check", "--target", "systemd",
        "--output-dir", str(units), "--env-file", str(env_file),
    )  # fmt: skip
    assert systemd.returncode == 0, systemd.stderr
    texts["systemd"] = systemd.stdout + systemd.stderr
    written = list(units.iterdir())
    assert written
    for path in written:
        texts[path.name] = path.read_text()
    cron = ws.call(
        "generate-units", "--job", "check", "--target", "crontab",
        "--cron-tz", "UTC", "--env-file", str(env_file),
    )  # fmt: skip
    assert cron.returncode == 0, cron.stderr
    assert str(env_file) in cron.stdout  # the credentials go by reference
    texts["crontab"] = cron.stdout + cron.stderr

    # the alerts are messages to a person through a third party: no secrets there either
    assert len(rx.posts) == 2  # the output, then the failure
    for index, post in enumerate(rx.posts):
        texts[f"alert {index + 1}"] = post["body"]
    assert "***" in rx.posts[0]["body"]

    for channel, text in texts.items():
        for secret in (*SECRETS.values(), *URL_PASSWORDS):
            assert secret not in text, f"{secret} in {channel}"

    # the MCP server is given the TastyTrade variables, never the model keys
    given = set(ws.server_starts()[0]["env"])
    assert "TASTYTRADE_REFRESH_TOKEN" in given
    assert "OPENAI_API_KEY" not in given and "ANTHROPIC_API_KEY" not in given


@pytest.mark.parametrize(
    "mode, warned", [(0o644, True), (0o640, True), (0o604, True), (0o600, False), (0o400, False)]
)
def test_generate_units_warns_about_an_env_file_others_can_read(ws, mode, warned):
    ws.write(
        "tasty-oneshot.yaml",
        "jobs:\n  check:\n    instructions: Hi\n    market_open: true\n    daily: true\n",
    )
    env_file = ws.write(  # what the job needs (the tasty-agent server's credentials) and a key
        "secrets.env", "".join(f"{k}={v}\n" for k, v in SECRETS.items())
    )
    env_file.chmod(mode)
    result = ws.call(
        "generate-units", "--job", "check", "--target", "crontab", "--env-file", str(env_file)
    )
    assert result.returncode == 0, result.stderr
    assert bool(re.search(r"WARNING - .*secrets\.env", result.stderr)) == warned, result.stderr
    assert SECRETS["OPENAI_API_KEY"] not in result.stdout + result.stderr


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, key",
    [
        ('notify: ["tgram://only-one-part"]', "notify"),
        ('notify: ["not a url"]', "notify"),
        ('notify: ["json://127.0.0.1/a"]\nnotify_on: [sometimes]', "notify_on"),
        ("notify_on: [output, never]", "notify_on"),
        ("remember: always", "remember"),
    ],
)
def test_bad_guardrail_keys_are_usage_errors(ws, stub, line, key):
    assert_usage_error(ws, stub, jobs_file(ws, line), key)


@pytest.mark.parametrize(
    "args, flag",
    [
        (("--notify", "not a url"), "--notify"),
        (("--notify", "tgram://only-one-part"), "--notify"),
        (("--max-requests", "-1"), "--max-requests"),
        (("--notify-on", "sometimes"), "--notify-on"),
        (("--remember", "always"), "--remember"),
    ],
)
def test_bad_guardrail_options_are_usage_errors(ws, stub, args, flag):
    jobs_file(ws)
    result = ws.call(*RUN, *args)
    assert result.returncode == 2, result.stderr
    assert flag in result.stderr
    assert stub.requests() == [] and ws.server_starts() == []
    assert ws.history() == []


# --- history --------------------------------------------------------------------------------

LAST_THANKSGIVING = "2025-11-27 14:3{}:00"  # 9:3x NYC on a market holiday: cheap skips


def totals_table(stdout: str) -> dict[str, list[str]]:
    """The plain table's closing totals: job -> [runs, skips, tokens, cost]."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("totals"))
    header, *rows = [line.split() for line in lines[start + 1 :] if line.strip()]
    assert header == ["job", "runs", "skips", "tokens", "cost"], header
    return {row[0]: row[1:] for row in rows}


def test_history_since_limits_the_listing_and_the_table_ends_with_totals(ws, stub):
    ws.write(
        "tasty-oneshot.yaml",
        "model: openai-chat:stub\n" + ws.fake_mcp_yaml() + "jobs:\n"
        "  alpha:\n    instructions: A\n    market_open: true\n    daily: true\n"
        "  beta:\n    instructions: B\n",
    )
    for minute in (1, 2):  # a year ago: two skipped runs
        old = ws.call("run", "--job", "alpha", "--scheduled", at=LAST_THANKSGIVING.format(minute))
        assert old.returncode == 0, old.stderr
    stub.mode("answer", "fine")
    for _ in range(2):
        result = ws.call("run", "--job", "beta", "--ignore-market-hours")
        assert result.returncode == 0, result.stderr

    everything = ws.history()
    assert [r["job"] for r in everything] == ["beta", "beta", "alpha", "alpha"]
    today = datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    recent = ws.history("--since", today)
    assert [r["id"] for r in recent] == [r["id"] for r in everything[:2]]
    assert ws.history("--since", "2025-11-27") == everything
    assert ws.history("--since", "2025-11-28") == recent

    beta_tokens = sum(r["usage"]["input_tokens"] + r["usage"]["output_tokens"] for r in recent)
    assert beta_tokens == 2 * 120  # what the stub reported, for both runs

    plain = ws.call("history", "--since", today)
    assert plain.returncode == 0, plain.stderr
    totals = totals_table(plain.stdout)
    assert totals == {"beta": ["2", "0", str(beta_tokens), "unknown"]}
    listed = [line.split()[0] for line in plain.stdout.splitlines()[1:] if line[:1].isdigit()]
    assert listed == [str(r["id"]) for r in recent]

    plain_all = ws.call("history")
    totals = totals_table(plain_all.stdout)
    # alpha only skipped: no runs, two skips, nothing to price
    assert totals == {
        "alpha": ["0", "2", "0", "-"],
        "beta": ["2", "0", str(beta_tokens), "unknown"],
    }

    bad = ws.call("history", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since" in bad.stderr


# --- signals after the outcome -------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_final_alert_cannot_unmake_a_finished_run(ws, stub, receiver, signum):
    # The agent finished and its output was recorded; the alert hangs. A signal now must not
    # turn the run into an interrupted one: the exit code agrees with the ledger row.
    rx = receiver(hang=True)
    jobs_file(ws, alert_job(rx.url(), "notify_on: [output]"))
    stub.mode("answer", "FINISHED-1234")
    proc = ws.popen(*RUN)
    deadline = time.monotonic() + 60
    while not rx.posts:  # the alert is being delivered: the outcome is recorded
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "FINISHED-1234"
    [row] = ws.history()
    assert (row["status"], row["exit_code"], row["output"]) == ("ok", 0, "FINISHED-1234")
    assert (row["notify"] or "").startswith("output alert: "), row["notify"]  # alert noted
