"""Figures, percentiles and the JSON result each benchmark writes to bench/results/<name>.json."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values, q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def figure(name: str, value: float, unit: str, limit: float | None = None, digits: int = 1,
           lower: float | None = None, readme: bool | None = None) -> dict:
    """One reported figure; with ``limit`` it has a target (value <= limit), with ``lower`` one of
    value >= lower, and passes or fails. ``readme``: shown in the README's table (default: when it
    has a target)."""
    if limit is not None:
        target, passed = f"≤ {limit:g} {unit}", value <= limit
    elif lower is not None:
        target, passed = f"≥ {lower:g} {unit}", value >= lower
    else:
        target, passed = None, None
    return {
        "figure": name,
        "value": value,
        "unit": unit,
        "result": f"{value:,.{digits}f} {unit}",
        "target": target,
        "pass": passed,
        "readme": target is not None if readme is None else readme,
    }


def commit() -> tuple[str, list[str]]:
    """Return (HEAD's commit, "+dirty" appended when tracked files other than results differ from it; those files)."""
    root = RESULTS.parent.parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout

    head = git("rev-parse", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if not line[3:].startswith("bench/results/")]
    return (head + "+dirty" if changed else head), changed


def machine() -> dict:
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        ipython = version("ipython")
    except ImportError:  # not installed
        ipython = "unknown"
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "ipython": ipython,
            "system": f"{platform.system()} {platform.release()}"}


def save(name: str, figures: list[dict], details: dict | None = None) -> Path:
    """Print the figures and write bench/results/<name>.json."""
    print(f"\n== {name} ==")
    for f in figures:
        verdict = "" if f["pass"] is None else ("  PASS" if f["pass"] else "  FAIL")
        target = f"  (target {f['target']})" if f["target"] else ""
        print(f"{f['figure']:<55} {f['result']:>14}{target}{verdict}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "greenjupyter_commit": commit()[0],
                                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                "figures": figures, "details": details or {}}, indent=2) + "\n")
    print(f"(written to {path.relative_to(RESULTS.parent.parent)})")
    return path
