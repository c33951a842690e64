"""Fake hardware for the benchmarks: the test fakes, wired in the way tests/conftest.py does it.

``install(rapl=True, gpus=True)`` must run before greenjupyter's shared meter is created:
- RAPL: a FakePowercap with the SERVER zones (two packages + two DRAM) in a temp dir, static
  (no writer process: counters do not advance, which costs the reader the same), and
  GREENJUPYTER_POWERCAP_ROOT pointing at it;
- GPUs: without them CUDA_VISIBLE_DEVICES is set empty (no GPU is charged); with them, the pynvml stand-in in sys.modules["pynvml"] with an H100 (energy counter) and a
  P100 (power only), and greenjupyter.sources.nvml.DRIVER_MARKERS set to an existing file.
Without them, the meter sees what this machine has (here: no RAPL, no GPU).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RAPL_ONLY = ("cpu:package-0", "cpu:package-1", "dram:0", "dram:1")
EXPECTED = RAPL_ONLY + ("gpu:0", "gpu:1")


def install(rapl: bool = True, gpus: bool = True) -> Path | None:
    """Point greenjupyter at fake hardware and a throwaway history; return the temp dir (removed at exit)."""
    tmp = Path(tempfile.mkdtemp(prefix="greenjupyter-bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    os.environ["GREENJUPYTER_DB_PATH"] = str(tmp / "history.sqlite")  # never the user's own history
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no GPU, even on a machine that has some
    if not (rapl or gpus):
        os.environ["GREENJUPYTER_POWERCAP_ROOT"] = "/nonexistent-powercap"
        return tmp
    if rapl:
        from tests.fakes.powercap import SERVER, FakePowercap

        FakePowercap(tmp / "powercap", SERVER)
        os.environ["GREENJUPYTER_POWERCAP_ROOT"] = str(tmp / "powercap")
    else:
        os.environ["GREENJUPYTER_POWERCAP_ROOT"] = "/nonexistent-powercap"
    if gpus:
        from greenjupyter.sources import nvml
        from tests.fakes import pynvml as fake_pynvml

        devices = [
            fake_pynvml.FakeGpu("NVIDIA H100 80GB HBM3", 300.0),
            fake_pynvml.FakeGpu("Tesla P100-PCIE-16GB", 150.0, counter=False),
        ]
        sys.modules["pynvml"] = fake_pynvml.make(devices)
        marker = tmp / "nvidiactl"
        marker.write_text("")
        nvml.DRIVER_MARKERS = (str(marker),)
    return tmp


def check_components(meter, expected=EXPECTED) -> tuple[str, ...]:
    """Wait for GPU detection, print the meter's components and fail if any expected one is missing."""
    meter.wait_ready()  # GPUs are found on the sampler thread
    components = meter.components
    print(f"components measured: {', '.join(components)}")
    missing = [c for c in expected if c not in components]
    assert not missing, f"the meter does not use the fake hardware: {missing} missing from {components}"
    return components
