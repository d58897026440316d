"""Reading the jobs file: bytes to checked keys, every job, every time; then one job, resolved
from the file and the command line.

Nothing about it is cached: what a run does comes from the jobs file and the command line,
never from a file in the state directory. Reading it stays cheap (libyaml, one pass): the
bytes must be UTF-8 and at most MAX_BYTES, the YAML at most MAX_DEPTH deep and MAX_NODES
nodes counted through aliases, no key given twice. Then `${VAR}` in strings is replaced from
the environment, relative `mcp` paths are read against the file's own directory, and every
key is checked. Each error is one line naming the file, the job and the key.
"""

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tasty_oneshot.errors import UsageError
from tasty_oneshot.jobs import (
    DEFAULT_MAX_DELAY,
    DEFAULT_TIMEOUT,
    JOB_KEYS,
    MAX_TEXT,
    MODEL_ENV,
    NAME,
    NAME_RULE,
    SCHEDULE_KEYS,
    TOP_KEYS,
    Job,
    Limits,
    McpServer,
    check_keys,
    label,
    schedule_from,
    shown,
)
from tasty_oneshot.model_names import model_problem
from tasty_oneshot.model_names import shown as shown_model

MAX_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_NODES = 100_000
VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


class JobsFile(NamedTuple):
    path: Path
    defaults: dict[str, Any]  # top-level keys, checked
    jobs: dict[str, dict[str, Any]]  # name -> the job's own keys, checked


def load_jobs_file(path: Path) -> JobsFile:
    """Read and check the whole jobs file: every job, not just the one asked for."""
    defaults, raw_jobs = _top_level(path)
    jobs = {}
    for job_name, raw in raw_jobs.items():
        where = f"{path}: job '{shown(job_name)}': "
        if not isinstance(job_name, str) or not NAME.match(job_name):
            raise UsageError(f"{where}the name must be {NAME_RULE}")
        if not isinstance(raw, dict):
            raise UsageError(f"{where}expected a mapping of keys")
        keys = _relative_mcp(check_keys(_interpolated(raw, where), JOB_KEYS, where), path)
        if "instructions" not in keys:
            raise UsageError(f"{where}key 'instructions': missing")
        schedule_from(keys, where)  # the keys must also make sense together
        jobs[job_name] = keys
    return JobsFile(path=path, defaults=defaults, jobs=jobs)


def load_defaults(path: Path) -> dict[str, Any]:
    """Only the jobs file's top-level keys, checked (for the commands that read the
    ledger: a job with a bad key must not hide the history that explains it)."""
    return _top_level(path)[0]


