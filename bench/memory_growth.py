"""Memory growth over 100,000 cells (target ≤ 2 MB) and the power ring per hour (target ≤ 1 MB).

A real InteractiveShell with the extension in the default configuration (history database on,
at a throwaway db_path) over the fake RAPL + GPU hardware (six components); 1,000 warm-up
cells (the 1,000 kept cell records fill up), then 100,000 empty cells with store_history=False
so that IPython's own history does not grow. Phase 1 reads RSS from /proc/self/statm with
tracemalloc off (its own tables would count in RSS); phase 2 runs another 100,000 cells under
tracemalloc and attributes the growth to files under greenjupyter/.

The power ring: a greenjupyter Sampler (4 Hz, history_s = 3600) with six components, ticked
14,401 times on a fake clock (an hour of samples), under tracemalloc: the bytes it holds once
full, whatever it keeps them in.
"""

import gc
import os
import time
import tracemalloc

import _hardware
from _report import figure, save

CELLS, WARMUP = 100_000, 1_000
MB = 1e6


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_cells(shell, n):
    """Run ``n`` empty cells, then let the sampler's next tick take up what the cells left it."""
    import greenjupyter

    last = greenjupyter.cells()[-1] if greenjupyter.cells() else None
    for _ in range(n):
        shell.run_cell("pass", store_history=False)
    time.sleep(0.6)
    assert greenjupyter.cells()[-1] is not last, "the cells were not measured"
    gc.collect()


def ring_bytes_per_hour(interval_s: float = 0.25, components: int = 6) -> tuple[int, int]:
    """Return (bytes a Sampler holds after an hour of ticks at ``interval_s``, samples it holds)."""
    from greenjupyter.sampler import Sampler

    names = tuple(f"component:{i}" for i in range(components))
    ticks = round(3600 / interval_s)
    clock = [1000.0]

    def read():
        clock[0] += interval_s
        t = clock[0]
        return t, tuple((10.0 + i) * t for i in range(components)), names

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sampler = Sampler(read, interval_s=interval_s, history_s=3600.0)
    for _ in range(ticks + 1):
        sampler.tick()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held, len(sampler.samples)


def main():
    _hardware.install(rapl=True, gpus=True)
    from IPython.core.interactiveshell import InteractiveShell

    import greenjupyter

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "greenjupyter")
    run_cells(shell, WARMUP)
    components = set(greenjupyter.cells()[-1].measurement.components)
    assert components == set(_hardware.EXPECTED), f"the meter does not use the fake hardware: {components}"
    rss0, t0 = rss_bytes(), time.perf_counter()
    checkpoints = []  # RSS every tenth of the run: a leak climbs steadily, a high-water mark levels off
    for _ in range(10):
        run_cells(shell, CELLS // 10)
        checkpoints.append(rss_bytes())
    rss1, seconds = checkpoints[-1], time.perf_counter() - t0
    print(f"phase 1: {CELLS} cells in {seconds:.1f} s; RSS {rss0 / MB:.1f} -> {rss1 / MB:.1f} MB "
          f"(+{(rss1 - rss0) / MB:.2f} MB); every {CELLS // 10:,} cells: "
          + " ".join(f"{(r - rss0) / MB:+.2f}" for r in checkpoints) + " MB")

    tracemalloc.start()
    run_cells(shell, WARMUP)
    ours = [tracemalloc.Filter(True, str(_hardware.ROOT / "greenjupyter" / "*"))]
    before = tracemalloc.take_snapshot()
    run_cells(shell, CELLS)
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

    # The sampler's history grows with time, not with cells: its size once it holds an hour.
    ring, kept = ring_bytes_per_hour()
    print(f"power ring: {ring / MB:.3f} MB for an hour at 4 Hz with six components ({kept} samples kept), "
          f"{ring / max(kept, 1):.0f} B per sample")

    save("memory_growth", [
        figure(f"RSS growth over {CELLS:,} cells, default configuration", (rss1 - rss0) / MB, "MB", 2, 2),
        figure(f"tracemalloc growth in greenjupyter/ over {CELLS:,} cells", ours_growth / MB, "MB", digits=3,
               readme=True),
        figure(f"tracemalloc growth, all files, over {CELLS:,} cells", all_growth / MB, "MB", digits=3),
        figure(f"RSS growth over the last {CELLS // 2:,} cells", (rss1 - checkpoints[4]) / MB, "MB", digits=2),
        figure("time for 100,000 empty cells (phase 1)", seconds, "s"),
        figure("power ring, an hour at 4 Hz with six components", ring / MB, "MB", 1, 3),
    ], {"rss_before": rss0, "rss_after": rss1, "rss_checkpoints": checkpoints, "traced_growth_all": all_growth,
        "traced_growth_greenjupyter": ours_growth, "ring_bytes_per_hour": ring, "ring_samples": kept})


if __name__ == "__main__":
    main()
