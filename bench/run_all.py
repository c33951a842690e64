"""Run every benchmark, each in its own fresh process, then print one markdown table of the figures.

    .venv/bin/python bench/run_all.py [name ...]

Exits 1 when a benchmark script failed or a figure missed its target. The table is also
written to bench/results/summary.md, and everything to bench/results/latest.json (committed):
the machine, the Python, the greenjupyter commit ("+dirty" when tracked files had changes, which
are listed), the date, and every benchmark's figures with their targets and pass/fail.
``bench/readme_table.py`` then writes the README's table from latest.json.
"""

import datetime
import json
import subprocess
import sys
import time

from _report import RESULTS, commit, machine

LATEST = RESULTS / "latest.json"

BENCHMARKS = ["cell_overhead", "load_time", "sampler_cpu", "memory_growth", "panel_redraw", "codecarbon_compare"]


def busy_percent(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over ``seconds`` (before a benchmark starts, that is other processes' load)."""
    def sample():
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))


def main(names):
    RESULTS.mkdir(exist_ok=True)
    crashed, busy, seconds = {}, {}, {}
    head, changed = commit()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for name in names:
        busy[name] = busy_percent()
        (RESULTS / f"{name}.json").unlink(missing_ok=True)
        print(f"\n### {name}", flush=True)
        started = time.perf_counter()
        rc = subprocess.run([sys.executable, str(RESULTS.parent / f"{name}.py")], cwd=RESULTS.parent.parent,
                            timeout=900).returncode
        seconds[name] = time.perf_counter() - started
        print(f"({name}: {seconds[name]:.0f} s, exit {rc}; CPUs {busy[name]:.0f}% busy just before)", flush=True)
        if rc != 0:
            crashed[name] = rc

    m = machine()
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; greenjupyter {head}, {date}", "",
             "| benchmark | figure | target | result | pass/fail |", "|---|---|---|---|---|"]
    failed = bool(crashed)
    for name in names:
        if name in crashed:
            lines.append(f"| {name} | script failed (exit {crashed[name]}) | | | FAIL |")
            continue
        for f in json.loads((RESULTS / f"{name}.json").read_text())["figures"]:
            verdict = "info" if f["pass"] is None else ("pass" if f["pass"] else "FAIL")
            failed |= f["pass"] is False
            lines.append(f"| {name} | {f['figure']} | {f['target'] or '—'} | {f['result']} | {verdict} |")
    noisy = [f"{n} ({busy[n]:.0f}%)" for n in names if busy[n] > 10]
    if noisy:
        lines += ["", "Other processes kept the CPUs busy just before: " + ", ".join(noisy)
                  + "; timings from those may be inflated."]
    table = "\n".join(lines)
    print("\n" + table)
    (RESULTS / "summary.md").write_text(table + "\n")

    # A run of some benchmarks keeps the others' earlier results, each with its own date and commit.
    benchmarks = json.loads(LATEST.read_text())["benchmarks"] if LATEST.exists() and names != BENCHMARKS else {}
    for name in names:
        entry = {"date": date, "greenjupyter_commit": head, "seconds": round(seconds[name], 1),
                 "cpus_busy_before_percent": round(busy[name], 1)}
        if name in crashed:
            entry.update(exit=crashed[name], figures=[])
        else:
            result = json.loads((RESULTS / f"{name}.json").read_text())
            entry.update(exit=0, figures=result["figures"], details=result["details"])
        benchmarks[name] = entry
    LATEST.write_text(json.dumps({
        "command": "bench/run_all.py " + " ".join(names), "date": date, "machine": m,
        "greenjupyter_commit": head, "changed_files": changed,
        "passed": not failed and all(e["exit"] == 0 and all(f["pass"] is not False for f in e["figures"])
                                     for e in benchmarks.values()),
        "benchmarks": {n: benchmarks[n] for n in BENCHMARKS if n in benchmarks}}, indent=1, ensure_ascii=False) + "\n")
    print(f"written to {LATEST.relative_to(RESULTS.parent.parent)}; bench/readme_table.py puts it in README.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or BENCHMARKS))
