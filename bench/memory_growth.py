"""Memory growth over 100,000 cells (target ≤ 5 MB).

A real InteractiveShell with the extension over the fake RAPL + GPU hardware; 1,000 warm-up
cells (the 1,000 kept cell records fill up), then 100,000 empty cells with store_history=False
so that IPython's own history does not grow. Phase 1 reads RSS from /proc/self/statm with
tracemalloc off (its own tables would count in RSS); phase 2 runs another 100,000 cells under
tracemalloc and attributes the growth to files under greenjupyter/.
"""

import gc
import os
import sys
import time
import tracemalloc

import _hardware
from _report import figure, save

CELLS, WARMUP = 100_000, 1_000
MB = 1e6


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_cells(shell, recorder, n):
    for _ in range(n):
        shell.run_cell("pass", store_history=False)
    recorder.finish()  # measure with no reading waiting to become a record
    gc.collect()


def sample_bytes(sample) -> int:
    """Bytes one sampler Sample holds on its own (its components tuple is shared; t0 is the previous t1)."""
    own = [sample, sample.t1, sample.watts, sample.total_w, *sample.watts]
    return sum(sys.getsizeof(o) for o in own) + 8  # + its slot in the deque


def main():
    _hardware.install(rapl=True, gpus=True)
    from IPython.core.interactiveshell import InteractiveShell

    from greenjupyter import runtime
    from greenjupyter.ipython.extension import current_recorder

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "greenjupyter")
    recorder = current_recorder()
    meter = recorder.meter
    _hardware.check_components(meter)

    run_cells(shell, recorder, WARMUP)
    rss0, cells0, t0 = rss_bytes(), recorder.totals.cells, time.perf_counter()
    checkpoints = []  # RSS every tenth of the run: a leak climbs steadily, a high-water mark levels off
    for _ in range(10):
        run_cells(shell, recorder, CELLS // 10)
        checkpoints.append(rss_bytes())
    rss1, seconds = checkpoints[-1], time.perf_counter() - t0
    assert recorder.totals.cells - cells0 == CELLS, "not every cell was measured"
    print(f"phase 1: {CELLS} cells in {seconds:.1f} s; RSS {rss0 / MB:.1f} -> {rss1 / MB:.1f} MB "
          f"(+{(rss1 - rss0) / MB:.2f} MB); every {CELLS // 10:,} cells: "
          + " ".join(f"{(r - rss0) / MB:+.2f}" for r in checkpoints) + " MB")

    tracemalloc.start()
    run_cells(shell, recorder, WARMUP)
    ours = [tracemalloc.Filter(True, str(_hardware.ROOT / "greenjupyter" / "*"))]
    before = tracemalloc.take_snapshot()
    run_cells(shell, recorder, CELLS)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    all_growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    diffs = after.filter_traces(ours).compare_to(before.filter_traces(ours), "lineno")
    ours_growth = sum(s.size_diff for s in diffs)
    print(f"phase 2 (tracemalloc): traced growth {all_growth / 1e3:.1f} kB in all, "
          f"{ours_growth / 1e3:.1f} kB in greenjupyter/; largest greenjupyter lines:")
    for stat in sorted(diffs, key=lambda s: -s.size_diff)[:5]:
        print(f"  {stat.size_diff / 1e3:+8.1f} kB  {stat.traceback[0].filename.split('greenjupyter/')[-1]}:"
              f"{stat.traceback[0].lineno}")

    # The sampler's history grows with time, not with cells: its size once the ring buffer is full.
    per_sample, capacity = sample_bytes(meter.sampler.samples[-1]), meter.sampler.samples.maxlen
    print(f"sampler history: {per_sample} B per sample; full ring buffer ({capacity} samples = "
          f"{runtime.get_settings().history_s:g} s) ~{per_sample * capacity / MB:.1f} MB, whatever the number of cells")

    save("memory_growth", [
        figure(f"RSS growth over {CELLS:,} cells", (rss1 - rss0) / MB, "MB", 5, 2),
        figure(f"tracemalloc growth in greenjupyter/ over {CELLS:,} cells", ours_growth / MB, "MB", 5, 3),
        figure(f"tracemalloc growth, all files, over {CELLS:,} cells", all_growth / MB, "MB", digits=3),
        figure(f"RSS growth over the last {CELLS // 2:,} cells", (rss1 - checkpoints[4]) / MB, "MB", digits=2),
        figure("time for 100,000 empty cells (phase 1)", seconds, "s"),
        figure(f"sampler history when full ({capacity} samples)", per_sample * capacity / MB, "MB", digits=1),
    ], {"rss_before": rss0, "rss_after": rss1, "rss_checkpoints": checkpoints, "traced_growth_all": all_growth,
        "traced_growth_greenjupyter": ours_growth, "bytes_per_sample": per_sample, "sampler_capacity": capacity})


if __name__ == "__main__":
    main()
