"""The agent: a pydantic-ai Agent over the TastyTrade MCP server, the trading policy and limits.

This module itself is light (the runner imports it for `check_ready`); pydantic-ai and the MCP
client are imported by `import_pydantic_ai`, on the path that runs the agent.
"""

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TextIO

from tasty_oneshot.errors import UsageError, one_line
from tasty_oneshot.jobs import Job, Limits, McpServer
from tasty_oneshot.ledger.rows import Usage
from tasty_oneshot.mcp_server import TASTYTRADE_ENV, StdioServer, command_and_args
from tasty_oneshot.model_names import near_known_name
from tasty_oneshot.model_names import shown as shown_model
from tasty_oneshot.schedule import NYC

if TYPE_CHECKING:  # heavy: imported where a run starts the agent, not by this module
    from pydantic_ai import AgentRun, FunctionToolset, UsageLimits
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.models import Model
    from pydantic_ai.toolsets import AbstractToolset

# Where a provider's key is looked up, to fail early (exit 2) instead of mid-run.
PROVIDER_KEYS = {
    "openai": ("OPENAI_API_KEY",),
    "openai-chat": ("OPENAI_API_KEY",),
    "openai-responses": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google-gla": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "gemini": ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    "groq": ("GROQ_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
}


OPENAI_PROVIDERS = ("openai", "openai-chat", "openai-responses")


class AgentResult(NamedTuple):
    output: str
    usage: Usage
    cost: float | None


class Progress(Protocol):
    """What a run keeps up to date while the agent works, for a run stopped midway."""

    usage: Usage
    cost: float | None
    notes: list[str]  # what became of the agent's own notify calls


class AgentFailed(Exception):
    """The run failed; carries the usage so far for the ledger."""

    def __init__(self, reason: str, usage: Usage, cost: float | None) -> None:
        super().__init__(reason)
        self.reason, self.usage, self.cost = reason, usage, cost


def needed_variables(job: Job) -> list[tuple[str, ...]]:
    """The credentials a run of this job needs from its environment: groups of variable
    names, one of each group set. Also checks that its MCP server command can start."""
    return [group for group, _ in needed_by(job)]


def needed_by(job: Job) -> list[tuple[tuple[str, ...], str]]:
    """needed_variables, each group with what needs it (the model, the MCP server)."""
    needed: list[tuple[tuple[str, ...], str]] = []
    provider = job.model.split(":", 1)[0] if job.model and ":" in job.model else None
    keys = PROVIDER_KEYS.get(provider or "", ())
    # A local OpenAI-compatible server (OPENAI_BASE_URL) may need no key at all.
    local = provider in OPENAI_PROVIDERS and os.environ.get("OPENAI_BASE_URL")
    if keys and not local:
        needed.append((keys, f"the model {job.model}"))
    if job.mcp is not None and job.mcp.url:
        return needed
    try:
        command, _ = command_and_args(job.mcp)  # a command that cannot start is exit 2 too
    except UsageError as exc:
        where = f"{job.source}: job '{job.name}': key 'mcp'" if job.source else "mcp"
        raise UsageError(f"{where}: {exc}") from None
    if Path(command).name == "tasty-agent":
        needed += [((name,), "the tasty-agent MCP server") for name in TASTYTRADE_ENV[:2]]
    return needed


def key_set(name: str) -> bool:
    """Whether a credential variable holds a value: set but empty (`OPENAI_API_KEY=`, a value left
    blank in an env file) is no key at all."""
    return bool(os.environ.get(name, "").strip())


@contextmanager
def empty_keys_unset() -> Iterator[None]:
    """Provider keys that are set but empty, unset while pydantic-ai builds the model: the
    provider's client would take "" for a key and fail with its own error (openai's
    OpenAIError), where a missing key gets pydantic-ai's."""
    names = {name for group in PROVIDER_KEYS.values() for name in group}
    empty = {n: v for n, v in os.environ.items() if n in names and not key_set(n)}
    for name in empty:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(empty)


def check_ready(job: Job) -> None:
    """Everything a run needs that can be checked without starting it (exit 2 if missing)."""
    if not job.model:
        raise UsageError(
            "no model: give --model, set 'model' in the jobs file, or set MODEL_IDENTIFIER"
        )
    missing = [(group, who) for group, who in needed_by(job) if not any(map(key_set, group))]
    if not missing:
        return
    # One clause per thing that needs them, so each variable is named with what needs it.
    clauses: dict[str, list[str]] = {}
    for group, who in missing:
        clauses.setdefault(who, []).append(" or ".join(group))
    said = "; ".join(
        f"{' and '.join(names)} not set (needed by {who})" for who, names in clauses.items()
    )
    them = "them" if len(missing) > 1 else "it"
    raise UsageError(
        f"job {job.name}: {said}: set {them} in the environment, "
        "in ./.env, or in a file given with --env-file"
    )


