"""Kubernetes manifests for jobs: a ConfigMap with the jobs file, a CronJob per schedule line.

The CronJobs keep New York time themselves (`timeZone`), so their schedules are the crontab
lines for a cron in New York: exactly the job's fire times, several lines where one cannot
say them (`period: 5400`). Each pod runs `tasty-oneshot run --job NAME --config ...
--scheduled` from the mounted jobs file, gets its credentials from a Secret only, runs as a
non-root user on a read-only root file system, and keeps its state (SQLite ledger, locks,
caches) in an emptyDir that goes with the pod. The pods say what a run costs (memory and
CPU requests, a memory limit), and finished Jobs are cleaned up by age and by count.
"""

import hashlib
import os
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from tasty_oneshot.jobs import Job, shown
from tasty_oneshot.jobs_file import VARIABLE
from tasty_oneshot.schedule import NYC
from tasty_oneshot.units import crontab

ZONE = "America/New_York"
DEFAULT_SECRET = "tasty-oneshot"
CONFIG_MAP = "tasty-oneshot-jobs"
CONFIG_DIR = "/etc/tasty-oneshot"  # the ConfigMap, mounted read-only
CONFIG_FILE = "jobs.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
WORK_DIR = "/var/lib/tasty-oneshot"  # an emptyDir: HOME, and the state directory's parent
# A directory the run creates itself (mode 0700, its own user): the state directory must
# belong to the user running, and an emptyDir's top belongs to root.
STATE_DIR = f"{WORK_DIR}/state"
UID = 10001  # the Containerfile's user and group
# The CronJob controller names each Job NAME-<up to 11 digits>, and a Job's name must fit a
# 63-character label: so 52.
MAX_NAME = 52
LEDGER_ENV = "TASTY_ONESHOT_LEDGER"
POSTGRES = ("postgresql://", "postgres://")
DNS_LABEL = re.compile(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_PART = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = re.compile(rf"\A(?=.{{1,253}}\Z){_PART}(\.{_PART})*\Z")
LABELS = {"app.kubernetes.io/name": "tasty-oneshot"}

# What one run costs, so that the scheduler places a pod where it fits. One run peaked at
# 231 MB (220 MiB): the CLI with pydantic-ai and the tasty-agent server it starts, their RSS
# summed (benchmarks/many_at_once.py, a scripted model). The request is that with a little
# room. The limit is twice the request: a real model's answers and real tool results (an
# option chain, a long conversation) weigh more than the benchmark's, and reaching the limit
# is a SIGKILL in the middle of a run (no outcome, no alert, the row left `abandoned`, maybe
# an order in flight), where a limit set too high costs nothing until a run uses it.
MEMORY_REQUEST = "256Mi"
MEMORY_LIMIT = "512Mi"
# A quarter of a core: the start is CPU-bound (the CLI imports pydantic-ai, 1.8 s, while the
# server imports its own, 1.0 s), the rest of a run waits on the model. No CPU limit: a limit
# throttles the pod even on an idle node (at 500m that start would take three times as long or
# more), while the request already gives the pod its share of a busy node.
CPU_REQUEST = "250m"
# A finished Job and its pod (with the run's log) stay 4 days: a failure on the Friday
# before a long weekend can still be read on the Tuesday. The history limits keep frequent
# jobs to their last 3 successes and last 3 failures long before that (the API's defaults
# are 3 and 1: one failure more would hide whether it keeps failing).
FINISHED_JOB_TTL = 4 * 24 * 3600
SUCCESSFUL_JOBS_KEPT = 3
FAILED_JOBS_KEPT = 3


class NameClash(ValueError):
    """Two jobs would make CronJobs of the same name."""


def check_schedule(job: Job) -> None:
    """Refuse, with the reason, a schedule a CronJob cannot keep."""
    schedule = job.schedule
    if schedule.is_once:
        raise crontab.CannotExpress(
            "a schedule time alone fires once, and a CronJob would repeat it every year; "
            "add a period (daily: true) or start that one run by hand"
        )
    if schedule.cron is not None:
        from croniter import croniter

        # `#` becomes every such weekday, the slot guard skipping the others; but `15W` may
        # fall on the 14th or the 16th, which a line for the 15th would never start.
        if croniter(schedule.cron).nearest_weekday:
            raise crontab.CannotExpress(
                f"{schedule.cron!r}: 'W' (nearest weekday) has no cron form"
            )
    crontab.check_expressible(schedule)


def schedules(job: Job, now: datetime) -> list[str]:
    """The CronJob schedules (five cron fields, New York time) that say the job's fire times."""
    check_schedule(job)
    return crontab.cron_schedules(job, NYC, now)


def cron_job_names(job_name: str, count: int) -> list[str]:
    """`tasty-oneshot-NAME` for a job's first line, then `-2`, `-3` ... for further lines.
    Where those would be longer than MAX_NAME, or NAME is no DNS label (a job name may end in
    `-`), `tasty-oneshot-NAME` is cut to fit and gets `-` and 8 hex digits of the job name's
    SHA-256 before the suffix: the same names on every generation."""
    suffixes = ["", *(f"-{number}" for number in range(2, count + 1))]
    longest = max(len(suffix) for suffix in suffixes)
    stem = f"tasty-oneshot-{job_name}"
    if len(stem) + longest > MAX_NAME or not DNS_LABEL.match(stem):
        digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
        stem = f"{stem[: MAX_NAME - longest - len(digest) - 1].rstrip('-')}-{digest}"
    return [stem + suffix for suffix in suffixes]


def postgres_ledger(file_ledger: str | None) -> bool:
    """Whether runs share a PostgreSQL ledger: $TASTY_ONESHOT_LEDGER or the jobs file's
    top-level `ledger` names one."""
    urls = (os.environ.get(LEDGER_ENV) or "", file_ledger or "")
    return any(url.startswith(POSTGRES) for url in urls)


# Stands for a `${VAR}` reference while a URL is taken apart (a private-use character).
REFERENCE = "\ue000"
LIBPQ_PASSWORDS = ("password", "sslpassword")  # query keys libpq reads a password from


def literal_credential(document: Any) -> tuple[str, str] | None:
    """The first URL of the jobs file, as it is on disk (`${VAR}` unresolved), that holds a
    credential as text, as (where and key, what): the ConfigMap carries the file verbatim.
    A `ledger` URL must not hold its password as text; a `ping`, `notify` or `mcp.url` URL
    is the secret itself (a ping URL's path is its check's token; Apprise URLs carry tokens
    in the host, path and query), so all but its scheme, user name, host name and port must
    be `${VAR}`."""
    if not isinstance(document, dict):
        return None
    jobs = document.get("jobs")
    places = [("", document)]
    if isinstance(jobs, dict):
        places += [(f"job '{shown(name)}': ", keys) for name, keys in jobs.items()]
    for where, keys in places:
        for key, url, whole in _credential_urls(keys, top=not where):
            problem = _credential_in(url, whole)
            if problem is not None:
                return f"{where}{key}", problem
    return None


def _credential_urls(keys: Any, top: bool) -> Iterator[tuple[str, str, bool]]:
    """(key as an error names it, URL, whether the whole URL is a secret) of one place."""
    if not isinstance(keys, dict):
        return
    if top and isinstance(keys.get("ledger"), str):
        yield "key 'ledger'", keys["ledger"], False
    notify = keys.get("notify")
    if isinstance(notify, str):
        yield "key 'notify'", notify, True
    elif isinstance(notify, list):
        for index, url in enumerate(notify):
            if isinstance(url, str):
                yield f"key 'notify' (item {index + 1})", url, True
    if isinstance(keys.get("ping"), str):
        yield "key 'ping'", keys["ping"], True
    mcp = keys.get("mcp")
    if isinstance(mcp, dict) and isinstance(mcp.get("url"), str):
        yield "key 'mcp.url'", mcp["url"], True


def _credential_in(url: str, whole: bool) -> str | None:
    """What of `url` is a credential written as text, or None. The URL is read both as
    Python (and Apprise) and as libpq split one, so a password with an unencoded `#`, `?`,
    `/` or `@` in it is found whichever way it is read."""
    text = url.strip().replace(REFERENCE, "\ufffd")  # a REFERENCE written in the file is text
    marked = VARIABLE.sub(lambda m: m[0][1:] if m[1] else REFERENCE, text)
    try:
        parts = urlsplit(marked)
    except ValueError:  # e.g. an unbalanced `[`: no telling what is what
        return "it cannot be read as a URL, so it may hold a credential as text"
    user, at, _ = marked.split("://", 1)[-1].partition("@")
    libpq = user.partition(":")[2] if at and "/" not in user else ""  # up to the first `@`
    query = _query(parts.query)
    passwords = [parts.password or "", libpq]
    passwords += [value for key, value in query if key in LIBPQ_PASSWORDS]
    if not whole:  # a ledger URL: also every password libpq finds (`db#?password=...`)
        from tasty_oneshot.ledger.postgres_url import PostgresUrl

        passwords += PostgresUrl(marked).passwords()
    if any(map(_literal, passwords)):
        return "its password is written out"
    host, port = _host_and_port(parts.netloc.rpartition("@")[2])
    if _literal(port) and not port.isdigit():  # `user:pa/ss@host`: the password ends at `/`
        return "its port holds text (a password with a `/` in it, or a token)"
    if not whole:
        # The database name is no secret, but a `@` after the host is a password's.
        return "its password is written out" if "@" in parts.path + parts.query else None
    if _literal(host) and "." not in host and host != "localhost" and not host.startswith("["):
        return "its host is a token written out"
    if any(_literal(segment) for segment in parts.path.split("/")):
        return "its path is written out (such a URL carries its token there)"
    if any(_literal(value) for _, value in query) or _literal(parts.fragment):
        return "its query is written out (such a URL carries its token there)"
    return None


def _query(text: str) -> list[tuple[str, str]]:
    """A query's (key, value) pairs, keys decoded as libpq decodes them; an item without `=`
    is a value of its own (a bare token)."""
    pairs = []
    for item in text.split("&"):
        key, equals, value = item.partition("=")
        pairs.append((unquote(key), value) if equals else ("", key))
    return pairs


def _host_and_port(host_port: str) -> tuple[str, str]:
    """A URL's host and port as written (`[::1]:80`, `host:80`, `host`)."""
    if host_port.startswith("["):
        address, _, after = host_port.partition("]")
        return address + "]", after.removeprefix(":")
    host, _, port = host_port.partition(":")
    return host, port


def _literal(part: str) -> bool:
    """Whether a part of a URL holds text besides `${VAR}` references."""
    return bool(part.replace(REFERENCE, ""))


def config_map(jobs_text: str, namespace: str | None) -> dict[str, Any]:
    """The jobs file as it is on disk: its `${VAR}`s are resolved by each run, from the
    Secret's variables, so no secret value is ever in a manifest."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(CONFIG_MAP, namespace),
        "data": {CONFIG_FILE: jobs_text},
    }


def cron_job(
    job: Job, name: str, schedule: str, image: str, secret: str, namespace: str | None
) -> dict[str, Any]:
    """One CronJob: one schedule line of `job`, one pod per firing, one `run --scheduled`."""
    metadata = _metadata(name, namespace)
    metadata["annotations"] = {
        "tasty-oneshot/job": job.name,
        "tasty-oneshot/schedule": job.schedule.describe(),
    }
    container = {
        "name": "tasty-oneshot",
        "image": image,
        "command": ["tasty-oneshot"],
        "args": ["run", "--job", job.name, "--config", CONFIG_PATH, "--scheduled"],
        # Credentials reach the run through the Secret only, never through this manifest.
        "envFrom": [{"secretRef": {"name": secret}}],
        "env": [
            {"name": "TASTY_ONESHOT_STATE_DIR", "value": STATE_DIR},
            {"name": "HOME", "value": WORK_DIR},
        ],
        "resources": {
            "requests": {"memory": MEMORY_REQUEST, "cpu": CPU_REQUEST},
            "limits": {"memory": MEMORY_LIMIT},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "jobs-file", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the run never talks to the cluster
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "jobs-file", "configMap": {"name": CONFIG_MAP}},
            {"name": "work", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata,
        "spec": {
            "schedule": schedule,
            "timeZone": ZONE,
            # A firing while the last run still runs is dropped, as the job lock would.
            "concurrencyPolicy": "Forbid",
            # Later than max_delay the slot guard would skip the run anyway.
            "startingDeadlineSeconds": job.max_delay,
            "successfulJobsHistoryLimit": SUCCESSFUL_JOBS_KEPT,
            "failedJobsHistoryLimit": FAILED_JOBS_KEPT,
            "jobTemplate": {
                "spec": {
                    # A failed run used up its slot: a retry would only be skipped.
                    "backoffLimit": 0,
                    # The run stops itself at its timeout (exit 124); this is the backstop.
                    "activeDeadlineSeconds": int(job.timeout) + 60,
                    "ttlSecondsAfterFinished": FINISHED_JOB_TTL,
                    "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod},
                }
            },
        },
    }


def manifests(
    jobs: list[Job],
    schedules_by_job: dict[str, list[str]],
    jobs_text: str,
    image: str,
    secret: str,
    namespace: str | None,
) -> list[dict[str, Any]]:
    """The ConfigMap, then each job's CronJobs, jobs by name."""
    out = [config_map(jobs_text, namespace)]
    owners: dict[str, str] = {}
    for job in sorted(jobs, key=lambda job: job.name):
        lines = schedules_by_job[job.name]
        for name, line in zip(cron_job_names(job.name, len(lines)), lines, strict=True):
            if name in owners:  # job `a`'s second line and job `a-2` are both `...-a-2`
                raise NameClash(
                    f"jobs '{owners[name]}' and '{job.name}' would both be the CronJob "
                    f"{name}: rename one"
                )
            owners[name] = job.name
            out.append(cron_job(job, name, line, image, secret, namespace))
    return out


def stream(documents: list[dict[str, Any]]) -> str:
    """A `---` separated YAML stream, keys in the order written, the jobs file as a block."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # A block (`|`) keeps the jobs file readable; PyYAML quotes it where a block cannot
        # hold it (trailing spaces, tabs, control characters).
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(
        documents,
        Dumper=Dumper,
        sort_keys=False,
        explicit_start=True,
        allow_unicode=True,
        width=1 << 16,
    )


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(LABELS)
    return metadata
