"""Where the default configuration's per-cell overhead goes: the cell journal against the counter reads.

One IPython shell with ``%load_ext greenjupyter`` (default configuration, the fake RAPL tree of
bench/_hardware.py). Rotations of 100 empty cells run, in turn, in each of these modes, each followed by
a round with the extension off as its baseline (as bench/cell_overhead.py does), so the VM's drift
falls on every mode alike:

- ``default``: what a user gets: the counters read at both edges (one call of the C module each), one
  journal entry of the edges as read, copied into the journal file mapped in memory;
- ``python``: the same with the C module's Python twins (greenjupyter/fastpath.py), as where it was
  not built: each counter's read releases and retakes the GIL;
- ``written``: the entry written with one ``write()`` to the file, as where it cannot be mapped;
- ``journal of readings``: the entry made as before edges were kept as read (both edges turned into
  joules on the cell's path, then packed), to show what keeping them as read saves;
- ``no journal``: the counter reads alone (the journal switched off; durability lost);
- ``floor``: the least any design of the cell path can do here, in place of the extension's hooks:
  two hook functions that read the four counters (one call of the C module each) and store one
  entry of both edges (one call), nothing else: no records, no checks.

Between rounds the queued cells are finished, outside the timed rounds. Prints p50 and p90 of each
mode's excess over its baseline and writes bench/results/cell_path_parts.json (not in the README's
table: bench/cell_overhead.py gives the figures that count; this one says where they go).
"""

import mmap
import os
import statistics

import _hardware
from _report import figure, percentile, save

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "150"))
MODES = ("default", "python", "written", "journal of readings", "no journal", "floor")


def main():
    _hardware.install(rapl=True, gpus=False)
    from IPython.core.interactiveshell import InteractiveShell

    from cell_overhead import ExtensionSwitch, time_cells
    from greenjupyter import fastpath, journal, meter
    from greenjupyter.ipython.extension import current_recorder

    shell = InteractiveShell.instance()
    switch = ExtensionSwitch(shell, lambda: shell.run_line_magic("load_ext", "greenjupyter"))
    recorder = current_recorder()
    writer, layout = recorder.journal, None
    time_cells(shell, 2000)  # warm-up; the journal's header is written by now
    layout = recorder._journal_layout
    assert writer is not None and layout is not None, "the default configuration has no edges journal here"

    mapped = journal._mapped

    def use(mode):
        recorder.journal = None if mode == "no journal" else writer
        recorder._journal_layout = object() if mode == "journal of readings" else layout  # no layout matches
        python = mode == "python"
        meter.read_counters = fastpath.python_read_counters if python else fastpath.read_counters
        journal._append = fastpath.python_append if python else fastpath.append
        journal._store = fastpath.python_store if python else fastpath.store
        if (journal._mapped is mapped) == (mode == "written"):  # files made from now on are mapped or not
            journal._mapped = (lambda fd, start: None) if mode == "written" else mapped
            if writer._next is not None:  # made ready in the other mode: left for the sampler to delete
                writer.retired.append(writer._next)
                writer._next = None
            writer._switch()  # a file of that kind now

    fds, held, scratch = layout.counters.fds, [], mmap.mmap(-1, 65536)

    def floor_pre(info):
        held.append(fastpath.read_counters(fds))

    def floor_post(result):
        fastpath.store(scratch, 0, journal.EDGES_MAGIC, (b"h" * 56, held.pop()[2], fastpath.read_counters(fds)[2],
                                                         "pass", None))

    excess = {mode: [] for mode in MODES}
    for _ in range(ROUNDS):
        for mode in MODES:
            use(mode)
            if mode == "floor":
                switch.off()
                shell.events.register("pre_run_cell", floor_pre)
                shell.events.register("post_run_cell", floor_post)
                on = time_cells(shell, 100)[5:]
                shell.events.unregister("pre_run_cell", floor_pre)
                shell.events.unregister("post_run_cell", floor_post)
                switch.on()
            else:
                on = time_cells(shell, 100)[5:]
            switch.off()
            base = statistics.median(time_cells(shell, 100)[5:])
            switch.on()
            excess[mode] += [t - base for t in on]
            recorder.finish()
    use("default")
    figures = []
    for mode in MODES:
        figures.append(figure(f"per-cell overhead p50, {mode}", percentile(excess[mode], 50), "µs", readme=False))
        figures.append(figure(f"per-cell overhead p90, {mode}", percentile(excess[mode], 90), "µs", readme=False))
    save("cell_path_parts", figures, {"rounds": ROUNDS, "cells_per_mode": len(excess["default"])})


if __name__ == "__main__":
    main()