def import_pydantic_ai() -> None:
    """The heavy imports of a run that starts the agent, all at once (see agent_phase.in_thread)."""
    import pydantic_ai
    import pydantic_ai.mcp
    import pydantic_ai.models  # noqa: F401


def resolve_model(job: Job) -> "Model":
    """The job's model, as pydantic-ai resolves it; a name it does not know is a usage error
    (exit 2) with its suggestion, before the run uses up its slot."""
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    if job.model is None:
        raise UsageError(
            "no model: give --model, set 'model' in the jobs file, or set MODEL_IDENTIFIER"
        )
    local = job.model.split(":", 1)[0] in OPENAI_PROVIDERS and os.environ.get("OPENAI_BASE_URL")
    if local and not key_set("OPENAI_API_KEY"):
        # A local OpenAI-compatible server needs no key, but the client wants one.
        os.environ["OPENAI_API_KEY"] = "unused-by-a-local-server"
    try:
        with empty_keys_unset():
            model = infer_model(job.model)
    except (UserError, ValueError, ImportError) as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"{job.model_from}: model {job.model!r}: {problem}") from None
    warn_if_near_a_known_name(job)
    return model


def check_model_name(job: Job) -> None:
    """Refuse a model pydantic-ai does not know, with its suggestion (exit 2); a key that is
    missing here is not checked: a timer's run gets it from its env file."""
    from pydantic_ai.exceptions import UserError
    from pydantic_ai.models import infer_model

    if job.model is None:
        return
    try:
        with empty_keys_unset():
            infer_model(job.model)
    except UserError as exc:
        if str(exc).startswith("Unknown model"):
            problem = " ".join(str(exc).split())
            raise UsageError(f"{job.model_from}: model {job.model!r}: {problem}") from None
    except (ValueError, ImportError):
        pass  # a provider's own complaint (a key, a package): the run itself says it
    warn_if_near_a_known_name(job)


def warn_if_near_a_known_name(job: Job) -> None:
    """A WARNING when the model is not one pydantic-ai lists but looks like a typo of one of
    the same provider; not a refusal: a provider takes any name, and new models come often."""
    near = near_known_name(job.model) if job.model else None
    if near:
        logging.getLogger("tasty_oneshot").warning(
            "%s: model %s is not a model pydantic-ai knows: did you mean %s? "
            "(going on: a new model may not be listed yet)",
            job.model_from,
            shown_model(job.model or ""),
            shown_model(near),
        )


def mcp_toolset(mcp: McpServer | None, server: StdioServer | None) -> "MCPToolset[Any]":
    """The MCP toolset: the started stdio server's pipes, or the jobs file's remote server."""
    from pydantic_ai.mcp import MCPToolset

    if mcp is not None and mcp.url:
        return MCPToolset(mcp.url)
    if server is None:
        raise RuntimeError("no MCP server was started for a stdio job")
    return MCPToolset(server.transport())


def instructions_for(job: Job, now: datetime) -> str:
    policy = {
        "read-only": "You may read the account but not change it: no orders, no watchlist edits.",
        "dry-run": "Orders you place are dry runs: validated by the broker, never sent.",
        "live": "Orders you place are real.",
    }[job.trading]
    return (
        "You are running unattended, started by a timer; nobody is watching this run. "
        f"It is {now.astimezone(NYC):%A %Y-%m-%d %H:%M} in New York. {policy} "
        "Use the tools to do the task, then answer with the final result only."
    )


def usage_limits(limits: Limits) -> "UsageLimits":
    from decimal import Decimal

    from pydantic_ai.usage import UsageLimits

    return UsageLimits(
        request_limit=limits.max_requests,
        tool_calls_limit=limits.max_tool_calls,
        total_tokens_limit=limits.max_tokens,
        cost_limit=Decimal(str(limits.max_cost)) if limits.max_cost else None,
    )


MEMORY_LIMIT = 4000  # characters of the previous run's output given to the model


