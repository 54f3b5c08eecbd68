"""benchmarks/RESULTS.md is shared: each script owns one section between HTML comment markers.

A script rewrites only its own section (`<!-- NAME:start -->` ... `<!-- NAME:end -->`),
appending it the first time, so scripts run at different times on different
machines do not erase each other's figures.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\nEach section is written by the script it names; rerun it to update.\n"
)


def update_section(name: str, body: str, path: Path = RESULTS) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def machine() -> str:
    """Cores, CPU model, load and Python, for reading figures in context."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{cores} cores, {model}; load average {load}; Python {sys.version.split()[0]}"


def versions(*packages: str) -> str:
    found = []
    for name in packages:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def run_lines(module: str, started: float, busy: tuple[float, ...]) -> list[str]:
    """The `- command:` and `- machine:` lines every long benchmark opens its section with.

    `busy` is the load average when the run started: above 1, other work shared
    the cores, which the line says so that readers trust ratios over absolutes.
    """
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "-m", module, *sys.argv[1:]])
    shared = (
        " (other work shared these cores: absolute figures are noisy, ratios "
        "measured side by side in this run are the ones to read)"
        if busy[0] >= 1
        else ""
    )
    return [
        f"- command: `{command}` ({(time.time() - started) / 60:.0f} min)",
        f"- machine: {machine()}; load average at the start "
        + ", ".join(f"{x:.2f}" for x in busy)
        + shared,
    ]
