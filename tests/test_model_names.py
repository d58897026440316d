"""Model identifiers: a wrong one is refused whenever a job loads (a skipped run included),
cheaply, with the identifier most likely meant; a known provider with a name pydantic-ai does
not list only warns; and a missing credential is named with what needs it."""

import ast
import inspect
import logging
import subprocess
import sys
import textwrap

import pytest

from tasty_oneshot import agent, model_names
from tasty_oneshot.errors import UsageError
from tasty_oneshot.jobs import Job
from tasty_oneshot.jobs_file import resolve_job
from tasty_oneshot.model_names import model_problem

SATURDAY = "2026-11-28 15:00:00"  # 10:00 in New York on a Saturday: the market is closed
SLOT_JOB = 'jobs:\n  check:\n    instructions: Check\n    schedule: "9:30am"\n    daily: true\n'


# --- the providers kept in our code are pydantic-ai's -------------------------------------


def _provider_names_pydantic_ai_knows() -> set[str]:
    """The names infer_provider_class matches, read from its source (importing each provider
    would need every provider's optional package)."""
    from pydantic_ai.providers import infer_provider_class

    tree = ast.parse(textwrap.dedent(inspect.getsource(infer_provider_class)))
    names = set()
    for case in (node for node in ast.walk(tree) if isinstance(node, ast.match_case)):
        for value in ast.walk(case.pattern):
            if isinstance(value, ast.MatchValue) and isinstance(value.value, ast.Constant):
                names.add(value.value.value)
    assert len(names) > 20, names  # the reading found the match statement
    return names


def test_the_providers_kept_here_are_those_pydantic_ai_makes_a_model_of():
    # A pydantic-ai upgrade that adds or drops a provider fails here, rather than the cheap
    # check refusing a good model (or passing a bad one).
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    def no_provider(name: str) -> object:
        return object()  # infer_model gets as far as choosing the model class

    makes_models = set()
    for provider in _provider_names_pydantic_ai_knows():
        try:
            infer_model(f"{provider}:x", provider_factory=no_provider)
        except UserError as exc:
            if str(exc).startswith("Unknown model"):  # a provider of embeddings, speech...
                continue
        except Exception:  # the model class could not use the dummy provider: it is one
            pass
        makes_models.add(provider)
    assert set(model_names.PROVIDERS) == makes_models
    assert len(model_names.PROVIDERS) == len(makes_models)  # each once


def test_the_gateway_aliases_kept_here_are_pydantic_ais():
    from pydantic_ai.providers import gateway

    assert model_names.GATEWAY_ALIASES == gateway._GATEWAY_PROVIDER_ALIASES
    for alias, provider in model_names.GATEWAY_ALIASES.items():
        assert gateway.normalize_gateway_provider("gateway/" + alias) == provider


def test_every_provider_pydantic_ai_lists_models_of_passes_the_cheap_check():
    known = model_names.known_models()
    assert len(known) > 100
    for model in known:
        assert model_problem(model) is None, model


@pytest.mark.parametrize(
    "model",
    ["opnai:gpt-5-mini", "gpt-5-mini", "OpenAI:gpt-5-mini", "gateway/x:y", "test:x"],
)
def test_the_cheap_check_refuses_what_pydantic_ai_refuses(model):
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    assert model_problem(model) is not None
    with pytest.raises(UserError, match="Unknown model"):
        infer_model(model)


def test_the_cheap_check_of_a_good_model_imports_no_pydantic_ai():
    code = (
        "import sys\n"
        "from tasty_oneshot.jobs_file import resolve_job\n"
        "for model in ('openai:gpt-5-mini', 'anthropic:claude-x', 'gateway/chat:x', 'test'):\n"
        "    job = resolve_job(None, job_name=None, instructions='x', name=None,\n"
        "                      options={'model': model})\n"
        "    assert job.model == model\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic_ai', 'pydantic')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- suggestions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "meant"),
    [
        ("gpt-5-mini", "openai:gpt-5-mini"),  # not listed itself: its family is OpenAI's
        ("claude-sonnet-4-6", "anthropic:claude-sonnet-4-6"),  # also Snowflake's: the common one
        ("gemini-3.8-flash", "google:gemini-3.8-flash"),
        ("grok-4", "xai:grok-4"),
    ],
)
def test_a_bare_model_name_suggests_its_provider(model, meant):
    assert model_problem(model) == (
        f"Unknown model: an identifier is provider:name. Did you mean '{meant}'?"
    )


@pytest.mark.parametrize(
    ("model", "meant"),
    [
        ("opnai:gpt-5-mini", "openai:gpt-5-mini"),  # not snowflake:openai-gpt-5.6-luna
        ("OpenAI:gpt-5-mini", "openai:gpt-5-mini"),
        ("antropic:claude-whatever", "anthropic:claude-whatever"),
        ("gateway/opnai:gpt-6-luna", "gateway/openai:gpt-6-luna"),
    ],
)
def test_an_unknown_provider_near_a_known_one_keeps_the_model_name(model, meant):
    provider = model.split(":")[0]
    assert model_problem(model) == (
        f"Unknown model: no provider '{provider}'. Did you mean '{meant}'?"
    )


