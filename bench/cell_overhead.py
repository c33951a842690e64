"""Per-cell overhead of greenjupyter's hooks on an empty cell (target: p50 ≤ 20 µs, p99 ≤ 100 µs).

A real InteractiveShell with ``%load_ext greenjupyter`` over two fake RAPL packages + DRAM and
two fake GPUs. Timed: ``events.trigger("pre_run_cell", info)`` + ``events.trigger("post_run_cell",
result)`` with real ExecutionInfo/ExecutionResult objects, N times after a warm-up, in ROUNDS
rounds interleaved with the context figure: the median of ``run_cell("pass")`` with the hooks
registered and without.
"""

import gc
import statistics
import time

import _hardware
from _report import figure, percentile, save

N, WARMUP = 20_000, 2_000
ROUNDS, CELLS_PER_ROUND = 20, 500


def time_hook_pair(shell, info, result, n):
    trigger, clock = shell.events.trigger, time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        trigger("pre_run_cell", info)
        trigger("post_run_cell", result)
        out.append((clock() - t0) / 1000)
    return out


def time_hook_pair_finished(shell, recorder, info, result, n):
    """The hook pair plus ``recorder.finish()``: all per-cell work, wherever the product runs it."""
    trigger, finish, clock = shell.events.trigger, recorder.finish, time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        trigger("pre_run_cell", info)
        trigger("post_run_cell", result)
        finish()
        out.append((clock() - t0) / 1000)
    return out


def time_run_cell(shell, n):
    clock, out = time.perf_counter_ns, []
    for _ in range(n):
        t0 = clock()
        shell.run_cell("pass", store_history=False)
        out.append((clock() - t0) / 1000)
    return out


def gc_watch(pauses: list):
    """Record (generation, pause µs) of every garbage collection, to explain the worst cases."""
    started = {}

    def callback(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter_ns()
        else:
            pauses.append((info["generation"], (time.perf_counter_ns() - started["t"]) / 1000))
    gc.callbacks.append(callback)


def main():
    _hardware.install(rapl=True, gpus=True)
    from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, InteractiveShell

    from greenjupyter.ipython.extension import current_recorder

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "greenjupyter")
    recorder = current_recorder()
    assert recorder is not None, "the extension did not load"
    _hardware.check_components(recorder.meter)

    info = ExecutionInfo("pass", store_history=False, silent=False, shell_futures=True, cell_id=None)
    result = ExecutionResult(info)
    result.execution_count = 1
    time_hook_pair(shell, info, result, WARMUP)
    time_run_cell(shell, CELLS_PER_ROUND)  # warm-up
    # Interleaved rounds over several seconds: this machine's speed drifts by up to 2x for
    # seconds at a time, and a single burst would take whichever spell it fell into.
    us, bare, with_ext, without_ext, round_p50, pauses = [], [], [], [], [], []
    gc_watch(pauses)
    cells_before = recorder.totals.cells
    for _ in range(ROUNDS):
        part = time_hook_pair(shell, info, result, N // ROUNDS)
        us += part
        round_p50.append(percentile(part, 50))
        with_ext += time_run_cell(shell, CELLS_PER_ROUND)
        recorder.unregister()
        bare += time_hook_pair(shell, info, result, N // ROUNDS)  # no callback: IPython's own share
        without_ext += time_run_cell(shell, CELLS_PER_ROUND)
        recorder.register()
    assert recorder.totals.cells - cells_before == N + ROUNDS * CELLS_PER_ROUND, "a cell went unrecorded"
    finished = time_hook_pair_finished(shell, recorder, info, result, N // 4)
    # The same pair with the history database off (db_path=off): the meter alone.
    store, recorder.store = recorder.store, None
    meter_only = time_hook_pair(shell, info, result, N // 2)
    recorder.store = store
    assert store is not None and not store.failed, "the history database was not in use"
    measured = recorder.records[-1].measurement
    assert set(measured.components) == set(_hardware.EXPECTED), measured.components

    p50, p90, p99, worst = (percentile(us, q) for q in (50, 90, 99, 100))
    print(f"hook pair (history database on) over {N} empty cells: p50 {p50:.1f} µs, p90 {p90:.1f} µs, p99 {p99:.1f} µs, max {worst:.1f} µs")
    print(f"p50 of each round of {N // ROUNDS}: min {min(round_p50):.1f} µs, max {max(round_p50):.1f} µs (machine drift)")
    mean, stalls = statistics.mean(us), sum(u > 1000 for u in us)
    print(f"hook pair mean {mean:.1f} µs; {stalls} pairs over 1 ms; with finish() each time (all per-cell work): "
          f"p50 {percentile(finished, 50):.1f} µs")
    longest = max(pauses, key=lambda p: p[1], default=(None, 0.0))
    print(f"garbage collections during the run: {len(pauses)} (gen 2: {sum(g == 2 for g, _ in pauses)}), "
          f"longest {longest[1]:.0f} µs (gen {longest[0]})")
    print(f"same trigger pair with no callback: p50 {percentile(bare, 50):.2f} µs")
    run_on, run_off = statistics.median(with_ext), statistics.median(without_ext)
    print(f"run_cell('pass') median: {run_on:.1f} µs with the extension, {run_off:.1f} µs without "
          f"(+{run_on - run_off:.1f} µs)")
    only50, only99 = percentile(meter_only, 50), percentile(meter_only, 99)
    print(f"meter alone (db_path=off): p50 {only50:.1f} µs, p99 {only99:.1f} µs")
    save("cell_overhead", [
        figure("hook pair p50, meter alone (db_path=off)", only50, "µs", 20),
        figure("hook pair p99, meter alone (db_path=off)", only99, "µs", 100),
        figure("hook pair p50 with the history database (default)", p50, "µs"),
        figure("hook pair p99 with the history database (default)", p99, "µs"),
        figure("hook pair p90", p90, "µs"),
        figure("hook pair max", worst, "µs"),
        figure("hook pair mean", mean, "µs"),
        figure("hook pair + finish() p50 (all per-cell work)", percentile(finished, 50), "µs"),
        figure("run_cell('pass') median, extension on − off", run_on - run_off, "µs"),
    ], {
        "n": N, "warmup": WARMUP, "components": list(recorder.meter.components),
        "hook_pair_us": {"p50": p50, "p90": p90, "p99": p99, "max": worst, "mean": mean, "over_1ms": stalls},
        "hook_pair_finished_p50_us": percentile(finished, 50),
        "round_p50_us": round_p50,
        "gc_pauses": {"count": len(pauses), "gen2": sum(g == 2 for g, _ in pauses), "longest_us": longest[1]},
        "bare_trigger_pair_p50_us": percentile(bare, 50),
        "run_cell_median_us": {"with": run_on, "without": run_off, "cells_each": ROUNDS * CELLS_PER_ROUND},
    })


if __name__ == "__main__":
    main()
