"""Jobs: the jobs file, its defaults, and one resolved job ready to run.

The file is checked by a small table of keys rather than pydantic: a skipped run must start,
decide and exit in well under 150 ms, and importing pydantic alone costs more than that on the
machines this runs on. Every error names the file, the job and the key, on one line.
"""

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tasty_oneshot.errors import UsageError
from tasty_oneshot.paths import write_private
from tasty_oneshot.schedule import DAY, MARKET_OPEN, Schedule, parse_cron, parse_time

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
TRADING_MODES = ("read-only", "dry-run", "live")
MODEL_ENV = "MODEL_IDENTIFIER"
DEFAULT_TIMEOUT = 300.0  # seconds for the whole invocation
DEFAULT_MAX_DELAY = 300  # seconds a timer may be late for its slot


class McpServer(NamedTuple):
    """How to reach the MCP server: a stdio command, or a streamable-HTTP URL."""

    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None


class Limits(NamedTuple):
    """Per-run guardrails that stop a runaway loop."""

    max_requests: int = 30
    max_tool_calls: int = 60
    max_tokens: int = 400_000
    max_cost: float | None = None


class Job(NamedTuple):
    name: str
    instructions: str
    schedule: Schedule = Schedule()
    ignore_market_hours: bool = False
    model: str | None = None
    mcp: McpServer | None = None  # None: the tasty-agent server installed alongside
    trading: str = "read-only"
    timeout: float = DEFAULT_TIMEOUT
    max_delay: int = DEFAULT_MAX_DELAY
    limits: Limits = Limits()
    remember: str = "none"  # "last": the previous successful run's output goes to the model
    notify: tuple[str, ...] = ()  # Apprise URLs
    notify_on: tuple[str, ...] = ("failure",)  # when the run itself sends
    source: Path | None = None  # the jobs file it came from, if any


class JobsFile(NamedTuple):
    path: Path
    defaults: dict[str, Any]  # top-level keys, checked
    jobs: dict[str, dict[str, Any]]  # name -> the job's own keys, checked


# --- checking values -----------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("expected a positive whole number")
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError("expected a positive, finite number")
    return float(value)


def _schedule_time(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 9:30 as the sexagesimal number 570.
        raise ValueError('expected a time string; quote it, e.g. schedule: "9:30am"')
    parse_time(_text(value))
    return value


def _cron(value: Any) -> str:
    return parse_cron(_text(value))


def _trading(value: Any) -> str:
    if value not in TRADING_MODES:
        raise ValueError(f"expected one of {', '.join(TRADING_MODES)}")
    return value


def _model(value: Any) -> str:
    return _text(value).strip()


def _remember(value: Any) -> str:
    if value not in ("last", "none"):
        raise ValueError("expected last or none")
    return value


APPRISE_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.IGNORECASE)


def _notify(value: Any) -> tuple[str, ...]:
    """Apprise URLs, checked for shape here; apprise itself checks each one when the file is
    read afresh (see check_notify_urls), so the run that only skips never imports it."""
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise ValueError("expected a list of Apprise URLs")
    for index, url in enumerate(urls):
        if not isinstance(url, str) or not APPRISE_URL.match(url.strip()):
            raise ValueError(f"item {index + 1} is not an Apprise URL (scheme://...)")
    return tuple(url.strip() for url in urls)


NOTIFY_EVENTS = ("output", "failure", "skip")


def _notify_on(value: Any) -> tuple[str, ...]:
    events = [value] if isinstance(value, str) else value
    if not isinstance(events, list) or not all(e in NOTIFY_EVENTS for e in events):
        raise ValueError(f"expected a list of {', '.join(NOTIFY_EVENTS)}")
    return tuple(dict.fromkeys(events))


def _mcp(value: Any) -> McpServer:
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping with command/args or url")
    unknown = set(value) - {"command", "args", "url"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r} (expected command, args or url)")
    if ("command" in value) == ("url" in value):
        raise ValueError("expected exactly one of command or url")
    if "url" in value:
        url = _text(value["url"])
        if not url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return McpServer(url=url)
    args = value.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise ValueError("args must be a list of strings")
    return McpServer(command=_text(value["command"]), args=tuple(str(a) for a in args))


# Keys a job may have; the same names with '-' are `run` options.
SCHEDULE_KEYS: dict[str, Callable[[Any], Any]] = {
    "schedule": _schedule_time,
    "market_open": _flag,
    "hourly": _flag,
    "daily": _flag,
    "period": _positive_int,
    "cron": _cron,
}
RUN_KEYS: dict[str, Callable[[Any], Any]] = {
    "ignore_market_hours": _flag,
    "model": _model,
    "mcp": _mcp,
    "trading": _trading,
    "timeout": _positive_number,
    "max_delay": _positive_int,
    "max_requests": _positive_int,
    "max_tool_calls": _positive_int,
    "max_tokens": _positive_int,
    "max_cost": _positive_number,
    "remember": _remember,
    "notify": _notify,
    "notify_on": _notify_on,
}
JOB_KEYS = {"instructions": _text, **SCHEDULE_KEYS, **RUN_KEYS}
TOP_KEYS = {**RUN_KEYS}  # defaults for every job, ad hoc runs included


