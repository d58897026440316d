"""The committed examples (`systemd/`, `crontab.example`) are what the tool generates today.

scripts/make-examples regenerates them from tasty-oneshot.yaml with the real CLI; here it runs
into a temporary directory and every file must match the committed one.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make-examples"
STALE = "the committed examples are stale: run scripts/make-examples and commit the result"


def example_files(root: Path) -> dict[str, str]:
    """Relative path -> text of the examples under `root`."""
    files = {"crontab.example": root / "crontab.example"}
    systemd = root / "systemd"
    if systemd.is_dir():
        files |= {f"systemd/{p.name}": p for p in sorted(systemd.iterdir()) if p.is_file()}
    return {name: path.read_text() for name, path in files.items() if path.is_file()}


def test_committed_examples_are_what_make_examples_generates(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"scripts/make-examples failed:\n{result.stderr}"
    fresh, committed = example_files(tmp_path), example_files(ROOT)
    assert "crontab.example" in fresh and any(n.endswith(".timer") for n in fresh), fresh
    assert sorted(committed) == sorted(fresh), (
        f"{STALE}\n  files: committed {sorted(committed)}, generated {sorted(fresh)}"
    )
    for name, text in fresh.items():
        assert committed[name] == text, f"{STALE}\n  {name} differs"


def test_examples_hold_placeholders_not_this_machines_paths():
    files = example_files(ROOT)
    assert files, "no examples committed: run scripts/make-examples"
    for name, text in files.items():
        assert str(ROOT) not in text, f"{name}: holds this checkout's path"
        if not name.endswith(".timer"):
            assert "/opt/tasty-oneshot/bin/tasty-oneshot run " in text, name
    for name in ("crontab.example", "systemd/tasty-oneshot-morning-check.service"):
        assert "--config /home/you/.config/tasty-oneshot/jobs.yaml" in files[name], name