def prompt_for(job: Job, previous: tuple[str, str] | None) -> str:
    """The instructions, with the previous successful run's output when the job remembers."""
    if previous is None:
        return job.instructions
    finished_at, output = previous
    if len(output) > MEMORY_LIMIT:
        output = output[:MEMORY_LIMIT] + f"\n[... cut at {MEMORY_LIMIT} characters]"
    return (
        f"{job.instructions}\n\n"
        f"For comparison, your previous successful run finished at {finished_at} "
        f"(New York time) and answered:\n<previous-output>\n{output}\n</previous-output>"
    )


def notify_toolset(job: Job, progress: Progress | None) -> "FunctionToolset[None]":
    """The `notify(message)` tool: sends to the job's Apprise URLs, never fails the run."""
    import asyncio

    from pydantic_ai.toolsets import FunctionToolset

    from tasty_oneshot.notify import send

    async def notify(message: str) -> str:
        """Send `message` to the job's alert channels (phone, chat, e-mail). Use it only when
        the instructions' condition for alerting someone holds."""
        outcome = await asyncio.to_thread(send, job.notify, f"tasty-oneshot {job.name}", message)
        if progress is not None:
            progress.notes.append(f"notify tool: {outcome}")
        return "delivered" if outcome == "sent" else f"not delivered ({outcome}); go on"

    return FunctionToolset([notify])


async def run_agent(
    job: Job,
    model: "Model",
    server: StdioServer | None,
    now: datetime,
    progress: Progress | None = None,
    previous: tuple[str, str] | None = None,
) -> AgentResult:
    """Run the job's instructions once; AgentFailed on a model, MCP server or limit error.

    `server` is the job's started stdio server (None for a remote one). `progress` (with
    .usage, .cost and .notes) is kept up to date for a run that is stopped midway; `previous`
    is (finished_at, output) of the last successful run, when remembered.
    """
    from pydantic_ai import Agent
    from pydantic_ai.exceptions import UsageLimitExceeded

    from tasty_oneshot.progress import LoggedTools, RequestClock
    from tasty_oneshot.trading import TradingPolicy

    # Library warnings (e.g. pydantic-ai cannot price the model, so max_cost cannot apply)
    # become our log lines: stderr holds nothing else.
    warnings.showwarning = _log_warning
    toolsets: list[AbstractToolset[None]] = [
        LoggedTools(TradingPolicy(mcp_toolset(job.mcp, server), mode=job.trading))
    ]
    if job.notify:
        toolsets.append(LoggedTools(notify_toolset(job, progress)))
    clock = RequestClock()
    agent = Agent(model, toolsets=toolsets, instructions=instructions_for(job, now))
    limits = usage_limits(job.limits)
    run: AgentRun[None, str] | None = None
    try:
        async with agent.iter(prompt_for(job, previous), usage_limits=limits) as run:
            async for node in run:
                usage, cost = _usage(run)
                clock.saw(node, usage)
                if progress is not None:
                    progress.usage, progress.cost = usage, cost
            if run.result is None:
                raise RuntimeError("the agent run ended without a result")
            output = run.result.output
    except UsageLimitExceeded as exc:
        clock.summary(*_usage(run))
        raise AgentFailed(f"limit: {exc}", *_usage(run)) from exc
    except Exception as exc:
        clock.summary(*_usage(run))
        reason = f"error: {one_line(exc)}"
        if server is not None and _server_caused(exc):
            reason = f"error: {server.failure(one_line(exc))}"  # what it said, if it exited
        raise AgentFailed(reason, *_usage(run)) from exc
    clock.summary(*_usage(run))
    return AgentResult(str(output), *_usage(run))


def _server_caused(exc: BaseException) -> bool:
    """Whether a failure may be the MCP server's (its log may say why), not the model's."""
    from pydantic_ai.exceptions import ModelAPIError, UnexpectedModelBehavior, UserError

    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return not isinstance(exc, ModelAPIError | UnexpectedModelBehavior | UserError)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    logging.getLogger("tasty_oneshot").warning(
        "%s: %s", category.__name__, " ".join(str(message).split())
    )


def _usage(run: "AgentRun[None, str] | None") -> tuple[Usage, float | None]:
    if run is None:
        return Usage(), None
    u = run.usage
    raw_cost = getattr(u, "cost", None)  # a Decimal, or None when the model cannot be priced
    cost = float(raw_cost) if raw_cost is not None else None
    return Usage(u.requests, u.input_tokens, u.output_tokens, u.tool_calls), cost
