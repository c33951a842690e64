"""Regenerate greenjupyter/sources/data/cpu_tdp.csv from CodeCarbon's CPU table.

Usage: python scripts/build_cpu_tdp.py path/to/codecarbon/data/hardware/cpu_power.csv
(the file ships in the ``codecarbon`` wheel, MIT licence). Names are normalised the way
greenjupyter matches /proc/cpuinfo model names; duplicates keep the first TDP seen.
"""

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from greenjupyter.sources.cpu_model import normalise  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "greenjupyter" / "sources" / "data" / "cpu_tdp.csv"


def main(source: str) -> None:
    rows = {}
    with open(source, newline="") as f:
        for row in csv.DictReader(f):
            name, tdp = normalise(row["Name"]), row["TDP"].strip()
            try:
                watts = float(tdp)
            except ValueError:  # a few rows are malformed upstream; skip rather than guess
                print(f"skipped {row['Name']!r}: TDP {tdp!r} is not a number")
                continue
            if name and watts > 0 and name not in rows:
                rows[name] = round(watts, 1)
    with open(OUT, "w", newline="") as f:
        f.write("# CPU model (normalised) -> TDP in watts. Source: CodeCarbon cpu_power.csv (MIT),\n")
        f.write("# compiled by CodeCarbon from Intel and AMD specification pages; taken from codecarbon 3.3.2 (2026).\n")
        for name in sorted(rows):
            f.write(f"{name},{rows[name]:g}\n")
    print(f"wrote {len(rows)} models to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
