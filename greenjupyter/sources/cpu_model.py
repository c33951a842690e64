"""What CPU this is, and its TDP from the offline table."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")

_NOISE = re.compile(r"\(r\)|\(tm\)|®|™|\bcpu\b|\bprocessor\b|\b\d+-core\b|\bwith radeon.*$")


@dataclass(frozen=True)
class CpuInfo:
    model: str  # as the OS names it, e.g. "Intel(R) Core(TM) i7-1165G7 @ 2.80GHz"
    threads_per_package: Optional[int]  # "siblings" in /proc/cpuinfo
    virtual: bool  # True under a hypervisor: the thread count is the VM's, not the chip's


def normalise(model: str) -> str:
    """Return ``model`` lower-cased without vendor marks, clock speed and filler words."""
    text = model.lower().split("@")[0]
    text = _NOISE.sub(" ", text)
    return " ".join(text.split())


def read_cpu_info(path: str = "/proc/cpuinfo") -> CpuInfo:
    """Return the CPU model and topology hints; reads only the first processor's block."""
    fields = {}
    try:
        with open(path, "rb") as f:
            head = f.read(16384).decode(errors="replace")
        for line in head.split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    model = fields.get("model name")
    if not model:
        import platform  # costs ~8 ms of regex compiling; only where /proc/cpuinfo has no model name

        model = platform.processor() or "unknown CPU"
    siblings = fields.get("siblings", "")
    return CpuInfo(
        model=model,
        threads_per_package=int(siblings) if siblings.isdigit() and int(siblings) > 0 else None,
        virtual="hypervisor" in fields.get("flags", "").split(),
    )


def lookup_tdp(model: str) -> Optional[tuple[str, float]]:
    """Return (table name, TDP watts) for ``model``, or None when the table has no match.

    An exact match of the normalised names wins; otherwise the longest table name found
    as whole words inside the model name (short names without a digit are ignored).
    """
    wanted = normalise(model)
    padded = f" {wanted} "
    best = None
    with open(os.path.join(DATA_DIR, "cpu_tdp.csv"), encoding="utf-8") as f:
        table = f.read()
    for line in table.splitlines():
        if line.startswith("#"):
            continue
        name, _, tdp = line.rpartition(",")
        if name == wanted:
            return name, float(tdp)
        if len(name) >= 4 and any(c.isdigit() for c in name) and f" {name} " in padded:
            if best is None or len(name) > len(best[0]):
                best = (name, float(tdp))
    return best
