"""What greenjupyter adds to an empty cell, as a user runs it, beside CodeCarbon's task pair.

The default configuration (history database on, here at a throwaway db_path) over two simulated
RAPL packages + two DRAM zones, no GPU. A real IPython InteractiveShell, ``%load_ext greenjupyter``,
and ``shell.run_cell("pass")`` timed cell by cell. In the same process CodeCarbon (bench/_codecarbon.py:
OfflineEmissionsTracker, no network) with its ``start_task`` / ``stop_task`` registered as the
shell's pre/post_run_cell hooks, as one would to measure each cell with it.

Rounds of CELLS cells rotate: extension on, extension off, CodeCarbon on, extension on, ...
ROUNDS times, because this VM's speed drifts 2x for seconds at a time. "Off" removes the
callbacks the extension added to the shell (found by comparing the shell's hooks before and
after ``%load_ext``), so the same shell, the same meter and the same sampler thread serve every
round; the sampler's own cost is bench/sampler_cpu.py's figure. The first WARM cells of each
round are not counted (the switch itself).

The difference: each rotation's "off" round is the baseline of the "on" round before it and the
CodeCarbon round after it. A cell's excess is its time minus the median of that baseline round.
The overhead's p50 is the median excess of all "on" cells. Its p99 is how much later the 99th
percentile "on" cell comes than the 99th percentile "off" cell (both as excesses over their
round's baseline): the extension's own share of the tail. The 99th percentile of the "on" cells'
excesses is printed too; it counts IPython's own jitter as well (the "off" cells' p99 excess,
also printed), which by itself is above 100 µs on this VM. CodeCarbon's figures are worked out
the same way; the ratio is CodeCarbon's p50 over ours.

Two child processes run the same measurement without CodeCarbon: the default configuration in a
process like a user's, where CodeCarbon and what it imports (pandas among them) are not loaded
(``--default-alone``), and the meter alone (db_path=off, ``--meter-alone``; db_path is read when the
extension loads).
"""

import gc
import json
import os
import statistics
import subprocess
import sys
import time

import _hardware
from _report import figure, percentile, save

ROUNDS, CELLS, WARM = int(os.environ.get("BENCH_ROUNDS", "200")), 100, 5
SHELL_HOOK_LISTS = ("ast_transformers", "input_transformers_cleanup", "input_transformers_post")


class ExtensionSwitch:
    """Turn off and on again whatever ``%load_ext greenjupyter`` hooked into the shell."""

    def __init__(self, shell, load):
        before = self._hooks(shell)
        load()
        after = self._hooks(shell)
        self.shell = shell
        self.added = {key: [h for h in hooks if h not in before.get(key, [])] for key, hooks in after.items()}
        self.added = {key: hooks for key, hooks in self.added.items() if hooks}
        assert self.added, "the extension hooked nothing into the shell"

    @staticmethod
    def _hooks(shell) -> dict:
        hooks = {("event", name): list(callbacks) for name, callbacks in shell.events.callbacks.items()}
        hooks.update({("list", name): list(getattr(shell, name, [])) for name in SHELL_HOOK_LISTS})
        return hooks

    def off(self):
        for (kind, name), hooks in self.added.items():
            for hook in hooks:
                if kind == "event":
                    self.shell.events.unregister(name, hook)
                else:
                    getattr(self.shell, name).remove(hook)

    def on(self):
        for (kind, name), hooks in self.added.items():
            for hook in hooks:
                if kind == "event":
                    self.shell.events.register(name, hook)
                else:
                    getattr(self.shell, name).append(hook)


def time_cells(shell, n) -> list[float]:
    """Run ``n`` empty cells; return each one's time in µs."""
    clock, run, out = time.perf_counter_ns, shell.run_cell, []
    for _ in range(n):
        t0 = clock()
        run("pass", store_history=False)
        out.append((clock() - t0) / 1000)
    return out


