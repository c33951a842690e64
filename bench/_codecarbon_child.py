"""Run inside bench/.venv-codecarbon by codecarbon_compare.py: CodeCarbon's overheads, as JSON on stdout.

Times, in this fresh process: ``import codecarbon``; building an OfflineEmissionsTracker (no
network: the country is given, nothing is saved or sent); its first ``start()``; then PAIRS
``start_task()``/``stop_task()`` pairs around nothing (an empty cell), as one would per cell.
Subprocess launches and socket connections made meanwhile are counted.
"""

import json
import os
import sys
import time

PAIRS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _spy  # noqa: E402

counts = _spy.install()

clock = time.perf_counter
t0 = clock()
from codecarbon import OfflineEmissionsTracker  # noqa: E402

t1 = clock()
tracker = OfflineEmissionsTracker(country_iso_code="FRA", save_to_file=False, log_level="error",
                                  measure_power_secs=15)
t2 = clock()
tracker.start()
t3 = clock()
start_counts = dict(counts)
pairs = []
for i in range(PAIRS):
    a = clock()
    tracker.start_task(f"cell-{i}")
    tracker.stop_task()
    pairs.append((clock() - a) * 1e6)
tracker.stop()
pairs.sort()
print(json.dumps({
    "version": __import__("codecarbon").__version__,
    "import_ms": (t1 - t0) * 1e3, "init_ms": (t2 - t1) * 1e3, "start_ms": (t3 - t2) * 1e3,
    "pair_us": pairs, "counts_to_first_start": start_counts, "counts_total": counts,
}))
