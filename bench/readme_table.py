"""Write the README's benchmark table from bench/results/latest.json (what bench/run_all.py wrote).

    .venv/bin/python bench/readme_table.py            # rewrite the table in README.md
    .venv/bin/python bench/readme_table.py --check    # exit 1 if README.md's table differs

The table sits between the two marker comments below; nothing else in README.md is touched.
Shown: every figure with a target, and those a benchmark marked for the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "bench" / "results" / "latest.json"
README = ROOT / "README.md"
START = "<!-- bench-table: start (written by bench/readme_table.py from bench/results/latest.json) -->"
END = "<!-- bench-table: end -->"


def render(latest: dict) -> str:
    """Return the markdown between the markers (markers excluded) for one latest.json."""
    m = latest["machine"]
    commit = latest["greenjupyter_commit"]
    lines = [
        (f"Run {latest['date']} of greenjupyter `{commit[:12]}{'+dirty' if commit.endswith('+dirty') else ''}`"
         f" on {m['cpu']} ({m['cores']} cores), {m['system']}, Python {m['python']}, IPython {m['ipython']}"
         f" (`{latest['command'].strip()}`)."),
        "",
    ]
    earlier = [f"{name} ({bench.get('date', '?')}, `{bench.get('greenjupyter_commit', '?')[:12]}`)"
               for name, bench in latest["benchmarks"].items()
               if (bench.get("date"), bench.get("greenjupyter_commit")) != (latest["date"], latest["greenjupyter_commit"])]
    if earlier:
        lines += ["From an earlier run: " + ", ".join(earlier) + ".", ""]
    busy = [f"{name} ({bench['cpus_busy_before_percent']:.0f}%)" for name, bench in latest["benchmarks"].items()
            if bench.get("cpus_busy_before_percent", 0) > 10]
    if busy:
        lines += ["Other processes kept the CPUs busy just before (timings may be inflated): " + ", ".join(busy) + ".",
                  ""]
    lines += [
        "| benchmark | figure | target | result | |",
        "|---|---|---|---|---|",
    ]
    for name, bench in latest["benchmarks"].items():
        if bench["exit"] != 0:
            lines.append(f"| {name} | the script failed (exit {bench['exit']}) | | | FAIL |")
            continue
        for f in bench["figures"]:
            if not f.get("readme", f["target"] is not None):
                continue
            verdict = "" if f["pass"] is None else ("pass" if f["pass"] else "**FAIL**")
            lines.append(f"| {name} | {f['figure']} | {f['target'] or '—'} | {f['result']} | {verdict} |")
    return "\n".join(lines)


def replaced(readme: str, table: str) -> str:
    """Return ``readme`` with the text between the markers replaced by ``table``."""
    head, found, rest = readme.partition(START)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"README.md lacks the markers {START!r} ... {END!r}")
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv) -> int:
    readme = README.read_text()
    wanted = replaced(readme, render(json.loads(LATEST.read_text())))
    if "--check" in argv:
        if wanted != readme:
            print("README.md's benchmark table differs from bench/results/latest.json; run bench/readme_table.py")
            return 1
        return 0
    README.write_text(wanted)
    print(f"README.md's benchmark table written from {LATEST.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
