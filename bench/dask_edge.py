"""What a cell pays for the Dask cluster's energy, with and without a client.

    .venv/bin/python bench/dask_edge.py

One process, in three stages, each timing the same things:
1. ``distributed`` never imported (most notebooks);
2. ``distributed`` imported, no client;
3. a client on a LocalCluster of two worker processes (one thread each) on this machine.

Timed: ``ClusterMeter.begin`` + ``end`` alone (the two lines the cell hooks gained), as the best
of five batches of calls (load only ever slows a batch down); and the recorder's real
``pre_run_cell`` + ``post_run_cell`` pair around a 5 ms cell, cell by cell (p50, p99). The meter
reads the fake two-socket RAPL tree (static files); the workers read it too (they share this
host, so their figures are not added, but they are read). In stage 3 the edge reads run on the
background thread: for each edge, the time from the kernel's edge until both reads of every
worker are in (two ``Client.run`` round trips 20 ms apart; a cell's end edge may wait for its
start's reads), and whether any cell's cluster figure failed.
Writes bench/results/dask_edge.json.
"""

import logging
import statistics
import sys
import time

import _hardware
from _report import figure, percentile, save

CELLS = 300
CELL_S = 0.005


def best_per_call(f, n: int) -> float:
    """Seconds per call of f(), the best of five batches of n."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            f()
        times.append((time.perf_counter() - start) / n)
    return min(times)


def stage(shell, recorder, name: str, with_client: bool) -> tuple[list, dict]:
    from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult

    cluster = recorder.cluster
    info = ExecutionInfo("pass", False, False, True, None)

    def edges():
        cluster.begin(info)
        cluster.end(info)
        cluster.take(info)

    per_pair = best_per_call(edges, 200 if with_client else 20000)
    if with_client:  # the reads those calls queued: let them finish before timing cells
        while not cluster._requests.empty():
            time.sleep(0.05)
        time.sleep(1.0)
    hooks, reads, failed = [], [], 0
    for _ in range(CELLS):
        info = ExecutionInfo("pass", False, False, True, None)
        result = ExecutionResult(info)
        result.execution_count = 1
        t0 = time.perf_counter()
        recorder.pre_run_cell(info)
        t1 = time.perf_counter()
        time.sleep(CELL_S)
        t2 = time.perf_counter()
        recorder.post_run_cell(result)
        t3 = time.perf_counter()
        hooks.append((t1 - t0) + (t3 - t2))
        window = cluster._windows.get(info)
        if window is not None:
            for edge in window:
                edge.done.wait(10)
                reads.append(time.perf_counter() - edge.t)
        recorder.finish()
        m = recorder.records[-1].measurement
        failed += "cluster" in m.failed_components
    summary = {"edges_s": per_pair, "hooks_p50_s": statistics.median(hooks), "hooks_p99_s": percentile(hooks, 99)}
    if reads:
        summary.update(read_p50_s=statistics.median(reads), read_p99_s=percentile(reads, 99), failed=failed)
    print(f"{name}: begin+end {per_pair * 1e6:.2f} µs; hooks p50 {summary['hooks_p50_s'] * 1e6:.1f} µs, "
          f"p99 {summary['hooks_p99_s'] * 1e6:.1f} µs" +
          (f"; edge read p50 {summary['read_p50_s'] * 1e3:.1f} ms, p99 {summary['read_p99_s'] * 1e3:.1f} ms, "
           f"{failed} cell(s) failed" if reads else ""), flush=True)
    return hooks, summary


def main():
    _hardware.install(rapl=True, gpus=False)
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "greenjupyter")
    from greenjupyter.ipython.extension import current_recorder

    recorder = current_recorder()
    _hardware.check_components(recorder.meter, _hardware.RAPL_ONLY)
    assert "distributed" not in sys.modules, "something imported distributed before the first stage"
    results = {"without": stage(shell, recorder, "distributed not imported", False)[1]}

    import distributed

    results["no_client"] = stage(shell, recorder, "distributed imported, no client", False)[1]
    started = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                       silence_logs=logging.CRITICAL)
    client = distributed.Client(cluster)
    client.wait_for_workers(2)
    print(f"LocalCluster of 2 worker processes up in {time.perf_counter() - started:.1f} s")
    try:
        results["client"] = stage(shell, recorder, "a client, LocalCluster of 2 workers", True)[1]
    finally:
        client.close()
        cluster.close()

    w, n, c = results["without"], results["no_client"], results["client"]
    figures = [
        figure("cluster begin+end, distributed not imported", w["edges_s"] * 1e9, "ns", limit=1000, readme=False),
        figure("cluster begin+end, distributed imported, no client", n["edges_s"] * 1e6, "µs", limit=10, digits=2,
               readme=False),
        figure("cluster begin+end, with a client (queues the reads)", c["edges_s"] * 1e6, "µs", limit=100,
               readme=False),
        figure("cell hooks p50, distributed not imported", w["hooks_p50_s"] * 1e6, "µs", readme=False),
        figure("cell hooks p50, distributed imported, no client", n["hooks_p50_s"] * 1e6, "µs", readme=False),
        figure("cell hooks p50, with a client", c["hooks_p50_s"] * 1e6, "µs", readme=False),
        figure("cell hooks p99, distributed not imported", w["hooks_p99_s"] * 1e6, "µs", readme=False),
        figure("cell hooks p99, with a client", c["hooks_p99_s"] * 1e6, "µs", readme=False),
        figure("edge read off the cell's path (2 reads 20 ms apart), p50", c["read_p50_s"] * 1e3, "ms", readme=False),
        figure("edge read off the cell's path (2 reads 20 ms apart), p99", c["read_p99_s"] * 1e3, "ms",
               limit=2000, readme=False),  # cluster_timeout_s
        figure("cells whose cluster read failed", c["failed"], "cells", limit=0, digits=0, readme=False),
    ]
    save("dask_edge", figures, {"cells_per_stage": CELLS, "cell_s": CELL_S, "workers": 2, "stages": results})
    if not all(f["pass"] is not False for f in figures):
        sys.exit(1)


if __name__ == "__main__":
    main()