def label(where: str, key: str) -> str:
    """How an error names a key: `FILE: job 'x': key 'k'`, or `--k` for the command line
    (`where` is empty)."""
    return f"{where}key '{key}'" if where else "--" + key.replace("_", "-")


def check_keys(
    values: Mapping[str, Any], allowed: Mapping[str, Callable[[Any], Any]], where: str
) -> dict[str, Any]:
    """Check each key against its checker; `where` prefixes the one-line error."""
    checked = {}
    for key, value in values.items():
        if key not in allowed:
            raise UsageError(f"{label(where, key)}: unknown key")
        try:
            checked[key] = allowed[key](value)
        except ValueError as exc:
            raise UsageError(f"{label(where, key)}: {exc}") from None
    return checked


def schedule_from(values: Mapping[str, Any], where: str) -> Schedule:
    """Turn schedule keys (already checked one by one) into a Schedule, checking them together.

    `where` prefixes errors; empty means the keys came from the command line.
    """

    def name(key: str) -> str:
        return f"'{key}'" if where else "--" + key.replace("_", "-")

    periods = [k for k in ("hourly", "daily", "period") if values.get(k) not in (None, False)]
    if len(periods) > 1:
        raise UsageError(
            f"{label(where, periods[1])}: at most one of "
            f"{', '.join(name(k) for k in ('hourly', 'daily', 'period'))}"
        )
    at_text = values.get("schedule")
    at = parse_time(at_text) if at_text else None
    if values.get("market_open"):
        if at is not None and at != MARKET_OPEN:
            raise UsageError(
                f"{label(where, 'market_open')}: means {name('schedule')} 9:30am, "
                f"which conflicts with {name('schedule')} {at_text}"
            )
        at = MARKET_OPEN
    period = {"hourly": 3600, "daily": DAY}.get(periods[0]) if periods else None
    if periods and periods[0] == "period":
        period = values["period"]
    cron = values.get("cron")
    if cron is not None and (at is not None or period is not None):
        raise UsageError(f"{label(where, 'cron')}: not combined with schedule or period keys")
    return Schedule(at=at, period=period, cron=cron)


# --- the jobs file -------------------------------------------------------------------------


def load_jobs_file(path: Path, cache_dir: Path | None = None) -> JobsFile:
    """Read and check the whole jobs file: every job, not just the one asked for.

    With `cache_dir`, a file that passed every check is kept there as JSON until it changes:
    a timer firing every few minutes then imports neither the YAML parser nor apprise. The
    key checks still run every time.
    """
    cache = _JobsFileCache(path, cache_dir) if cache_dir else None
    data = cache.read() if cache else None
    if data is not None:
        return _check_jobs_file(path, data)
    data = _parse(path)
    jobs_file = _check_jobs_file(path, data)
    for job_name, keys in [(None, jobs_file.defaults), *jobs_file.jobs.items()]:
        where = f"{path}: job '{job_name}': " if job_name else f"{path}: "
        check_notify_urls(keys.get("notify", ()), where)
    if cache:
        cache.write(data)
    return jobs_file


class _JobsFileCache:
    """The parsed jobs file as JSON in the state directory, valid while the file is unchanged
    (same inode, size and modification time)."""

    def __init__(self, path: Path, cache_dir: Path) -> None:
        try:
            stat = path.stat()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the jobs file: {exc.strerror}") from None
        self.version = f"{path.absolute()}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}"
        name = str(path.absolute()).replace("/", "%") + ".json"
        self.file = cache_dir / "jobs-files" / name

    def read(self) -> Any:
        try:
            cached = json.loads(self.file.read_text(encoding="utf-8"))
            return cached["data"] if cached["version"] == self.version else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, data: Any) -> None:
        # Only what JSON gives back unchanged is cached (YAML dates or int keys would not be).
        try:
            if json.loads(json.dumps(data)) != data:
                return
            # Private: it holds what the jobs file holds, Apprise credentials included.
            write_private(self.file, json.dumps({"version": self.version, "data": data}))
        except (OSError, TypeError, ValueError):
            pass  # a cache that cannot be written only costs the next run some time


def check_notify_urls(urls: tuple[str, ...], where: str) -> None:
    """Let apprise itself judge each URL (it knows every service's URL form)."""
    if not urls:
        return
    import apprise

    for index, url in enumerate(urls):
        if not apprise.Apprise().add(url):
            service = url.split("://", 1)[0]
            raise UsageError(
                f"{label(where, 'notify')}: item {index + 1} ({service}://...) is not a "
                "valid Apprise URL"
            )


