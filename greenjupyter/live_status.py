"""Each kernel's power now, in a small file the Jupyter server reads for its /metrics.

A kernel with a history database writes ``<db>.live/<session>.json`` from its sampler's thread,
at most once a second: the time, the sampler's interval and watts per component (those that are
modelled listed apart). The server never talks to kernels to scrape them: it reads the files
fresh enough to be alive (``read_power``). A kernel deletes its file when it exits or unloads the
extension; the file of a killed kernel goes stale, is ignored, and is removed after a minute.

The folder is 0700 and the files 0600, written whole (a temporary file, then ``os.replace``), so
a reader never sees half a file.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import threading
import time

from .notices import notice
from .store import make_folders

SUFFIX = ".live"
WRITE_EVERY_S = 1.0  # a scrape every 15 s or so needs no more
FRESH_INTERVALS = 3  # a file older than this many sampler intervals (+ FRESH_SLACK_S) is not a live kernel's
FRESH_SLACK_S = 2.0
REMOVE_AFTER_S = 60.0  # a file this stale (and stale for its own interval) belongs to a kernel that was killed
MAX_FILES = 1000  # read per scrape, at most
MAX_FILE_BYTES = 65536
MAX_WATTS = 1e6  # per component; anything above is not a reading

_current: "LiveStatus | None" = None


def directory_for(db_path: str) -> str:
    return db_path + SUFFIX


class LiveStatus:
    """A sampler listener that publishes the kernel's watts per component to its file.

    A write that fails (a read-only or full disk) is said once and ends the publishing; cells are
    not affected.
    """

    def __init__(self, directory: str, session: str, meter):
        self.path = os.path.join(directory, session + ".json")
        self.meter = meter
        self.pid = os.getpid()
        self._written_at = -math.inf
        self._stopped = False  # closed, or a write failed
        self._lock = threading.Lock()  # a write under way and close(): the sampler outlives atexit

    def __call__(self, sample) -> None:
        now = time.monotonic()
        if self._stopped or now - self._written_at < WRITE_EVERY_S or os.getpid() != self.pid:
            return
        self._written_at = now
        info = self.meter.component_info()
        watts = {name: w for name, w in zip(sample.components, sample.watts) if w == w}  # NaN: failed this tick
        status = {"version": 1, "time": time.time(), "interval_s": self.meter.sampler.interval_s, "watts": watts,
                  "estimated": [name for name, modelled in zip(info.names, info.estimated) if modelled]}
        with self._lock:
            if self._stopped:
                return
            try:
                _write_private(self.path, json.dumps(status).encode())
            except OSError as error:
                self._stopped = True
                notice("live-status", f"cannot publish this kernel's power for the Jupyter server's /metrics "
                                      f"({error}); cells are not affected")

    def close(self) -> None:
        """Stop writing and delete the file (in the process that wrote it only)."""
        if os.getpid() != self.pid:
            return
        with self._lock:
            self._stopped = True
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _write_private(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    make_folders(directory)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def start() -> None:
    """Publish the loaded extension's power, if it keeps a history (the server finds the files beside it)."""
    global _current
    from .ipython.extension import current_recorder

    recorder = current_recorder()
    if recorder is None or recorder.store is None:
        return
    if _current is not None:
        if _current.meter is recorder.meter and _current in recorder.meter.sampler.listeners:
            return  # loaded twice
        stop()
    try:
        _current = LiveStatus(directory_for(recorder.store.path), recorder.session, recorder.meter)
        recorder.meter.sampler.listeners.append(_current)
        atexit.register(_current.close)
    except Exception as error:  # never in the way of loading
        notice("live-status", f"cannot publish this kernel's power for the Jupyter server ({error!r})")


def stop() -> None:
    """Stop publishing and delete the file."""
    global _current
    status, _current = _current, None
    if status is None:
        return
    if status in status.meter.sampler.listeners:
        status.meter.sampler.listeners.remove(status)
    atexit.unregister(status.close)
    status.close()


def read_power(directory: str, now: float | None = None) -> tuple[dict[str, float], int]:
    """Return (watts per component over the live kernels, how many kernels) from ``directory``.

    A device's counter is read by every kernel on the machine, so its watts are counted once (the
    highest any kernel saw); modelled components are each kernel's own share and add up. Stale
    files are skipped, and removed once a minute old; unreadable ones are skipped.
    """
    now = time.time() if now is None else now
    measured: dict[str, float] = {}
    modelled: dict[str, float] = {}
    kernels = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:  # no kernel has written yet, or no folder we may read
        return {}, 0
    for entry in entries[:MAX_FILES]:
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        status = _read_status(entry, now)
        if status is None:
            continue
        kernels += 1
        estimated = {name for name in status.get("estimated", ()) if isinstance(name, str)}
        for name, watts in status["watts"].items():
            if not (isinstance(name, str) and isinstance(watts, (int, float)) and 0 <= watts <= MAX_WATTS):
                continue
            if name in estimated:
                modelled[name] = modelled.get(name, 0.0) + watts
            else:
                measured[name] = max(measured.get(name, 0.0), watts)
    return {**measured, **modelled}, kernels


def _read_status(entry, now: float) -> dict | None:
    """Return a fresh file's content, or None (stale, unreadable, not ours); remove a long-stale file."""
    try:
        age = now - entry.stat().st_mtime
        with open(entry.path, "rb") as f:
            status = json.loads(f.read(MAX_FILE_BYTES + 1)[:MAX_FILE_BYTES])
        interval = float(status["interval_s"])
        if not (isinstance(status["watts"], dict) and isinstance(status.get("estimated", []), list)
                and math.isfinite(interval)):
            return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    fresh_s = FRESH_INTERVALS * min(max(interval, 0.0), 60.0) + FRESH_SLACK_S
    if age > max(REMOVE_AFTER_S, 2 * fresh_s):
        try:
            os.unlink(entry.path)
        except OSError:
            pass
    return status if age <= fresh_s else None
