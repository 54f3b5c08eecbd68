"""benchmarks/quality.py still runs end to end: its shape, not its figures.

Run in a subprocess as a user would, with `--quick` (a few steps per model)
so the whole pipeline, from training every listed loss to the Markdown
table, is exercised without leaving the test suite's time budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_run_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_text() if results.exists() else None
    command = [
        sys.executable,
        "-m",
        "benchmarks.quality",
        "--quick",
        "--sets",
        "digits",
        "--losses",
        "supcon",
        "--no-sweep",
        "--ensemble",
        "2",
        "--json",
        str(out),
        "--no-write",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    result = json.loads(out.read_text())
    digits = result["sets"]["digits"]
    methods = [row["method"] for row in digits["rows"]]
    assert methods == ["supcon", "supcon, ensemble of 2", "raw pixels", "untrained encoder"]
    assert digits["rows"][1]["ensemble"] == 2
    assert digits["best"] == "supcon"  # the best single model; the sweep trains it
    for row in digits["rows"]:
        for part in ("held_out_images", "held_out_classes"):
            assert set(row[part]) == {"precision_at_1", "r_precision", "map_at_r"}
            assert all(0.0 <= value <= 1.0 for value in row[part].values())
    assert set(result["unlabeled"]["near_duplicates"]) >= {"encoder", "raw_pixels"}
    assert {check["set"] for check in result["targets"]} == {"digits"}
    assert {check["method"] for check in result["targets"]} <= {"supcon", "supcon, ensemble of 2"}
    assert result["command"].startswith("python -m benchmarks.quality --quick")

    assert "| supcon |" in done.stdout
    assert "| supcon, ensemble of 2 |" in done.stdout
    assert "| raw pixels |" in done.stdout
    assert "### Targets" in done.stdout
    assert (results.read_text() if results.exists() else None) == before
