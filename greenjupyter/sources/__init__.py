"""Energy sources: what can be read on this machine, and why the rest cannot.

``detect()`` tries each kind in order — RAPL counters, NVIDIA GPUs — and fills what is
missing for the CPU and memory with an estimate. It never raises for hardware that is
absent or closed; it says why instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SourceUnavailable
from .base import Source, Unavailable

__all__ = ["Detection", "Source", "Unavailable", "detect", "detect_cpu_memory", "detect_gpus"]


@dataclass
class Detection:
    """The sources in use, the kinds that are not (with reasons), and notes on left-out zones."""

    sources: list[Source] = field(default_factory=list)
    unavailable: list[Unavailable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        from ..format import sources_text

        return sources_text(self)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def extend(self, other: "Detection") -> None:
        self.sources += other.sources
        self.unavailable += other.unavailable
        self.notes += other.notes


def detect_cpu_memory(powercap_root: str) -> Detection:
    """Return RAPL counters where readable, and estimates for whatever they do not cover."""
    from .estimate import EstimateSource
    from .rapl import open_rapl

    found = Detection()
    try:
        rapl = open_rapl(powercap_root)
        found.sources.append(rapl)
        found.notes += rapl.notes
    except SourceUnavailable as why:
        found.unavailable.append(Unavailable("rapl", str(why), why.hint))
    measured = {c.split(":")[0] for s in found.sources for c in s.components}
    want_cpu, want_memory = "cpu" not in measured, "dram" not in measured
    if want_cpu or want_memory:
        found.sources.append(EstimateSource(cpu=want_cpu, memory=want_memory))
    return found


def detect_gpus() -> Detection:
    """Return an NVML source over every NVIDIA GPU, or why there is none."""
    from .nvml import open_nvml

    found = Detection()
    try:
        found.sources.append(open_nvml())
    except SourceUnavailable as why:
        found.unavailable.append(Unavailable("nvml", str(why), why.hint))
    return found


def detect(powercap_root: str = "/sys/class/powercap") -> Detection:
    """Return every usable source on this machine and why the others are not usable."""
    found = detect_cpu_memory(powercap_root)
    found.extend(detect_gpus())
    return found
