"""CodeCarbon's overheads beside greenjupyter's, measured in the same run (no targets: context).

CodeCarbon is installed only for this benchmark, in bench/.venv-codecarbon (made here if
missing). In RUNS fresh processes it is timed by _codecarbon_child.py: import, building an
OfflineEmissionsTracker (country given: no network), first start(), and start_task()/stop_task()
pairs around an empty cell. greenjupyter's figures come from bench/results/cell_overhead.json and
load_time.json (the scripts are run first if those are missing); its hook pair is also timed here
with no hardware, i.e. on estimates, as CodeCarbon sees this machine.
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import _hardware
from _report import RESULTS, figure, percentile, save
from cell_overhead import N, WARMUP, time_hook_pair

VENV = _hardware.ROOT / "bench" / ".venv-codecarbon"
CHILD = _hardware.ROOT / "bench" / "_codecarbon_child.py"
RUNS, PAIRS = 3, 200


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV.relative_to(_hardware.ROOT)} ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True, timeout=300)
    if subprocess.run([str(python), "-c", "import codecarbon"], capture_output=True, timeout=120).returncode:
        print("installing codecarbon into it ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "codecarbon"], check=True, timeout=1200)
    return python


def greenjupyter_result(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        subprocess.run([sys.executable, str(_hardware.ROOT / "bench" / f"{name}.py")], check=True, timeout=600)
    return json.loads(path.read_text())


def greenjupyter_pair_on_estimates() -> list[float]:
    _hardware.install(rapl=False, gpus=False)
    from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "greenjupyter")
    import greenjupyter

    greenjupyter.sources()
    info = ExecutionInfo("pass", store_history=False, silent=False, shell_futures=True, cell_id=None)
    result = ExecutionResult(info)
    time_hook_pair(shell, info, result, WARMUP)
    return time_hook_pair(shell, info, result, N)


def main():
    python = ensure_venv()
    env = {**os.environ, "CODECARBON_LOG_LEVEL": "error"}
    runs = []
    for _ in range(RUNS):
        out = subprocess.run([str(python), str(CHILD), str(PAIRS)], capture_output=True, text=True,
                             timeout=300, env=env, cwd="/tmp")
        if out.returncode != 0:
            raise SystemExit(f"CodeCarbon child failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in runs) for k in ("import_ms", "init_ms", "start_ms")}
    pairs = [p for r in runs for p in r["pair_us"]]
    cc_spawned = max(r["counts_to_first_start"]["subprocess"] for r in runs)
    cc_connects = max(r["counts_total"]["connect"] for r in runs)

    cells = greenjupyter_result("cell_overhead")["details"]["hook_pair_us"]
    load = greenjupyter_result("load_time")["details"]
    gj_load = statistics.median(load["fake RAPL"]["load_ms"])
    gj_spawned = load["fake RAPL"]["counts"]["subprocess"] + load["fake RAPL"]["counts"]["fork"]
    bare = greenjupyter_pair_on_estimates()

    rows = [
        ("first use in a fresh process", f"%load_ext {gj_load:.1f} ms",
         f"init + start() {med['init_ms'] + med['start_ms']:.1f} ms (+ import {med['import_ms']:.0f} ms)"),
        ("per cell p50 (fake RAPL + 2 GPUs)", f"{cells['p50']:.1f} µs", "—"),
        ("per cell p99 (fake RAPL + 2 GPUs)", f"{cells['p99']:.1f} µs", "—"),
        ("per cell p50 (this machine: estimates)", f"{percentile(bare, 50):.1f} µs",
         f"{percentile(pairs, 50):.1f} µs"),
        ("per cell p99 (this machine: estimates)", f"{percentile(bare, 99):.1f} µs",
         f"{percentile(pairs, 99):.1f} µs"),
        ("subprocesses at start", str(gj_spawned), str(cc_spawned)),
        ("socket connections", "0", str(cc_connects)),
    ]
    print(f"CodeCarbon {runs[0]['version']} ({RUNS} fresh processes, {PAIRS} start_task/stop_task pairs each)")
    print(f"| {'':42} | {'greenjupyter':20} | CodeCarbon |\n|{'-' * 44}|{'-' * 22}|------------|")
    for label, ours, theirs in rows:
        print(f"| {label:42} | {ours:20} | {theirs} |")
    save("codecarbon_compare", [
        figure("CodeCarbon import", med["import_ms"], "ms"),
        figure("CodeCarbon OfflineEmissionsTracker() + first start()", med["init_ms"] + med["start_ms"], "ms"),
        figure("CodeCarbon start_task/stop_task p50", percentile(pairs, 50), "µs"),
        figure("CodeCarbon start_task/stop_task p99", percentile(pairs, 99), "µs"),
        figure("CodeCarbon subprocesses until first start()", cc_spawned, "calls", digits=0),
        figure("greenjupyter hook pair p50, no hardware (estimates)", percentile(bare, 50), "µs"),
        figure("greenjupyter hook pair p99, no hardware (estimates)", percentile(bare, 99), "µs"),
    ], {"codecarbon_version": runs[0]["version"], "codecarbon_runs": [{k: v for k, v in r.items() if k != "pair_us"}
                                                                       for r in runs]})


if __name__ == "__main__":
    main()