def _parse(path: Path) -> Any:
    """The YAML of the jobs file, refusing keys given twice."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the jobs file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
        duplicate = _first_duplicate(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UsageError(f"{path}: not valid YAML{at}: {problem}") from None
    if duplicate:
        # PyYAML keeps the last of two equal keys: a job or a key would silently vanish.
        trail, line = duplicate
        if len(trail) >= 2 and trail[0] == "jobs":
            where, what = f"job '{trail[1]}': ", "defined twice"
            if len(trail) > 2:
                what = f"key '{'.'.join(trail[2:])}': given twice"
        else:
            where, what = "", f"key '{'.'.join(trail)}': given twice"
        raise UsageError(f"{path}: {where}{what} (line {line})")
    return data


def _check_jobs_file(path: Path, data: Any) -> JobsFile:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with 'jobs' at the top level")
    data = dict(data)  # the caller may cache what it passed in: leave that whole
    raw_jobs = data.pop("jobs", None) or {}
    if not isinstance(raw_jobs, dict):
        raise UsageError(f"{path}: key 'jobs': expected a mapping of job names to jobs")
    defaults = check_keys(data, TOP_KEYS, f"{path}: ")
    jobs = {}
    for job_name, raw in raw_jobs.items():
        where = f"{path}: job '{job_name}': "
        if not isinstance(job_name, str) or not NAME.match(job_name):
            raise UsageError(f"{where}the name must match [a-z0-9][a-z0-9-]*")
        if not isinstance(raw, dict):
            raise UsageError(f"{where}expected a mapping of keys")
        keys = check_keys(raw, JOB_KEYS, where)
        if "instructions" not in keys:
            raise UsageError(f"{where}key 'instructions': missing")
        schedule_from(keys, where)  # the keys must also make sense together
        jobs[job_name] = keys
    return JobsFile(path=path, defaults=defaults, jobs=jobs)


def _first_duplicate(root: Any) -> tuple[tuple[str, ...], int] | None:
    """The keys leading to the first key given twice in one mapping, and its line; or None."""
    import yaml

    stack: list[tuple[Any, tuple[str, ...]]] = [(root, ())]
    visited: set[int] = set()
    while stack:
        node, trail = stack.pop()
        if id(node) in visited:  # an alias of a node already walked (aliases may recurse)
            continue
        visited.add(id(node))
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = [(item, trail) for item in node.value]
        elif isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in seen:
                    return (*trail, name), key.start_mark.line + 1
                seen.add(name)
                children.append((value, (*trail, str(name))))
        stack.extend(reversed(children))
    return None


def adhoc_name(instructions: str) -> str:
    """A stable name for ad hoc instructions: a readable slug plus a short hash."""
    import hashlib  # not at the top: only ad hoc runs need it, and a skip must stay light

    slug = re.sub(r"[^a-z0-9]+", "-", instructions.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(instructions.encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"job-{digest}"


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
        if name is not None:
            raise UsageError("--name names an ad hoc job (INSTRUCTIONS); a --job has its name")
        if jobs_file is None:
            raise UsageError(f"--job {job_name}: no jobs file found (use --config FILE)")
        if job_name not in jobs_file.jobs:
            known = ", ".join(sorted(jobs_file.jobs)) or "none"
            raise UsageError(f"{jobs_file.path}: job '{job_name}': no such job (jobs: {known})")
        own = jobs_file.jobs[job_name]
        where = f"{jobs_file.path}: job '{job_name}': "
        source: Path | None = jobs_file.path
    elif instructions is not None and job_name is None:
        if not instructions.strip():
            raise UsageError("INSTRUCTIONS is empty")
        own = {"instructions": instructions}
        job_name = name or adhoc_name(instructions)
        if not NAME.match(job_name):
            raise UsageError(f"--name {job_name!r}: must match [a-z0-9][a-z0-9-]*")
        where = ""
        source = None
    else:
        raise UsageError("give exactly one of INSTRUCTIONS or --job NAME")
    defaults = jobs_file.defaults if jobs_file else {}
    merged = {**defaults, **own}
    if any(k in options for k in SCHEDULE_KEYS):
        # A schedule on the command line replaces the job's schedule as a whole.
        merged = {k: v for k, v in merged.items() if k not in SCHEDULE_KEYS}
        where = ""
    merged.update(options)
    schedule = schedule_from(merged, where)
    limits = Limits(
        **{
            k: merged[k]
            for k in ("max_requests", "max_tool_calls", "max_tokens", "max_cost")
            if k in merged
        }
    )
    model = merged.get("model") or os.environ.get(MODEL_ENV) or None
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
        source=source,
    )


def load_env_file(path: Path, *, required: bool) -> None:
    """Load a dotenv file into the environment, never overriding variables already set."""
    if not path.is_file():
        if required:
            raise UsageError(f"{path}: env file not found")
        return
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: env file not readable")
    from dotenv import load_dotenv  # only runs that have an env file pay for the import

    load_dotenv(path, override=False)
