"""Which jobs `generate-units` writes for, and how each unit finds tasty-oneshot."""

import sys
from pathlib import Path

from tasty_oneshot import generate

JOBS = (
    "model: test\njobs:\n"
    "  by-hand:\n    instructions: Only when I ask\n"
    "  hourly:\n    instructions: Check\n    hourly: true\n"
)


def test_all_skips_jobs_without_a_schedule_with_a_warning(ws):
    ws.write("tasty-oneshot.yaml", JOBS)
    result = ws.cli(
        "generate-units", "--no-env-file", "--all", "--target", "systemd", "--output-dir", "units"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (ws.root / "units").iterdir()) == [
        "tasty-oneshot-hourly.service",
        "tasty-oneshot-hourly.timer",
    ]
    assert "job 'by-hand': no schedule" in result.stderr


def test_naming_a_job_without_a_schedule_is_a_usage_error(ws):
    ws.write("tasty-oneshot.yaml", JOBS)
    result = ws.cli("generate-units", "--no-env-file", "--job", "by-hand", "--target", "crontab")
    assert result.returncode == 2 and "no schedule" in result.stderr
    assert result.stdout == ""


def test_the_command_is_absolute_even_without_a_script_beside_python(tmp_path, monkeypatch):
    # A Python with no tasty-oneshot script beside it and none on PATH: the unit runs the
    # package with that Python, by absolute path, never a bare name cron could not find.
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text("")
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert generate.tasty_oneshot_command() == [str(python), "-m", "tasty_oneshot"]
    script = python.parent / "tasty-oneshot"
    script.write_text("")
    assert generate.tasty_oneshot_command() == [str(script)]
    assert all(Path(word).is_absolute() for word in generate.tasty_oneshot_command()[:1])