def check_switch(shell, switch):
    """Fail unless cells are recorded with the extension on and not with it off."""
    import greenjupyter

    time_cells(shell, 3)
    last = greenjupyter.cells()[-1]
    switch.off()
    time_cells(shell, 3)
    assert greenjupyter.cells()[-1] is last, "a cell was recorded with the extension switched off"
    switch.on()
    time_cells(shell, 3)
    assert greenjupyter.cells()[-1] is not last, "no cell was recorded with the extension switched on"


def overhead(on_rounds, off_rounds) -> dict:
    """Per-cell overhead of ``on_rounds`` against the paired ``off_rounds`` (see the module's docstring)."""
    excess, jitter, round_diffs = [], [], []
    for on, off in zip(on_rounds, off_rounds):
        base = statistics.median(off)
        excess += [t - base for t in on]
        jitter += [t - base for t in off]
        round_diffs.append(statistics.median(on) - base)
    return {"p50": percentile(excess, 50), "p90": percentile(excess, 90), "p99": percentile(excess, 99),
            "off_p99_jitter": percentile(jitter, 99),
            "p99_shift": percentile(excess, 99) - percentile(jitter, 99),
            "median_of_round_diffs": statistics.median(round_diffs),
            "round_diffs_min": min(round_diffs), "round_diffs_max": max(round_diffs)}


def measure(with_codecarbon: bool) -> dict:
    """The interleaved run in this process; return the raw figures."""
    from IPython.core.interactiveshell import InteractiveShell

    import greenjupyter

    shell = InteractiveShell.instance()
    switch = ExtensionSwitch(shell, lambda: shell.run_line_magic("load_ext", "greenjupyter"))
    check_switch(shell, switch)
    components = tuple(greenjupyter.cells()[-1].measurement.components)
    print(f"components measured: {', '.join(components)}", file=sys.stderr)
    assert sorted(components) == sorted(_hardware.RAPL_ONLY), f"the meter does not use the simulated RAPL zones alone: {components}"

    tracker = None
    if with_codecarbon:
        import _codecarbon

        tracker, version = _codecarbon.tracker()

        def start_task(info):
            tracker.start_task()

        def stop_task(result):
            tracker.stop_task()

    time_cells(shell, 1000)  # warm-up
    rounds = {"on": [], "off": [], "codecarbon": []}
    started = time.perf_counter()
    for _ in range(ROUNDS):
        rounds["on"].append(time_cells(shell, CELLS)[WARM:])
        switch.off()
        rounds["off"].append(time_cells(shell, CELLS)[WARM:])
        if tracker is not None:
            shell.events.register("pre_run_cell", start_task)
            shell.events.register("post_run_cell", stop_task)
            rounds["codecarbon"].append(time_cells(shell, CELLS)[WARM:])
            shell.events.unregister("pre_run_cell", start_task)
            shell.events.unregister("post_run_cell", stop_task)
        switch.on()
    seconds = time.perf_counter() - started

    out = {"ours": overhead(rounds["on"], rounds["off"]), "seconds": seconds,
           "off_cell_median_us": statistics.median(t for r in rounds["off"] for t in r),
           "on_cell_median_us": statistics.median(t for r in rounds["on"] for t in r),
           "cells_per_config": ROUNDS * (CELLS - WARM)}
    if tracker is not None:
        out["codecarbon"] = overhead(rounds["codecarbon"], rounds["off"])
        out["codecarbon_version"] = version
        tracker.stop()
    return out


def wait_for_history(expected: int, timeout_s: float = 10.0) -> int:
    """Return how many cells the history database holds once it has ``expected`` (or after timeout_s)."""
    import greenjupyter

    deadline = time.monotonic() + timeout_s
    while True:
        gc.collect()
        stored = len(greenjupyter.history())
        if stored >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.25)


