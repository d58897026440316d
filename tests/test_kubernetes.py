"""`generate-units --target kubernetes` through the CLI, and the Containerfile.

The manifests are checked offline against the Kubernetes API's JSON schemas, strict (no field
the API does not know), for Kubernetes 1.29 and for the newest version kubernetes-validate
ships; then for what no schema says: the contract's values, the security settings, names, no
secret anywhere, and the schedules themselves.

Schedules: croniter replays each CronJob's schedule in America/New_York (its `timeZone`) over
a week around each 2026 daylight-saving change (spring forward 2026-03-08 07:00 UTC, fall back
2026-11-01 06:00 UTC). Like the CronJob controller (kubernetes#121594), croniter starts a time
the fall-back night repeats twice, once in each pass; unlike it, croniter starts a time the
spring-forward gap skips at the jump (03:00 EDT). Neither is a fire time. So: every fire time
of the job (`Schedule.fire_times`, what `run` and `next` use) is a firing, every other firing
is one of those two, and the slot guard (`check_slot`, what `run --scheduled` decides with)
turns the firings into exactly the fire times, each once. The controller's double start on the
fall-back night is then replayed with the CLI, the clock moved.
"""

import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import yaml
from conftest import Workspace, make_workspace
from croniter import croniter
from kubernetes_validate import utils as kubernetes_schemas

from tasty_oneshot.jobs import DEFAULT_MAX_DELAY, DEFAULT_TIMEOUT, SCHEDULE_KEYS, check_keys
from tasty_oneshot.jobs import schedule_from as make_schedule
from tasty_oneshot.schedule import Schedule, check_slot

ROOT = Path(__file__).parent.parent
JOBS_FILE = Path(__file__).parent / "fixtures" / "kubernetes-jobs.yaml"
JOBS: dict[str, Any] = yaml.safe_load(JOBS_FILE.read_text())
IMAGE = "registry.example.org/trading/tasty-oneshot:0.1.0"
NYC = ZoneInfo("America/New_York")
NAME = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")  # a DNS-1123 label
# Plain numbers and `*` only: what Kubernetes' cron parser and every cron read alike.
PLAIN_FIELDS = re.compile(r"\A[0-9,*]+( [0-9,*]+){4}\Z")
SCHEMA_VERSIONS = ["1.29", kubernetes_schemas.latest_version().rsplit(".", 1)[0]]
SPRING_FORWARD = datetime(2026, 3, 8, 7, tzinfo=UTC)  # 02:00 EST becomes 03:00 EDT
WINDOWS = [
    (datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC)),
    (datetime(2026, 10, 28, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)),
]
# Jobs whose schedule takes more than one line, and how many.
LINES = {
    "every-90-minutes": 2,
    "every-80-minutes": 3,
    "sixty-four-characters-is-the-longest-name-a-job-may-have-so-here": 2,
}


