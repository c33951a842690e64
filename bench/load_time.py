"""``%load_ext greenjupyter`` in a fresh process (target ≤ 150 ms), IPython's own import excluded.

Each run is a fresh interpreter that imports IPython and creates the InteractiveShell first,
then times ``shell.run_line_magic("load_ext", "greenjupyter")``; meanwhile subprocess
launches, forks and sockets are counted (there must be none), until GPU detection on the
sampler thread has finished too. Two machines: none (this one: no RAPL, no GPU) and the fake
two-socket RAPL tree. Also: ``python -X importtime -c "import greenjupyter"`` in a bare interpreter.
"""

import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _hardware  # noqa: F401  (puts the repo root on sys.path)
from _report import figure, save

RUNS = 10
CHILD = r"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
sys.path.insert(0, "bench")
import _spy
counts = _spy.install()
modules = set(sys.modules)
t0 = time.perf_counter()
shell.run_line_magic("load_ext", "greenjupyter")
t1 = time.perf_counter()
import greenjupyter
from greenjupyter.ipython.extension import current_recorder
assert current_recorder() is not None, "not loaded"
greenjupyter.sources()  # waits for GPU detection on the sampler thread
t2 = time.perf_counter()
print(json.dumps({"load_ms": (t1 - t0) * 1e3, "ready_ms": (t2 - t0) * 1e3, "counts": counts,
                  "components": list(current_recorder().meter.components),
                  "new_modules": len(set(sys.modules) - modules)}))
"""


def load_runs(env: dict) -> list[dict]:
    runs = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120,
                             cwd=_hardware.ROOT)
        if out.returncode != 0:
            raise SystemExit(f"child failed:\n{out.stderr}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def import_time_ms() -> tuple[float, float]:
    """Return the medians of (cumulative import greenjupyter, greenjupyter's own modules' self time) in ms."""
    total, own = [], []
    for _ in range(5):
        err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import greenjupyter"],
                             capture_output=True, text=True, timeout=60).stderr
        rows = [line.split("|") for line in err.splitlines() if line.startswith("import time:") and "|" in line]
        rows = [(int(r[0].split(":")[1]), int(r[1]), r[2].strip()) for r in rows if r[1].strip().isdigit()]
        total.append(next(c for s, c, name in rows if name == "greenjupyter") / 1000)
        own.append(sum(s for s, c, name in rows if name.startswith("greenjupyter")) / 1000)
    return statistics.median(total), statistics.median(own)


def main():
    # An installed wheel has its bytecode compiled by pip; where PYTHONDONTWRITEBYTECODE is set
    # an editable checkout has none, and every load would compile greenjupyter from source.
    compileall.compile_dir(str(_hardware.ROOT / "greenjupyter"), quiet=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENJUPYTER_")}
    env["PYTHONPATH"] = str(_hardware.ROOT)
    figures, details = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        from tests.fakes.powercap import SERVER, FakePowercap

        FakePowercap(Path(tmp) / "powercap", SERVER)
        machines = {"no hardware": "/nonexistent-powercap", "fake RAPL": str(Path(tmp) / "powercap")}
        for label, root in machines.items():
            runs = load_runs({**env, "GREENJUPYTER_POWERCAP_ROOT": root})
            load = [r["load_ms"] for r in runs]
            ready = [r["ready_ms"] for r in runs]
            counts = {k: max(r["counts"][k] for r in runs) for k in runs[0]["counts"]}
            print(f"[{label}] components {runs[0]['components']}; load_ext over {RUNS} fresh processes: "
                  f"median {statistics.median(load):.1f} ms, max {max(load):.1f} ms; GPU detection done "
                  f"after {statistics.median(ready):.1f} ms; {runs[0]['new_modules']} modules imported; "
                  f"during load (max over runs): {counts}")
            figures += [
                figure(f"%load_ext median ({label})", statistics.median(load), "ms", 150),
                figure(f"%load_ext max ({label})", max(load), "ms", 150),
                figure(f"subprocesses+forks during load ({label})", counts["subprocess"] + counts["fork"], "calls", 0, 0),
                figure(f"sockets opened/connected during load ({label})", counts["socket"] + counts["connect"], "calls", 0, 0),
            ]
            details[label] = {"load_ms": load, "ready_ms": ready, "counts": counts,
                              "components": runs[0]["components"]}
    total, own = import_time_ms()
    print(f"-X importtime, bare interpreter: import greenjupyter {total:.1f} ms cumulative "
          f"(stdlib dependencies included), {own:.1f} ms in greenjupyter's own modules")
    figures += [figure("import greenjupyter, bare interpreter (-X importtime)", total, "ms"),
                figure("  of which greenjupyter's own modules", own, "ms")]
    details["importtime_ms"] = {"cumulative": total, "own_modules": own}
    save("load_time", figures, details)


if __name__ == "__main__":
    main()