def test_an_identifier_nothing_is_near_says_what_providers_look_like():
    problem = model_problem("zzzz:qqqq") or ""
    assert problem.startswith("Unknown model: no provider 'zzzz' (providers include openai,")


# --- a known provider with a name it does not list: a warning, not a refusal ---------------


def test_a_near_miss_of_a_listed_name_warns_and_still_resolves(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    job = Job(name="check", instructions="x", model="openai:gpt-5.6-lunaa")
    job = job._replace(model_from="--model")
    with caplog.at_level(logging.WARNING, logger="tasty_oneshot"):
        model = agent.resolve_model(job)
    assert model.model_name == "gpt-5.6-lunaa"
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage().startswith(
        "--model: model 'openai:gpt-5.6-lunaa' is not a model pydantic-ai knows: "
        "did you mean 'openai:gpt-5.6-luna'?"
    )


def test_check_model_name_warns_of_a_near_miss_too(monkeypatch, caplog):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    job = Job(name="check", instructions="x", model="anthropic:claude-sonet-4-6")
    with caplog.at_level(logging.WARNING, logger="tasty_oneshot"):
        agent.check_model_name(job)  # no key here: the name alone is checked, not refused
    assert "did you mean 'anthropic:claude-sonnet-4-6'?" in caplog.text


@pytest.mark.parametrize("model", ["openai:gpt-5.7-luna", "openai:gpt-6-luna", "openai:my-model"])
def test_a_newer_listed_or_unrelated_name_gives_no_warning(monkeypatch, caplog, model):
    # A name whose numbers differ from a listed one's is taken for a newer model.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with caplog.at_level(logging.WARNING, logger="tasty_oneshot"):
        agent.resolve_model(Job(name="check", instructions="x", model=model))
    assert caplog.records == []


# --- whenever a job loads -------------------------------------------------------------------


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert " - ERROR - " in line, line
    return line


def test_an_unknown_model_in_the_jobs_file_is_refused_by_a_manual_run_on_a_closed_day(ws):
    path = ws.write("tasty-oneshot.yaml", "model: opnai:gpt-5-mini\n" + SLOT_JOB)
    line = one_error_line(ws.call("run", "--job", "check", at=SATURDAY))
    assert line.endswith(
        f"{path}: key 'model': model 'opnai:gpt-5-mini': Unknown model: no provider 'opnai'. "
        "Did you mean 'openai:gpt-5-mini'?"
    ), line
    assert ws.history() == []


def test_next_names_the_job_and_key_of_an_unknown_model(ws):
    body = SLOT_JOB + "    model: gpt-5-mini\n"
    path = ws.write("tasty-oneshot.yaml", "model: test\n" + body)
    line = one_error_line(ws.call("next", "--job", "check"))
    assert f"{path}: job 'check': key 'model': model 'gpt-5-mini': Unknown model:" in line, line
    assert line.endswith("Did you mean 'openai:gpt-5-mini'?"), line


def test_a_model_from_model_identifier_is_checked_when_the_job_loads(monkeypatch):
    monkeypatch.setenv("MODEL_IDENTIFIER", "opnai:gpt-5-mini")
    with pytest.raises(UsageError) as caught:
        resolve_job(None, job_name=None, instructions="Check", name=None, options={})
    assert str(caught.value) == (
        "$MODEL_IDENTIFIER: model 'opnai:gpt-5-mini': Unknown model: no provider 'opnai'. "
        "Did you mean 'openai:gpt-5-mini'?"
    )
    monkeypatch.setenv("MODEL_IDENTIFIER", "openai:gpt-5-mini")
    job = resolve_job(None, job_name=None, instructions="Check", name=None, options={})
    assert job.model == "openai:gpt-5-mini"


# --- who needs each variable ----------------------------------------------------------------


def test_missing_credentials_are_each_named_with_what_needs_them(ws):
    # The default MCP server: tasty-agent, which needs TastyTrade's credentials.
    ws.write("tasty-oneshot.yaml", "model: openai:gpt-5-mini\n" + SLOT_JOB)
    line = one_error_line(ws.call("run", "--job", "check", "--ignore-market-hours"))
    assert line.endswith(
        " - ERROR - job check: OPENAI_API_KEY not set (needed by the model openai:gpt-5-mini); "
        "TASTYTRADE_CLIENT_SECRET and TASTYTRADE_REFRESH_TOKEN not set (needed by the "
        "tasty-agent MCP server): set them in the environment, in ./.env, or in a file given "
        "with --env-file"
    ), line
    assert ws.history() == []


def test_one_missing_credential_is_named_with_what_needs_it(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    job = Job(name="check", instructions="x", model="openai:gpt-5-mini")
    job = job._replace(mcp=agent.McpServer(url="https://example.org/mcp"))
    with pytest.raises(UsageError) as caught:
        agent.check_ready(job)
    assert str(caught.value) == (
        "job check: OPENAI_API_KEY not set (needed by the model openai:gpt-5-mini): set it in "
        "the environment, in ./.env, or in a file given with --env-file"
    )