def generate(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return ws.call("generate-units", "--target", "kubernetes", *args)


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def error_line(result: subprocess.CompletedProcess) -> str:
    """A refusal: exit 2, nothing on stdout, one line on stderr; that line."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and " - ERROR - " in lines[0], result.stderr
    return lines[0]


def expected_schedule(name: str) -> Schedule:
    keys = {k: v for k, v in JOBS["jobs"][name].items() if k in SCHEDULE_KEYS}
    return make_schedule(check_keys(keys, SCHEDULE_KEYS, ""), "")


def job_key(name: str, key: str, default: Any) -> Any:
    """A key of a job of the fixture, else the file's default for it, else `default`."""
    return JOBS["jobs"][name].get(key, JOBS.get(key, default))


def container(cron_job: dict[str, Any]) -> dict[str, Any]:
    [only] = pod(cron_job)["containers"]
    return only


def pod(cron_job: dict[str, Any]) -> dict[str, Any]:
    return cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def job_of(cron_job: dict[str, Any]) -> str:
    args = container(cron_job)["args"]
    return args[args.index("--job") + 1]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> subprocess.CompletedProcess:
    """`generate-units --all --target kubernetes` over the fixture jobs, once."""
    ws = make_workspace(tmp_path_factory.mktemp("kubernetes"))
    shutil.copy(JOBS_FILE, ws.root / "jobs.yaml")
    result = generate(
        ws, "--all", "--config", "jobs.yaml", "--image", IMAGE, "--namespace", "trading"
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def manifests(generated) -> list[dict[str, Any]]:
    return documents(generated.stdout)


@pytest.fixture(scope="module")
def cron_jobs(manifests) -> dict[str, list[dict[str, Any]]]:
    """Job name -> its CronJobs, in the order printed."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in manifests[1:]:
        out.setdefault(job_of(doc), []).append(doc)
    return out


# --- the API's own schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_api_strictly(manifests, version):
    kinds = [doc["kind"] for doc in manifests]
    assert kinds == ["ConfigMap"] + ["CronJob"] * (len(manifests) - 1)
    for doc in manifests:
        try:
            used = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message}")
        assert used == version  # the schemas of that very version, not an older fallback
    # Strict means strict: a field the API does not know is refused.
    misspelt = json.loads(json.dumps(manifests[1]))
    misspelt["spec"]["timezone"] = misspelt["spec"].pop("timeZone")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)


# --- what the schemas do not say ---------------------------------------------------------------


def test_the_stream_is_the_config_map_then_the_cron_jobs_by_job_name(generated, manifests):
    assert generated.stdout.startswith("---\n")
    config_map = manifests[0]
    assert config_map["apiVersion"] == "v1" and config_map["kind"] == "ConfigMap"
    # The jobs file as it is on disk, comments and all.
    assert list(config_map["data"].values()) == [JOBS_FILE.read_text()]
    order = [job_of(doc) for doc in manifests[1:]]
    assert order == sorted(order)
    assert set(order) == set(JOBS["jobs"])
    assert all(doc["metadata"]["namespace"] == "trading" for doc in manifests)


def test_each_cron_job_runs_its_job_as_the_contract_says(manifests, cron_jobs):
    config_map = manifests[0]
    for name, jobs in cron_jobs.items():
        assert len(jobs) == LINES.get(name, 1), name
        for cron_job in jobs:
            spec = cron_job["spec"]
            assert cron_job["apiVersion"] == "batch/v1"
            assert ZoneInfo(spec["timeZone"]).key == "America/New_York"
            assert spec["concurrencyPolicy"] in ("Allow", "Forbid", "Replace")
            assert spec["concurrencyPolicy"] == "Forbid"
            assert spec["startingDeadlineSeconds"] == job_key(name, "max_delay", DEFAULT_MAX_DELAY)
            job_spec = spec["jobTemplate"]["spec"]
            assert job_spec["backoffLimit"] == 0
            timeout = job_key(name, "timeout", DEFAULT_TIMEOUT)
            assert job_spec["activeDeadlineSeconds"] == timeout + 60
            assert pod(cron_job)["restartPolicy"] == "Never"

            run = container(cron_job)
            assert run["image"] == IMAGE
            assert run["command"] == ["tasty-oneshot"]
            assert run["args"][:3] == ["run", "--job", name]
            assert run["args"][3] == "--config" and run["args"][5:] == ["--scheduled"]
            assert len(run["args"]) == 6
            # --config names the jobs file of the ConfigMap, mounted read-only.
            config = Path(run["args"][4])
            mounts = {m["mountPath"]: m for m in run["volumeMounts"]}
            volumes = {v["name"]: v for v in pod(cron_job)["volumes"]}
            mount = mounts[str(config.parent)]
            assert mount["readOnly"] is True
            assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
            assert config.name in config_map["data"]


def test_names_fit_kubernetes_and_say_the_job(cron_jobs):
    seen = set()
    for name, jobs in cron_jobs.items():
        names = [cron_job["metadata"]["name"] for cron_job in jobs]
        for index, cron_name in enumerate(names):
            assert len(cron_name) <= 52 and NAME.match(cron_name), cron_name
            assert cron_name.startswith("tasty-oneshot-")
            if index:
                assert cron_name.endswith(f"-{index + 1}"), names
        seen |= set(names)
        whole = f"tasty-oneshot-{name}"
        if len(whole) <= 52 and NAME.match(whole):
            assert names[0] == whole
        else:  # cut, with a short hash of the job name
            assert re.fullmatch(r"tasty-oneshot-[a-z0-9-]*[a-z0-9]-[0-9a-f]{8}", names[0])
            assert names[0].startswith(whole[:30])
    assert len(seen) == sum(len(jobs) for jobs in cron_jobs.values())
    long = "sixty-four-characters-is-the-longest-name-a-job-may-have-so-here"
    first, second = (j["metadata"]["name"] for j in cron_jobs[long])
    assert second == first + "-2"


def test_a_cron_job_name_of_52_characters_is_kept_and_one_of_53_is_cut(ws):
    # `tasty-oneshot-` is 14 characters: a 38-character job name makes 52, the most a
    # CronJob's name may have; 39 make 53. With two lines, "-2" counts as well.
    names = {"one-52": "a" * 38, "one-53": "b" * 39, "two-52": "c" * 36, "two-53": "d" * 37}
    ws.write(
        "jobs.yaml",
        "jobs:\n"
        + "".join(
            f"  {name}:\n    instructions: Check\n"
            + ("    period: 5400\n" if kind.startswith("two") else "    hourly: true\n")
            for kind, name in names.items()
        ),
    )
    result = generate(ws, "--all", "--config", "jobs.yaml", "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    made: dict[str, list[str]] = {}
    for doc in documents(result.stdout)[1:]:
        made.setdefault(job_of(doc), []).append(doc["metadata"]["name"])
    assert made[names["one-52"]] == ["tasty-oneshot-" + "a" * 38]
    assert made[names["two-52"]] == [
        "tasty-oneshot-" + "c" * 36,
        "tasty-oneshot-" + "c" * 36 + "-2",
    ]
    for kind in ("one-53", "two-53"):
        cut = made[names[kind]]
        assert all(len(name) <= 52 and NAME.match(name) for name in cut), cut
        assert re.fullmatch(r"tasty-oneshot-[a-z]+-[0-9a-f]{8}", cut[0]), cut
    assert made[names["two-53"]][1] == made[names["two-53"]][0] + "-2"
    assert len(made[names["one-53"]][0]) == 52  # cut to the most there is room for


def test_pods_run_as_non_root_on_a_read_only_root_with_every_capability_dropped(manifests):
    for cron_job in manifests[1:]:
        spec = pod(cron_job)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        for key in ("runAsUser", "runAsGroup"):
            assert isinstance(pod_security[key], int) and pod_security[key] > 0
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        run = container(cron_job)
        security = run["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert not security.get("privileged")
        assert spec.get("automountServiceAccountToken") is False
        # What the run writes goes to emptyDirs: the state directory and HOME.
        env = {e["name"]: e["value"] for e in run["env"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        writable = [
            Path(m["mountPath"]) for m in run["volumeMounts"] if "emptyDir" in volumes[m["name"]]
        ]
        for key in ("TASTY_ONESHOT_STATE_DIR", "HOME"):
            assert any(Path(env[key]).is_relative_to(path) for path in writable), key
        assert Path("/tmp") in writable


def test_credentials_come_from_the_secret_only(manifests):
    for cron_job in manifests[1:]:
        run = container(cron_job)
        assert run["envFrom"] == [{"secretRef": {"name": "tasty-oneshot"}}]
        # The few variables set here are paths: no value, and no reference, is a credential.
        assert {e["name"] for e in run["env"]} == {"TASTY_ONESHOT_STATE_DIR", "HOME"}
        assert all(set(e) == {"name", "value"} for e in run["env"])


def test_no_secret_value_reaches_the_manifests(ws):
    secrets = {
        "OPENAI_API_KEY": "sk-proj-k8s-0815-do-not-print",
        "TASTYTRADE_CLIENT_SECRET": "cs-k8s-4711-do-not-print",
        "TASTYTRADE_ACCOUNT_ID": "5WX4711K8S",
        "NOTIFY_PASSWORD": "hunter2-k8s-notify-pw",
        "PGPASSWORD": "pg-k8s-password-0815",
    }
    ws.env.update(secrets)
    # ./.env is read too: its values must not leak either.
    ws.write(".env", "TASTYTRADE_REFRESH_TOKEN=rt-k8s-from-dotenv-0815\n")
    ws.write(
        "jobs.yaml",
        "model: openai:gpt-5-mini\n"
        "ledger: postgresql://tasty:${PGPASSWORD}@db.example.org/tasty\n"
        'notify: ["mailtos://alerts:${NOTIFY_PASSWORD}@example.com"]\n'
        "jobs:\n"
        "  morning-check:\n"
        "    instructions: Check my positions\n"
        '    schedule: "9:30am"\n'
        "    daily: true\n",
    )
    result = generate(
        ws, "--job", "morning-check", "--config", "jobs.yaml", "--image", IMAGE,
        "--secret", "trading-credentials",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for value in [*secrets.values(), "rt-k8s-from-dotenv-0815"]:
        assert value not in result.stdout
        assert value not in result.stderr
    config_map, cron_job = documents(result.stdout)
    # The placeholders travel; each run resolves them from the Secret's variables.
    text = config_map["data"]["jobs.yaml"]
    assert "${PGPASSWORD}" in text and "${NOTIFY_PASSWORD}" in text
    assert container(cron_job)["envFrom"] == [{"secretRef": {"name": "trading-credentials"}}]
    # The jobs file names a PostgreSQL ledger: no warning about throwaway ledgers.
    assert "PostgreSQL" not in result.stderr


# --- what a run costs, and the clean-up --------------------------------------------------------

PEAK = 231 * 10**6  # bytes: one run's measured peak, the CLI and its MCP server together
QUANTITY = re.compile(r"\A([0-9]+(?:\.[0-9]+)?)(m|k|M|G|Ki|Mi|Gi)?\Z")
SCALE = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(text: str) -> float:
    """A Kubernetes quantity (`256Mi`, `250m`) as a number."""
    match = QUANTITY.match(text)
    assert match, text
    return float(match[1]) * SCALE[match[2]]


def test_each_pod_asks_for_what_a_run_takes_with_room_and_no_cpu_limit(manifests):
    for cron_job in manifests[1:]:
        resources = container(cron_job)["resources"]
        requests, limits = resources["requests"], resources["limits"]
        assert set(requests) == {"memory", "cpu"}
        assert set(limits) == {"memory"}  # a CPU limit would throttle the start on an idle node
        request, limit = quantity(requests["memory"]), quantity(limits["memory"])
        assert PEAK <= request <= limit
        # The limit kills the run: room above the benchmark's peak for real answers.
        assert limit >= 1.5 * PEAK
        assert 0 < quantity(requests["cpu"]) <= 1


def test_finished_jobs_are_cleaned_up_by_count_and_by_age(manifests):
    # A run that failed at 16:00 on the Friday before Labor Day can still be read on the
    # Tuesday at 9:30; pods are not kept for weeks.
    friday = datetime(2026, 9, 4, 16, tzinfo=NYC)
    tuesday = datetime(2026, 9, 8, 9, 30, tzinfo=NYC)
    for cron_job in manifests[1:]:
        spec = cron_job["spec"]
        assert 1 <= spec["successfulJobsHistoryLimit"] <= 10
        assert 2 <= spec["failedJobsHistoryLimit"] <= 10  # whether a failure keeps coming
        ttl = timedelta(seconds=spec["jobTemplate"]["spec"]["ttlSecondsAfterFinished"])
        assert tuesday - friday <= ttl <= timedelta(days=14)


# --- the schedules, replayed -----------------------------------------------------------------


def firings(schedule: str, start: datetime, end: datetime) -> set[datetime]:
    """croniter's firings of `schedule` read in New York time, in [start, end), as UTC."""
    it = croniter(schedule, start.astimezone(NYC) - timedelta(seconds=1))
    out = set()
    while (fire := it.get_next(datetime).astimezone(UTC)) < end:
        out.add(fire)
    return out


def fire_times(schedule: Schedule, start: datetime, end: datetime) -> set[datetime]:
    out = set()
    for fire in schedule.fire_times(start - timedelta(seconds=1)):
        if fire >= end:
            return out
        out.add(fire.astimezone(UTC))
    return out


def show(instants) -> str:
    return ", ".join(
        f"{i:%m-%d %H:%M}Z ({i.astimezone(NYC):%a %H:%M %Z})" for i in sorted(instants)
    )


@pytest.mark.parametrize("name", sorted(JOBS["jobs"]))
def test_the_cron_jobs_fire_at_the_jobs_fire_times_across_daylight_saving(cron_jobs, name):
    schedule = expected_schedule(name)
    max_delay = job_key(name, "max_delay", DEFAULT_MAX_DELAY)
    lines = [cron_job["spec"]["schedule"] for cron_job in cron_jobs[name]]
    for line in lines:
        assert PLAIN_FIELDS.match(line) and croniter.is_valid(line), line
    for start, end in WINDOWS:
        expected = fire_times(schedule, start, end)
        assert expected, f"{name}: no fire time in the window"
        per_line = [firings(line, start, end) for line in lines]
        for index, one in enumerate(per_line):  # two pods of one job at once: no lock between
            for other in per_line[index + 1 :]:
                assert not one & other, f"{name}: two CronJobs fire at {show(one & other)}"
        fired = set().union(*per_line)
        assert expected <= fired, f"{name}: never fired at {show(expected - fired)}"
        surplus = {
            f for f in fired - expected if not f.astimezone(NYC).fold and f != SPRING_FORWARD
        }
        assert not surplus, f"{name}: fired at {show(surplus)}, not fire times"
        slots: dict[datetime, list[datetime]] = {}
        for fire in fired:
            check = check_slot(schedule, fire, max_delay=max_delay)
            if check.slot is not None:
                slots.setdefault(check.slot.astimezone(UTC), []).append(fire)
        assert set(slots) == expected, f"{name}: slots run {show(set(slots) ^ expected)}"
        twice = {slot for slot, fires in slots.items() if len(fires) > 1}
        assert not twice, f"{name}: slots run twice: {show(twice)}"


def test_an_nth_weekday_fires_on_every_such_weekday_and_the_slot_guard_keeps_the_nth(ws):
    """Kubernetes has no `#`: `0 9 * * 5#2` (the second Friday) starts a pod every Friday,
    and the slot guard runs the second Friday's only."""
    ws.write("jobs.yaml", "jobs:\n  second-friday:\n    instructions: x\n    cron: 0 9 * * 5#2\n")
    result = generate(ws, "--all", "--config", "jobs.yaml", "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    [_, cron_job] = documents(result.stdout)
    assert cron_job["spec"]["schedule"] == "0 9 * * 5"
    schedule = Schedule(cron="0 9 * * 5#2")
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    fired = firings(cron_job["spec"]["schedule"], start, end)
    checks = [check_slot(schedule, fire, max_delay=300) for fire in fired]
    slots = {check.slot.astimezone(UTC) for check in checks if check.slot is not None}
    assert slots == fire_times(schedule, start, end)
    assert len(slots) == 2 and len(fired) == 9  # Oct 9 and Nov 13, of nine Fridays


# --- choices and refusals ----------------------------------------------------------------------


def test_only_the_jobs_asked_for_and_the_whole_jobs_file(ws):
    shutil.copy(JOBS_FILE, ws.root / "jobs.yaml")
    result = generate(
        ws, "--job", "night", "--job", "every-90-minutes", "--config", "jobs.yaml",
        "--image", IMAGE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config_map, *rest = documents(result.stdout)
    assert config_map["data"]["jobs.yaml"] == JOBS_FILE.read_text()
    assert [job_of(doc) for doc in rest] == ["every-90-minutes"] * 2 + ["night"]
    assert [doc["metadata"]["name"] for doc in rest] == [
        "tasty-oneshot-every-90-minutes",
        "tasty-oneshot-every-90-minutes-2",
        "tasty-oneshot-night",
    ]
    assert all("namespace" not in doc["metadata"] for doc in documents(result.stdout))


def test_output_dir_gets_one_file_with_what_would_be_printed(ws):
    shutil.copy(JOBS_FILE, ws.root / "jobs.yaml")
    args = ["--job", "futures", "--config", "jobs.yaml", "--image", IMAGE]
    printed = generate(ws, *args)
    written = generate(ws, *args, "--output-dir", "manifests")
    assert printed.returncode == written.returncode == 0, written.stderr
    assert written.stdout == ""
    assert [p.name for p in (ws.root / "manifests").iterdir()] == ["tasty-oneshot.k8s.yaml"]
    assert (ws.root / "manifests" / "tasty-oneshot.k8s.yaml").read_text() == printed.stdout


def test_without_a_postgresql_ledger_it_warns_that_each_pods_ledger_goes_with_it(ws):
    shutil.copy(JOBS_FILE, ws.root / "jobs.yaml")
    args = ["--job", "futures", "--config", "jobs.yaml", "--image", IMAGE]
    alone = generate(ws, *args)
    assert alone.returncode == 0, alone.stderr
    [warning] = [line for line in alone.stderr.splitlines() if "PostgreSQL" in line]
    assert " - WARNING - " in warning and "thrown away with the pod" in warning
    assert "slot guard" in warning

    ws.env["TASTY_ONESHOT_LEDGER"] = "postgresql://u@h/db"
    shared = generate(ws, *args)
    assert shared.returncode == 0, shared.stderr
    assert "PostgreSQL" not in shared.stderr
    assert shared.stdout == alone.stdout


def test_the_jobs_files_ledger_key_must_be_a_postgresql_url(ws):
    ws.write(
        "jobs.yaml",
        "ledger: mysql://u@h/db\njobs:\n  futures:\n    instructions: x\n    hourly: true\n",
    )
    error = error_line(generate(ws, "--all", "--config", "jobs.yaml", "--image", IMAGE))
    assert "jobs.yaml" in error and "'ledger'" in error and "postgresql://" in error


def refused(ws: Workspace, jobs: str, *args: str) -> str:
    """Generate for `jobs` (a jobs file's text) with `args`; it must be refused and write
    nothing: return the error line."""
    ws.write("jobs.yaml", jobs)
    result = generate(ws, "--config", "jobs.yaml", "--output-dir", "out", *args)
    assert not (ws.root / "out").exists() or not any((ws.root / "out").iterdir())
    return error_line(result)


GOOD_JOB = "  futures:\n    instructions: Check the futures\n    hourly: true\n"


def test_an_image_is_required(ws):
    error = refused(ws, "jobs:\n" + GOOD_JOB, "--all")
    assert "--image" in error


def test_a_period_that_does_not_divide_a_day_names_the_nearest_that_do(ws):
    jobs = "jobs:\n" + GOOD_JOB + "  odd:\n    instructions: Check\n    period: 4200\n"
    error = refused(ws, jobs, "--all", "--image", IMAGE)
    assert "jobs.yaml: job 'odd'" in error and "CronJob" in error
    assert "period 4200s" in error and "does not divide" in error
    assert "3600 or 4320" in error


def test_a_schedule_time_alone_is_refused_with_the_reason(ws):
    jobs = "jobs:\n  once:\n    instructions: Check\n    schedule: '9:30am'\n"
    error = refused(ws, jobs, "--all", "--image", IMAGE)
    assert "job 'once'" in error and "every year" in error


def test_a_nearest_weekday_cron_is_refused(ws):
    jobs = "jobs:\n  mid-month:\n    instructions: Check\n    cron: 0 9 15W * *\n"
    error = refused(ws, jobs, "--all", "--image", IMAGE)
    assert "job 'mid-month'" in error and "'W'" in error


def test_an_ad_hoc_job_is_refused(ws):
    error = refused(ws, "jobs:\n" + GOOD_JOB, "Check my positions", "--hourly", "--image", IMAGE)
    assert "ad hoc" in error and "--job" in error


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--job", "futures", "--daily"], "schedule flags"),
        (["--job", "futures", "--ignore-market-hours"], "--ignore-market-hours"),
        (["--job", "futures", "--env-file", "jobs.yaml"], "Secret"),
        (["--job", "futures", "--cron-tz", "UTC"], "--cron-tz"),
        (["--job", "futures", "--namespace", "Trading Desk"], "--namespace"),
        (["--job", "futures", "--secret", "-bad-"], "--secret"),
    ],
)
def test_options_a_cron_job_cannot_keep_are_refused(ws, args, says):
    error = refused(ws, "jobs:\n" + GOOD_JOB, *args, "--image", IMAGE)
    assert says in error


def test_kubernetes_options_belong_to_the_kubernetes_target(ws):
    ws.write("jobs.yaml", "jobs:\n" + GOOD_JOB)
    result = ws.call(
        "generate-units", "--no-env-file", "--all", "--config", "jobs.yaml", "--target", "crontab",
        "--cron-tz", "UTC", "--image", IMAGE,
    )  # fmt: skip
    assert "--image" in error_line(result)


def test_two_jobs_that_would_share_a_cron_job_name_are_refused(ws):
    jobs = (
        "jobs:\n"
        "  twice:\n    instructions: Check\n    period: 5400\n"  # tasty-oneshot-twice, -twice-2
        "  twice-2:\n    instructions: Check\n    hourly: true\n"
    )
    error = refused(ws, jobs, "--all", "--image", IMAGE)
    assert "'twice'" in error and "'twice-2'" in error and "tasty-oneshot-twice-2" in error


# --- kubernetes#121594: a fall-back slot started twice -----------------------------------------


@pytest.mark.parametrize("state", ["same state directory", "a fresh state directory per pod"])
def test_a_fall_back_slot_started_twice_by_the_controller_runs_once(ws, state):
    """The CronJob controller may start `30 1 * * *` at 01:30 EDT and again at 01:30 EST
    (05:30 and 06:30 UTC on 2026-11-01). The pod's own command, run at both: one agent run;
    the second is a skip (exit 0), whether or not the two pods share a ledger."""
    ws.write(
        "jobs.yaml",
        "model: test\n" + ws.fake_mcp_yaml() + "jobs:\n  night:\n"
        "    instructions: Check overnight futures\n"
        '    cron: "30 1 * * *"\n'
        "    ignore_market_hours: true\n",
    )
    result = generate(ws, "--job", "night", "--config", "jobs.yaml", "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    [_, cron_job] = documents(result.stdout)
    assert cron_job["spec"]["schedule"] == "30 1 * * *"
    run = container(cron_job)
    args = [str(ws.root / "jobs.yaml") if a == run["args"][4] else a for a in run["args"]]

    first = ws.call(*args, at="2026-11-01 05:30:00")  # 01:30 EDT, the first 01:30
    assert first.returncode == 0, first.stderr
    assert len(ws.server_starts()) == 1
    if state != "same state directory":
        ws.env["TASTY_ONESHOT_STATE_DIR"] = str(ws.root / "second-pod-state")
    second = ws.call(*args, at="2026-11-01 06:30:00")  # 01:30 EST, the second 01:30
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""
    assert len(ws.server_starts()) == 1
    [row] = ws.history("--limit", "1")
    assert row["status"] == "skipped" and row["scheduled"] is True, row
    assert "2026-11-01T01:30:00-04:00" in row["reason"], row


# --- the Containerfile ---------------------------------------------------------------------------


def containerfile_stages() -> list[list[tuple[str, str]]]:
    """The Containerfile's instructions, (INSTRUCTION, rest), by stage; continuation lines
    joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Containerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for instruction, rest in stage:
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                out[key] = value
    return out


def test_the_image_runs_the_manifests_command_as_the_pods_non_root_user(manifests):
    build, final = containerfile_stages()
    instructions = dict(final)
    assert instructions["FROM"].startswith("python:3.12")
    assert json.loads(instructions["ENTRYPOINT"]) == ["tasty-oneshot"]
    user, group = (int(n) for n in instructions["USER"].split(":"))
    assert user > 0 and group > 0
    for cron_job in manifests[1:]:
        security = pod(cron_job)["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (user, group)
    env = env_of(final)
    assert env["TASTY_ONESHOT_CONFIG"] == container(manifests[1])["args"][4]
    assert env["PATH"].startswith(env_of(build)["UV_PROJECT_ENVIRONMENT"] + "/bin:")


def test_the_dependency_layer_is_built_from_the_lock_alone():
    """A README or code edit must not rebuild the dependencies: before the dependencies'
    `uv sync` only pyproject.toml and uv.lock are copied; what the project's own build reads
    (its code, its `readme`) comes after, before the project's `uv sync`."""
    build, _ = containerfile_stages()
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert isinstance(readme, str)
    copied: list[str] = []
    syncs = []
    for instruction, rest in build:
        if instruction == "COPY" and not rest.startswith("--from"):
            copied += shlex.split(rest)[:-1]
        elif instruction == "RUN" and "uv sync" in rest:
            syncs.append(("--no-install-project" in rest.split(), list(copied)))
    # One sync of the dependencies alone, then one of the project.
    assert [only_dependencies for only_dependencies, _ in syncs] == [True, False]
    [(_, before_dependencies), (_, before_project)] = syncs
    assert sorted(before_dependencies) == ["pyproject.toml", "uv.lock"]
    assert {readme, "tasty_oneshot"} <= set(before_project)


def test_the_final_stage_compiles_the_standard_library_as_the_pods_interpreter_loads_it(tmp_path):
    """The base ships its standard library without bytecode, and the pods' root is read-only:
    the final stage's compileall, replayed on a stand-in of the standard library, must leave
    the bytecode the pods' interpreter looks for (its optimization level) and accepts however
    the image's file times end up (a hash never checked), and skip the base's site-packages."""
    _, final = containerfile_stages()
    version = re.match(r"python:(3\.[0-9]+)", dict(final)["FROM"])
    assert version, dict(final)["FROM"]
    stdlib = f"/usr/local/lib/python{version[1]}"
    [index] = [i for i, (ins, rest) in enumerate(final) if ins == "RUN" and "compileall" in rest]
    run = final[index][1]
    assert stdlib in shlex.split(run)
    # Before the environment is copied in: a code change does not compile it all again.
    assert index < final.index(("COPY", "--from=build /app/.venv /app/.venv"))

    fake = tmp_path / "stdlib"
    used = ["json/__init__.py", "email/utils.py", "zoneinfo/_common.py"]
    for name in [*used, "site-packages/pip/__init__.py"]:
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(f"NAME = {name!r}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(os.path.realpath(sys.executable))
    env = {**env_of(final[:index]), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    replay = run.replace(stdlib, str(fake))
    result = subprocess.run(
        ["/bin/sh", "-c", replay], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr

    level = int(env_of(final).get("PYTHONOPTIMIZE") or 0)  # the manifests set none
    for name in used:
        source = fake / name
        cached = importlib.util.cache_from_source(str(source), optimization=level or "")
        data = Path(cached).read_bytes()
        assert int.from_bytes(data[4:8], "little") == 0b01, name  # a hash, not checked
        assert data[8:16] == importlib.util.source_hash(source.read_bytes()), name
    assert not list((fake / "site-packages").rglob("*.pyc"))


@functools.cache
def uv_binary() -> str | None:
    """The uv running these tests (`uv run` says which in $UV), else one on PATH that runs."""
    for candidate in (os.environ.get("UV"), shutil.which("uv")):
        if candidate:
            try:
                subprocess.run([candidate, "--version"], capture_output=True, check=True)
            except (OSError, subprocess.CalledProcessError):
                continue
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.skipif(uv_binary() is None, reason="uv is not on PATH (run the tests with uv run)")
def test_the_containerfiles_install_steps_build_an_environment_without_dev_tools(tmp_path):
    """The slowest test (~10-30 s): the build stage's COPY and RUN steps, replayed here in
    their order into a fresh directory and virtual environment (no container engine runs on
    these machines), so each RUN sees only what was copied before it: from uv's cache when it
    holds everything, else from the registries."""
    build, _ = containerfile_stages()
    runs = [rest for instruction, rest in build if instruction == "RUN"]
    assert runs and all("uv sync" in run for run in runs)
    for run in runs:
        assert {"--locked", "--no-dev", "--no-editable"} <= set(run.split()), run
    source = tmp_path / "src"
    source.mkdir()
    venv = tmp_path / "venv"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").symlink_to(uv_binary())
    env = {
        **env_of(build),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/"),
        "UV_CACHE_DIR": subprocess.run(
            [uv_binary(), "cache", "dir"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        # This machine's Python 3.12 and a temporary environment, not the image's paths.
        "UV_PYTHON": os.path.realpath(sys.executable),
        "UV_PROJECT_ENVIRONMENT": str(venv),
    }
    started = time.monotonic()
    for instruction, run in build:
        if instruction == "COPY" and not run.startswith("--from"):
            *names, _ = shlex.split(run)
            for name in names:
                if (ROOT / name).is_dir():
                    ignore = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(ROOT / name, source / name, ignore=ignore)
                else:
                    shutil.copy(ROOT / name, source / name)
            continue
        if instruction != "RUN":
            continue
        offline = subprocess.run(
            ["/bin/sh", "-c", run], cwd=source, env={**env, "UV_OFFLINE": "1"},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if offline.returncode != 0:  # the cache lacks something: the registries have it
            online = subprocess.run(
                ["/bin/sh", "-c", run], cwd=source, env=env,
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert online.returncode == 0, f"{run}:\n{offline.stderr}\n{online.stderr}"
    print(f"the install steps took {time.monotonic() - started:.1f}s")

    tool = venv / "bin" / "tasty-oneshot"
    assert tool.is_file() and (venv / "bin" / "tasty-agent").is_file()
    version = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("tasty-oneshot "), version
    probe = (
        "import importlib.util, json, tasty_oneshot\n"
        "dev = ['pytest', 'ruff', 'mypy', 'hypothesis', 'respx', 'kubernetes_validate']\n"
        "found = [m for m in dev if importlib.util.find_spec(m)]\n"
        "print(json.dumps([tasty_oneshot.__file__, found]))"
    )
    found = subprocess.run(
        [venv / "bin" / "python", "-c", probe], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    package, dev_tools = json.loads(found.stdout)
    assert package.startswith(str(venv)), package  # installed, not a link to the source
    assert dev_tools == []
    assert not any((venv / "bin" / tool).exists() for tool in ("pytest", "ruff", "mypy"))


# --- no credential in the ConfigMap ------------------------------------------------------------

# Passwords with every character that splits a URL somewhere else when it is not encoded.
ODD_PASSWORDS = ["hunter2-0815", "p#ss-0815", "p?ss-0815", "pa/ss-0815", "p@ss-0815", "p%41ss-0815",
                 "12/ss-0815", "12#ss-0815", "pa/s#s-0815", "p:ss-0815"]  # fmt: skip
PING_TOKEN = "0c9a5a8a-1234-4b2e-9c1e-abcdef012345"
JOB = "job 'futures': "
# (the jobs file's top-level lines, the job's lines, the key the error names, the secret)
LITERAL_CREDENTIALS = [
    *(
        (f'ledger: "postgresql://tasty:{pw}@db.example.org/tasty"', "", "key 'ledger'", pw)
        for pw in ODD_PASSWORDS
    ),
    (
        'ledger: "postgresql://tasty@db.example.org/tasty?sslmode=require&password=pg-q-0815"',
        "", "key 'ledger'", "pg-q-0815",
    ),
    # After a `#`, which urlsplit takes for a fragment and libpq does not.
    ('ledger: "postgresql://tasty@db.example.org/tasty#?password=pg-f-0815"', "",
     "key 'ledger'", "pg-f-0815"),
    ('ledger: "postgresql://tasty@db.example.org/tasty?application_name=x#&password=pg-g-0815"',
     "", "key 'ledger'", "pg-g-0815"),
    *(
        ("", f'notify: ["${{NOTIFY_URL}}", "mailtos://alerts:{pw}@example.com"]',
         "job 'futures': key 'notify' (item 2)", pw)
        for pw in ODD_PASSWORDS
    ),
    # The README's own notify example.
    ('notify: ["mailto://me:app-password@gmail.com"]', "", "key 'notify' (item 1)", "app-password"),
    ("notify: ntfy://ntfy.sh/my-secret-topic-0815", "", "key 'notify'", "my-secret-topic-0815"),
    ("", 'notify: ["tgram://123456789:AAHsecret0815/12345"]', f"{JOB}key 'notify' (item 1)",
     "AAHsecret0815"),
    ("", "notify: [ 'discord://4711/webhooksecret0815' ]", f"{JOB}key 'notify' (item 1)",
     "webhooksecret0815"),
    (f"ping: https://hc-ping.com/{PING_TOKEN}", "", "key 'ping'", PING_TOKEN),
    ("", f"ping: https://hc-ping.com/{PING_TOKEN}", "job 'futures': key 'ping'", PING_TOKEN),
    ("", "ping: https://hc-ping.com/${PING_KEY}/slug-0815", f"{JOB}key 'ping'", "slug-0815"),
    # A host name without a dot is a token (Apprise's tgram://TOKEN, pover://USER@TOKEN).
    ("", "ping: https://pingtokenhost0815/${PING_KEY}", f"{JOB}key 'ping'", "pingtokenhost0815"),
    # `$${...}` is the text `${...}`, not a reference: still written out.
    ("", "ping: https://hc-ping.com/$${PING_UUID}", "job 'futures': key 'ping'", "PING_UUID"),
    (
        'mcp:\n  url: "https://mcp.example.org/${MCP_PATH}?token=mcp-token-0815"',
        "", "key 'mcp.url'", "mcp-token-0815",
    ),
    (
        "", 'mcp:\n  url: "https://bot:mcp#pass0815@mcp.example.org/${MCP_PATH}"',
        "job 'futures': key 'mcp.url'", "mcp#pass0815",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("top", "job", "key", "secret"), LITERAL_CREDENTIALS, ids=range(len(LITERAL_CREDENTIALS))
)
def test_a_credential_written_out_in_the_jobs_file_is_refused(ws, top, job, key, secret):
    ws.env.update(NOTIFY_URL="json://localhost/${X}", MCP_PATH="m", PING_KEY="k")
    jobs = (
        (top and top + "\n")
        + "jobs:\n"
        + GOOD_JOB
        + "".join(f"    {line}\n" for line in job.splitlines())
    )
    error = refused(ws, jobs, "--all", "--image", IMAGE, "--secret", "trading-credentials")
    assert secret not in error
    assert ("job 'futures'" in error) == ("job 'futures'" in key), error
    if "is not a valid Apprise URL" in error:  # Apprise itself refuses it first
        assert "key 'notify': item 2 " in error and "(item 2)" in key, error
        return
    assert f"jobs.yaml: {key}: " in error, error
    assert "${VAR}" in error and "Secret trading-credentials" in error, error


# A credential only one reading of the URL finds, and the reason the error gives for it. The
# URLs are ones Apprise does not read (mcp.url, ping): Apprise refuses a notify URL with an
# unencoded `#`, `?` or `/` in its password before this check is reached, and a ledger's
# password is found by libpq's reading (ledger/postgres_url.py) whatever else finds it.
PASSWORD = "its password is written out"
PORT = "its port holds text (a password with a `/` in it, or a token)"
CREDENTIAL_READINGS = [
    # libpq's reading: the user part runs to the first `@`, so a `#` or `?` is the password's
    # (urlsplit's reading takes it for a fragment or a query, and the password for a port).
    *(
        (f'mcp:\n  url: "https://bot:{pw}@mcp.example.org/${{MCP_PATH}}"', "key 'mcp.url'", pw,
         PASSWORD)
        for pw in ("p#ss-0815", "p?ss-0815", "12#ss-0815")
    ),
    # A `/` ends the user part for both readings: the password's start is the port.
    *(
        (f'mcp:\n  url: "https://bot:{pw}@mcp.example.org/${{MCP_PATH}}"', "key 'mcp.url'", pw,
         PORT)
        for pw in ("pa/ss-0815", "pa/s#s-0815")
    ),
    # libpq's password keys in the query are passwords in any URL.
    ('ping: "https://hc-ping.com/${PING_KEY}?password=ping-pw-0815"', "key 'ping'", "ping-pw-0815",
     PASSWORD),
    ('ping: "https://hc-ping.com/${PING_KEY}?sslpassword=ping-pw-0815"', "key 'ping'",
     "ping-pw-0815", PASSWORD),
    # A `/` typed for the `:`: libpq reads no password (the host is `tasty`, the database the
    # rest), but a `@` after the host is a password's.
    ('ledger: "postgresql://tasty/p4ss-0815@db.example.org/tasty"', "key 'ledger'", "p4ss-0815",
     PASSWORD),
]  # fmt: skip


@pytest.mark.parametrize(
    ("top", "key", "secret", "reason"), CREDENTIAL_READINGS, ids=range(len(CREDENTIAL_READINGS))
)
def test_a_credential_written_out_is_refused_for_what_it_is(ws, top, key, secret, reason):
    ws.env.update(MCP_PATH="m", PING_KEY="k")
    error = refused(ws, f"{top}\njobs:\n{GOOD_JOB}", "--all", "--image", IMAGE)
    assert secret not in error
    assert f"jobs.yaml: {key}: {reason}, which the ConfigMap would show" in error, error


# Values with every character that splits a URL, each supplied by the Secret.
SECRET_VALUES = {
    "PGPASSWORD": "p#s?s/w@r%d-pg-0815",
    "PGUSER_PASSWORD": "u#s?e/r@p%w-0815",
    "NOTIFY_PASSWORD": "n0tify%23pass-0815",
    "NTFY_TOPIC": "secret-topic-0815",
    "TELEGRAM_TOKEN": "123456789:AAHtelegram0815",
    "HC_UUID": PING_TOKEN,
    "PING_URL": "https://hc-ping.com/9d3f0815-aaaa-bbbb-cccc-0123456789ab",
    "MCP_URL": "https://bot:mcp%40pass0815@mcp.example.org/s/mcp-path-0815/mcp",
    "MCP_TOKEN": "mcp#tok?en/0815@%",
    "MCP_PATH": "mcp-path-4711",
}
REFERENCED = (
    'ledger: "postgresql://tasty:${PGPASSWORD}@db.example.org/tasty?sslmode=require'
    '&sslpassword=${PGUSER_PASSWORD}"\n'
    'ping: "https://hc-ping.com/${HC_UUID}"\n'
    "notify:\n"
    '  - "mailtos://alerts:${NOTIFY_PASSWORD}@example.com"\n'
    '  - "ntfy://ntfy.sh/${NTFY_TOPIC}"\n'
    '  - "tgram://${TELEGRAM_TOKEN}/${TELEGRAM_TOKEN}"\n'
    "mcp:\n"
    '  url: "${MCP_URL}"\n'
    "jobs:\n"
    "  futures:\n"
    "    instructions: Check the futures  # $${NOT_A_REFERENCE} stays text\n"
    "    hourly: true\n"
    '    ping: "${PING_URL}"\n'
    "  remote:\n"
    "    instructions: Check the account\n"
    "    daily: true\n"
    "    mcp:\n"
    '      url: "https://mcp.example.org:8443/${MCP_TOKEN}/${MCP_PATH}?token=${MCP_TOKEN}"\n'
)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_credentials_by_reference_pass_and_no_value_reaches_the_stream(ws, version):
    ws.env.update(SECRET_VALUES)
    ws.write("jobs.yaml", REFERENCED)
    result = generate(ws, "--all", "--config", "jobs.yaml", "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    from urllib.parse import quote, unquote

    for value in SECRET_VALUES.values():
        for form in {value, unquote(value), quote(value, safe="")}:
            assert form not in result.stdout and form not in result.stderr, form
    config_map, *cron_jobs = documents(result.stdout)
    assert config_map["data"]["jobs.yaml"] == REFERENCED  # every `${VAR}` as written
    assert len(cron_jobs) == 2
    for doc in (config_map, *cron_jobs):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message}")
