"""Model identifiers: a cheap check whenever a job loads, and the suggestion for a wrong one.

Every command that loads a job (a skipped run included) checks its model's provider prefix
against PROVIDERS, pydantic-ai's providers as this version of it has them (a test keeps the
two equal), without importing pydantic-ai: that costs seconds, and a skip must stay light.
Only a refused identifier imports it, for its list of known models to suggest from.
"""

import re

# The providers pydantic-ai's infer_model makes a model of (`provider:name`); it accepts any
# name after a known provider, so only the provider can be checked without it.
PROVIDERS = (
    "alibaba",
    "anthropic",
    "azure",
    "azure-responses",
    "bedrock",
    "bedrock-mantle",
    "cerebras",
    "cohere",
    "crusoe",
    "deepseek",
    "fireworks",
    "github",
    "github-copilot",
    "google",
    "google-cloud",
    "google-decisions",
    "groq",
    "heroku",
    "huggingface",
    "litellm",
    "meta",
    "mistral",
    "moonshotai",
    "nebius",
    "ollama",
    "openai",
    "openai-chat",
    "openai-chatgpt",
    "openai-codex",
    "openai-decisions",
    "openai-responses",
    "openrouter",
    "ovhcloud",
    "sambanova",
    "snowflake",
    "system-one",
    "together",
    "typesafe",
    "vercel",
    "vllm",
    "xai",
    "zai",
)
# `gateway/PROVIDER:name` goes through the Pydantic AI Gateway; these are its aliases.
GATEWAY = "gateway/"
GATEWAY_ALIASES = {
    "chat": "openai-chat",
    "responses": "openai-responses",
    "converse": "bedrock",
    "google": "google-cloud",
}
# Where a suggestion has a choice (`claude-...` is also a Heroku and Snowflake model), the
# providers most people mean, in this order; then the others alphabetically, gateways last.
COMMON = ("openai", "anthropic", "google", "xai", "mistral", "groq", "deepseek", "cohere")
TEST_MODEL = "test"  # pydantic-ai's TestModel: the only identifier without a provider
MAX_SUGGESTED = 200  # characters: a longer identifier gets no suggestion (difflib is quadratic)


def known_provider(provider: str) -> bool:
    """Whether pydantic-ai makes a model of `provider:...` (gateway prefix and aliases too)."""
    if provider.startswith(GATEWAY):
        rest = provider.removeprefix(GATEWAY)
        provider = GATEWAY_ALIASES.get(rest, rest)
    return provider in PROVIDERS


def model_problem(model: str) -> str | None:
    """Why pydantic-ai cannot resolve `model`, with a suggestion, or None when it may: the
    cheap check (pydantic-ai is imported only to suggest, when the answer is no)."""
    provider, colon, _ = model.partition(":")
    if model == TEST_MODEL or (colon and known_provider(provider)):
        return None
    if colon:
        problem = f"Unknown model: no provider {shown(provider)}"
    else:
        problem = "Unknown model: an identifier is provider:name"
    suggested = suggestion(model)
    if suggested:
        return f"{problem}. Did you mean {shown(suggested)}?"
    return f"{problem} (providers include {', '.join(COMMON)})"


def suggestion(model: str) -> str | None:
    """The identifier most likely meant by `model`, which pydantic-ai cannot resolve: for a
    bare name, the provider whose models it names (`gpt-5-mini` -> `openai:gpt-5-mini`); for an
    unknown provider, the nearest provider, the name kept (`opnai:x` -> `openai:x`)."""
    if len(model) > MAX_SUGGESTED:
        return None
    provider, colon, name = model.partition(":")
    if colon:
        fixed = _near_provider(provider)
        if fixed:
            return f"{fixed}:{name}"
    known = known_models()
    if not colon:
        with_provider = _provider_for(model, known)
        if with_provider:
            return f"{with_provider}:{model}"
    import difflib

    names = [known_id.split(":", 1)[1] for known_id in known if ":" in known_id]
    close = difflib.get_close_matches(name if colon else model, names, n=1, cutoff=0.8)
    if close:
        return _preferred([known_id for known_id in known if known_id.endswith(":" + close[0])])
    return None


def near_known_name(model: str) -> str | None:
    """A listed model of the same provider that `model` (not listed itself) looks like a typo
    of, for a warning: pydantic-ai accepts any name, and new models appear all the time. A
    name whose numbers differ from the listed one's is taken for a newer model, not a typo."""
    provider, colon, name = model.partition(":")
    if not colon or len(model) > MAX_SUGGESTED:
        return None
    import difflib

    known = known_models()
    if model in known:
        return None
    names = [k.split(":", 1)[1] for k in known if k.startswith(provider + ":")]
    for close in difflib.get_close_matches(name, names, n=3, cutoff=0.85):
        if re.findall(r"\d+", close) == re.findall(r"\d+", name):
            return f"{provider}:{close}"
    return None


def known_models() -> tuple[str, ...]:
    """pydantic-ai's KnownModelName: the identifiers it lists (it imports pydantic-ai)."""
    import typing

    try:
        from pydantic_ai.models import KnownModelName
    except ImportError:
        return ()
    return tuple(typing.get_args(KnownModelName.__value__))


def shown(text: str) -> str:
    """An identifier as a message quotes it: at most 80 characters, control characters escaped."""
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _near_provider(provider: str) -> str | None:
    import difflib

    gateway = provider.lower().startswith(GATEWAY)
    wanted = provider.lower().removeprefix(GATEWAY) if gateway else provider.lower()
    choices = [*PROVIDERS, *GATEWAY_ALIASES] if gateway else list(PROVIDERS)
    close = difflib.get_close_matches(wanted, choices, n=1, cutoff=0.6)
    if not close:
        return None
    return GATEWAY + close[0] if gateway else close[0]


def _provider_for(name: str, known: tuple[str, ...]) -> str | None:
    """The provider of a bare model name: one that lists this very name, else one whose listed
    names are of the same family (`gpt-...`, `claude-...`, `gemini-...`)."""
    exact = [k.split(":", 1)[0] for k in known if k.endswith(":" + name)]
    if exact:
        return _preferred(exact)
    family = _family(name)
    if not family:
        return None
    pairs = [known_id.split(":", 1) for known_id in known if ":" in known_id]
    alike = [provider for provider, listed in pairs if _family(listed) == family]
    return _preferred(alike) if alike else None


def _family(name: str) -> str:
    """The leading word of a model name, lowercased: `gpt` of `gpt-5-mini`, `claude` of
    `claude-sonnet-4-6`, `qwen` of `qwen/qwen3.8-27b`."""
    match = re.match(r"[a-z]+", name.lower())
    return match[0] if match else ""


def _preferred(choices: list[str]) -> str:
    """Of identifiers (or providers), the one whose provider most people mean."""

    def rank(choice: str) -> tuple[int, int, str]:
        provider = choice.split(":", 1)[0]
        common = COMMON.index(provider) if provider in COMMON else len(COMMON)
        return (provider.startswith(GATEWAY), common, choice)

    return min(choices, key=rank)
