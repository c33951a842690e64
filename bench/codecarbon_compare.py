"""CodeCarbon's start-up beside greenjupyter's (no targets: context). Per cell: cell_overhead.py.

CodeCarbon is installed only for the benchmarks, in bench/.venv-codecarbon (bench/_codecarbon.py).
In RUNS fresh processes _codecarbon_child.py times: ``import codecarbon``, building an
OfflineEmissionsTracker (country given: no network), its first ``start()``, and counts the
processes it starts and the sockets it connects. greenjupyter's ``%load_ext`` figures come from
bench/results/load_time.json (load_time.py is run first if that is missing).
"""

import json
import os
import statistics
import subprocess
import sys

import _codecarbon
import _hardware
from _report import RESULTS, figure, save

CHILD = _hardware.ROOT / "bench" / "_codecarbon_child.py"
RUNS, PAIRS = 3, 200


def greenjupyter_result(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        subprocess.run([sys.executable, str(_hardware.ROOT / "bench" / f"{name}.py")], check=True, timeout=600)
    return json.loads(path.read_text())


def main():
    python = _codecarbon.python()
    env = {**os.environ, "CODECARBON_LOG_LEVEL": "error"}
    runs = []
    for _ in range(RUNS):
        out = subprocess.run([str(python), str(CHILD), str(PAIRS)], capture_output=True, text=True,
                             timeout=300, env=env, cwd="/tmp", check=False)
        if out.returncode != 0:
            raise SystemExit(f"CodeCarbon child failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in runs) for k in ("import_ms", "init_ms", "start_ms")}
    cc_spawned = max(r["counts_to_first_start"]["subprocess"] for r in runs)
    cc_connects = max(r["counts_total"]["connect"] for r in runs)

    load = greenjupyter_result("load_time")["details"]
    gj_load = statistics.median(load["fake RAPL"]["load_ms"])
    gj_spawned = load["fake RAPL"]["counts"]["subprocess"] + load["fake RAPL"]["counts"]["fork"]

    print(f"CodeCarbon {runs[0]['version']} ({RUNS} fresh processes)")
    print(f"first use: greenjupyter %load_ext {gj_load:.1f} ms, {gj_spawned} processes started; CodeCarbon "
          f"init + start() {med['init_ms'] + med['start_ms']:.1f} ms (+ import {med['import_ms']:.0f} ms), "
          f"{cc_spawned} processes started, {cc_connects} sockets connected")
    save("codecarbon_compare", [
        figure("CodeCarbon import", med["import_ms"], "ms", digits=0),
        figure("CodeCarbon OfflineEmissionsTracker() + first start(), median of fresh processes",
               med["init_ms"] + med["start_ms"], "ms", digits=0, readme=True),
        figure("CodeCarbon processes started until first start()", cc_spawned, "processes", digits=0, readme=True),
        figure("greenjupyter %load_ext (fake RAPL), median of fresh processes", gj_load, "ms", readme=True),
    ], {"codecarbon_version": runs[0]["version"], "codecarbon_runs": [{k: v for k, v in r.items() if k != "pair_us"}
                                                                       for r in runs]})


if __name__ == "__main__":
    main()