def alone(option: str) -> dict:
    """The same run without CodeCarbon in a child process (``--default-alone`` or ``--meter-alone``); return its
    figures."""
    out = subprocess.run([sys.executable, __file__, option], capture_output=True, text=True, timeout=900,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"the {option} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    if "--meter-alone" in sys.argv or "--default-alone" in sys.argv:
        _hardware.install(rapl=True, gpus=False)
        if "--meter-alone" in sys.argv:
            os.environ["GREENJUPYTER_DB_PATH"] = "off"
        print(json.dumps(measure(with_codecarbon=False)))
        return

    _hardware.install(rapl=True, gpus=False)
    result = measure(with_codecarbon=True)
    ours, cc = result["ours"], result["codecarbon"]
    stored = wait_for_history(result["cells_per_config"])
    assert stored >= result["cells_per_config"], f"only {stored} cells reached the history database"
    default_alone = alone("--default-alone")["ours"]
    meter_alone = alone("--meter-alone")["ours"]

    ratio = cc["p50"] / ours["p50"] if ours["p50"] > 0 else float("inf")
    print(f"{ROUNDS} rotations of {CELLS} empty cells each (first {WARM} of each not counted), "
          f"{result['seconds']:.0f} s; run_cell('pass') median {result['off_cell_median_us']:.1f} µs without "
          f"the extension, {result['on_cell_median_us']:.1f} µs with it")
    for label, o in (("greenjupyter, default", ours), ("greenjupyter, default, no CodeCarbon", default_alone),
                     ("greenjupyter, db_path=off", meter_alone),
                     (f"CodeCarbon {result['codecarbon_version']} task pair", cc)):
        print(f"{label:<38} p50 {o['p50']:8.1f} µs  p90 {o['p90']:8.1f} µs  p99 shift {o['p99_shift']:8.1f} µs  "
              f"p99 {o['p99']:8.1f} µs  "
              f"(per-round difference of medians: median {o['median_of_round_diffs']:.1f}, "
              f"range {o['round_diffs_min']:.1f} to {o['round_diffs_max']:.1f} µs)")
    print(f"IPython's own jitter, extension off: p99 {ours['off_p99_jitter']:.1f} µs over its round's median")
    print(f"CodeCarbon / greenjupyter at p50: {ratio:.1f}x; history database holds {stored} cells")
    save("cell_overhead", [
        figure("per-cell overhead p50, default configuration (history on)", ours["p50"], "µs", 25),
        figure("per-cell overhead p99 (shift of the 99th percentile cell), default configuration", ours["p99_shift"],
               "µs", 100),
        figure("99th percentile cell over the off median, default configuration (IPython's own jitter included)",
               ours["p99"], "µs", readme=True),
        figure("per-cell overhead p50, default configuration, no CodeCarbon in the process", default_alone["p50"],
               "µs", 25),
        figure("per-cell overhead p99 (shift), default configuration, no CodeCarbon in the process",
               default_alone["p99_shift"], "µs", 100),
        figure("per-cell overhead p50, meter alone (db_path=off)", meter_alone["p50"], "µs", readme=True),
        figure("per-cell overhead p99 (shift), meter alone (db_path=off)", meter_alone["p99_shift"], "µs",
               readme=True),
        figure("CodeCarbon start_task + stop_task per cell, p50", cc["p50"], "µs", readme=True),
        figure("CodeCarbon start_task + stop_task per cell, p99 (shift)", cc["p99_shift"], "µs", readme=True),
        figure("CodeCarbon task pair / greenjupyter default, at p50", ratio, "×", lower=20),
        figure("run_cell('pass') median without the extension", result["off_cell_median_us"], "µs",
               readme=True),
        figure("run_cell('pass') p99 over its round's median, extension off (IPython's own jitter)",
               ours["off_p99_jitter"], "µs", readme=True),
    ], {"rounds": ROUNDS, "cells_per_round": CELLS, "uncounted_per_round": WARM, "components": list(_hardware.RAPL_ONLY),
        "default": ours, "default_alone": default_alone, "meter_alone": meter_alone, "codecarbon": cc, "codecarbon_version": result["codecarbon_version"],
        "run_cell_median_us": {"off": result["off_cell_median_us"], "on": result["on_cell_median_us"]},
        "history_rows": stored, "seconds": result["seconds"]})


if __name__ == "__main__":
    main()