def _top_level(path: Path) -> tuple[dict[str, Any], dict[Any, Any]]:
    """The checked top-level keys, and the unchecked mapping of jobs."""
    data = _parse(path, _read(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with 'jobs' at the top level")
    data = dict(data)
    raw_jobs = data.pop("jobs", None) or {}
    if not isinstance(raw_jobs, dict):
        raise UsageError(f"{path}: key 'jobs': expected a mapping of job names to jobs")
    where = f"{path}: "
    defaults = _relative_mcp(check_keys(_interpolated(data, where), TOP_KEYS, where), path)
    return defaults, raw_jobs


def notify_sources(
    jobs_file: JobsFile | None, options: dict[str, Any]
) -> list[tuple[str, tuple[str, ...]]]:
    """Every Apprise URL of the jobs file and the command line, with where it comes from."""
    sources = []
    if jobs_file is not None:
        sources.append((f"{jobs_file.path}: ", jobs_file.defaults.get("notify", ())))
        for name, keys in jobs_file.jobs.items():
            sources.append((f"{jobs_file.path}: job '{name}': ", keys.get("notify", ())))
    sources.append(("", options.get("notify", ())))
    return sources


def resolve_job(
    jobs_file: JobsFile | None,
    *,
    job_name: str | None,
    instructions: str | None,
    name: str | None,
    options: Mapping[str, Any],
) -> Job:
    """One job: the command line's options over the job's keys over the file's defaults.

    `options` holds the command line's job keys (already checked), only those given.
    """
    if job_name is not None and instructions is None:
        if not NAME.match(job_name):
            raise UsageError(f"--job {job_name[:80]!r}: no such job: a name is {NAME_RULE}")
        if name is not None:
            raise UsageError("--name names an ad hoc job (INSTRUCTIONS); a --job has its name")
        if jobs_file is None:
            from tasty_oneshot.paths import where_looked

            raise UsageError(f"--job {job_name}: no jobs file found ({where_looked()})")
        if job_name not in jobs_file.jobs:
            known = ", ".join(sorted(jobs_file.jobs)) or "none"
            raise UsageError(f"{jobs_file.path}: job '{job_name}': no such job (jobs: {known})")
        own = jobs_file.jobs[job_name]
        where = f"{jobs_file.path}: job '{job_name}': "
        source: Path | None = jobs_file.path
    elif instructions is not None and job_name is None:
        if not instructions.strip():
            raise UsageError("INSTRUCTIONS is empty")
        if len(instructions) > MAX_TEXT:
            raise UsageError(f"INSTRUCTIONS: longer than {MAX_TEXT} characters")
        own = {"instructions": instructions}
        job_name = name or adhoc_name(instructions)
        if not NAME.match(job_name):
            raise UsageError(f"--name {job_name[:80]!r}: must be {NAME_RULE}")
        where = ""
        source = None
    else:
        known = (
            f" (jobs in {jobs_file.path}: {', '.join(sorted(jobs_file.jobs))})"
            if (jobs_file is not None and jobs_file.jobs and job_name is None)
            else ""
        )
        raise UsageError(f"give exactly one of INSTRUCTIONS or --job NAME{known}")
    defaults = jobs_file.defaults if jobs_file else {}
    merged = {**defaults, **own}
    schedule_where = where
    if any(k in options for k in SCHEDULE_KEYS):
        # A schedule on the command line replaces the job's schedule as a whole.
        merged = {k: v for k, v in merged.items() if k not in SCHEDULE_KEYS}
        schedule_where = ""
    merged.update(options)
    schedule = schedule_from(merged, schedule_where)
    limits = Limits(
        **{
            k: merged[k]
            for k in ("max_requests", "max_tool_calls", "max_tokens", "max_cost")
            if k in merged
        }
    )
    model = merged.get("model") or os.environ.get(MODEL_ENV) or None
    if "model" in options:
        model_from = "--model"
    elif "model" in own and where:
        model_from = label(where, "model")
    elif "model" in defaults and jobs_file is not None:
        model_from = label(f"{jobs_file.path}: ", "model")
    else:
        model_from = f"${MODEL_ENV}"
    if model:
        check_model(model, model_from)
    return Job(
        name=job_name,
        instructions=merged["instructions"],
        schedule=schedule,
        ignore_market_hours=merged.get("ignore_market_hours", False),
        model=model,
        mcp=merged.get("mcp"),
        trading=merged.get("trading", "read-only"),
        timeout=merged.get("timeout", DEFAULT_TIMEOUT),
        max_delay=merged.get("max_delay", DEFAULT_MAX_DELAY),
        limits=limits,
        remember=merged.get("remember", "none"),
        notify=merged.get("notify", ()),
        notify_on=merged.get("notify_on", ("failure",)),
        ping=merged.get("ping"),
        source=source,
        model_from=model_from,
    )


def check_model(model: str, given_in: str) -> None:
    """Refuse (exit 2) a model identifier pydantic-ai cannot resolve, naming where it was given
    and the identifier meant. Cheap (see model_names), so it runs whenever a job loads, a run
    the market check skips included."""
    problem = model_problem(model)
    if problem:
        raise UsageError(f"{given_in}: model {shown_model(model)}: {problem}")


def adhoc_name(instructions: str) -> str:
    """A stable name for ad hoc instructions: a readable slug plus a short hash."""
    import hashlib  # not at the top: only ad hoc runs need it, and a skip must stay light

    slug = re.sub(r"[^a-z0-9]+", "-", instructions.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(instructions.encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"job-{digest}"


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the jobs file: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise UsageError(f"{path}: the jobs file is larger than {MAX_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{path}: not UTF-8 text (line {line}: byte {data[exc.start]:#04x})"
        ) from None


def _parse(path: Path, text: str) -> Any:
    """The YAML document, refusing keys given twice, absurd nesting and alias bombs."""
    import yaml

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = None
    try:
        loader = loader_class(text)  # the pure-Python one reads the text here already
        node = loader.get_single_node()
        if node is not None:
            _check_shape(path, node)
        return loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (NUL, ESC, ...): it has no problem_mark, so find it.
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        line = text[: max(text.find(char), 0)].count("\n") + 1
        raise UsageError(
            f"{path}: not valid YAML (line {line}): the character {char!r} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or "invalid YAML").split())
        raise UsageError(f"{path}: not valid YAML{at}: {problem}") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        # e.g. a date like 2026-02-31, or a timestamp out of range
        raise UsageError(f"{path}: not a jobs file YAML can hold: {type(exc).__name__}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_shape(path: Path, root: Any) -> None:
    """Refuse what no jobs file needs: deep nesting, too many nodes, a key given twice."""
    import yaml

    stack: list[tuple[Any, tuple[str, ...], int]] = [(root, (), 1)]
    seen_nodes = 0
    while stack:
        node, trail, depth = stack.pop()
        seen_nodes += 1
        if seen_nodes > MAX_NODES:
            raise UsageError(f"{path}: more than {MAX_NODES} YAML nodes (aliases counted)")
        if depth > MAX_DEPTH:
            raise UsageError(f"{path}: {_place(trail)}nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, trail, depth + 1) for item in reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            names: set[str | None] = set()
            children = []
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in names:
                    place = _place((*trail, shown(name)))
                    what = (
                        "defined twice" if len(trail) == 1 and trail[0] == "jobs" else "given twice"
                    )
                    line = key.start_mark.line + 1
                    raise UsageError(f"{path}: {place}{what} (line {line})")
                names.add(name)
                children.append((value, (*trail, shown(name)), depth + 1))
            stack.extend(reversed(children))


def _place(trail: tuple[str, ...]) -> str:
    """How an error names a place in the file: `job 'x': key 'a.b': `, `key 'a': `, ``."""
    if len(trail) >= 2 and trail[0] == "jobs":
        keys = f"key '{'.'.join(trail[2:])}': " if len(trail) > 2 else ""
        return f"job '{trail[1]}': {keys}"
    return f"key '{'.'.join(trail)}': " if trail else ""


def _interpolated(keys: dict[Any, Any], where: str) -> dict[Any, Any]:
    """`${VAR}` in every string of these keys, from the environment (`$${` is a literal)."""
    out = {}
    for key, value in keys.items():

        def missing(name: str, key: Any = key) -> str:
            raise UsageError(
                f"{where}key '{shown(key)}': ${{{name}}} is not set "
                "(set it in the environment, ./.env or --env-file)"
            )

        out[key] = _substitute(value, missing)
    return out


def _substitute(value: Any, missing: Callable[[str], str]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match[1]:
                return "${" + match[2] + "}"
            found = os.environ.get(match[2])
            return found if found is not None else missing(match[2])

        return VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(item, missing) for item in value]
    if isinstance(value, dict):
        return {k: _substitute(v, missing) for k, v in value.items()}
    return value


def _relative_mcp(keys: dict[str, Any], path: Path) -> dict[str, Any]:
    """A stdio server's relative command, and args naming files, are read against the jobs
    file's directory, not the working directory (a timer's is $HOME or /)."""
    server = keys.get("mcp")
    if server is None or server.command is None:
        return keys
    base = path.parent
    command = server.command
    if os.sep in command and not os.path.isabs(command):
        command = str(base / command)
    args = tuple(str(base / arg) if _names_a_file(base, arg) else arg for arg in server.args)
    return {**keys, "mcp": McpServer(command=command, args=args)}


def _names_a_file(base: Path, arg: str) -> bool:
    if os.path.isabs(arg):
        return False
    try:
        return (base / arg).exists()
    except (OSError, ValueError):  # too long, or a NUL: not a file name
        return False
