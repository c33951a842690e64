"""The cell journal: each finished cell's two readings, appended with one ``os.write``.

A cell's own path does nothing else durable. Data written is in the page cache, which outlives
the process, so a kernel killed with SIGKILL right after a cell's reply loses no cell. The
sampler thread turns the entries into records and SQLite rows; once the rows are in, the
journal file is retired and deleted. A journal left by a dead kernel is recovered into rows
by the next kernel that opens the database (``recover``).

Files live in ``<database>.pending/``, owner-only, one or more per kernel session, each
locked (``flock``) by its writer while it lives: a file that can be locked belongs to a
process that is gone. Each file starts with a header (JSON: the session, the components,
what their figures need) and holds entries framed as magic, length, payload, CRC-32, so a
torn last write is told from a whole one.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import weakref
import zlib
from dataclasses import dataclass

from .measurement import CellRecord
from .meter import ComponentInfo, Reading, window_measurement
from .notices import notice
from .sources import rapl
from .store import StoredCell, remove_file

try:
    import fcntl
except ImportError:  # Windows: no journal; cells reach the database on the sampler's tick
    fcntl = None
SUPPORTED = fcntl is not None

HEADER_MAGIC, ENTRY_MAGIC, EDGES_MAGIC = b"GJh1", b"GJc1", b"GJc2"
NO_TEXT = b"\xff\xff"
FRAME = struct.Struct("<4sI")  # magic, payload length; the payload is followed by its CRC-32
CRC = struct.Struct("<I")
# An entry of readings (GJc1): seq, execution count (-1: none), success, components, failed mask,
# shared mask, then for each edge: perf_counter time, wall time, reads' spread; then the values.
FIXED = struct.Struct("<QqBHQQdddddd")
# An entry of edges as captured (GJc2; the cell path's): seq, execution count, success, failed mask,
# shared mask, each edge's perf_counter times before and after its reads, the wall clock's offset
# from perf_counter; then each source's two packed captures, in the header's order of sources.
EDGES = struct.Struct("<QqBQQddddd")
SUFFIX = ".cells"
MAX_TEXT_BYTES = 1024  # cell id, preview and error name are short; a longer one is cut
MAX_ATTACHED_BYTES = 16384  # metrics logged in a cell, as JSON
ATTACHED = ("metrics", "units", "unit_name", "tag")  # the CellRecord fields an entry may carry


def directory_for(db_path: str) -> str:
    return db_path + ".pending"


@dataclass(frozen=True)
class Entry:
    """One finished cell as the journal holds it."""

    seq: int
    execution_count: int | None
    success: bool
    start: Reading
    stop: Reading
    failed: frozenset
    shared: frozenset
    cell_id: str | None
    preview: str
    error: str | None
    attached: dict | None = None  # what the user attached to the cell: metrics, units, its run's tag

    def record(self, header: dict, finish, previous: "Entry | None" = None) -> CellRecord:
        """Return the cell's CellRecord; ``finish(measurement)`` adds the carbon figures. ``previous``,
        the entry of the cell that ended just before it, gives the energy drawn between the two."""
        attached = {k: v for k, v in (self.attached or {}).items() if k in ATTACHED}
        if previous is not None and previous.seq == self.seq - 1 and previous.stop.t <= self.start.t:
            gap = window_measurement(previous.stop, self.start, component_info(header))
            attached.update(idle_before_j=gap.energy_j, idle_before_s=gap.duration_s)
        return CellRecord(finish(measurement_of(self, header)), self.execution_count, self.cell_id,
                          header.get("notebook"), self.success, self.error, self.preview, **attached)


def header_bytes(header: dict) -> bytes:
    return _frame(HEADER_MAGIC, json.dumps(header).encode())


def entry_bytes(seq: int, execution_count, success: bool, start: Reading, stop: Reading, failed, shared,
                cell_id, preview: str, error, attached=None) -> bytes:
    """Return one framed entry (the cell path's only durable write; kept lean)."""
    n = len(start.values)
    polled = start.variation is not None and stop.variation is not None
    numbers = start.values + stop.values[:n]
    if polled:
        numbers = numbers + start.variation + stop.variation[:n]
    payload = _numbers_struct(len(numbers)).pack(
        seq, -1 if execution_count is None else execution_count, success, n, _mask(failed) if failed else 0,
        _mask(shared) if shared else 0, start.t, start.wall, start.spread_s, stop.t, stop.wall, stop.spread_s,
        polled, *numbers,
    ) + _texts(cell_id, preview, error) + _attached_text(attached)
    return FRAME.pack(ENTRY_MAGIC, len(payload)) + payload + CRC.pack(zlib.crc32(payload))


def edges_entry(seq: int, execution_count, success: bool, start: tuple, stop: tuple, failed, shared,
                cell_id, source: str, error, wall_offset: float, attached=None) -> bytes:
    """Return one framed entry of two edges from ``Meter.edge()`` as captured (the cell path's only
    durable write, kept lean: no joules are worked out here). ``source`` is the cell's code; its first
    line is found when the entry is read. The edges' layout must be the one the header describes.
    ``attached``: what the user attached to the cell (a dict of ATTACHED fields), or None."""
    parts = [EDGES.pack(seq, -1 if execution_count is None else execution_count, success,
                        _mask(failed) if failed else 0, _mask(shared) if shared else 0,
                        start[0], start[1], stop[0], stop[1], wall_offset)]
    for src, first, last in zip(start[2].sources, start[3], stop[3]):
        parts.append(src.pack(first))
        parts.append(src.pack(last))
    parts.append(_texts(cell_id, source[:MAX_TEXT_BYTES], error))
    parts.append(_attached_text(attached))
    payload = b"".join(parts)
    return FRAME.pack(EDGES_MAGIC, len(payload)) + payload + CRC.pack(zlib.crc32(payload))


def header_sources(layout) -> dict:
    """Return what the header says of a layout's sources, for reading its edges entries back."""
    return {"sources": [source.journal_kind() for source in layout.sources], "polled": layout.polled}


@functools.lru_cache(maxsize=8)
def _numbers_struct(count: int) -> struct.Struct:
    return struct.Struct(f"{FIXED.format}B{count}d")


def read(path: str) -> tuple[dict | None, list[Entry]]:
    """Return (the header, every whole entry) of a journal file; a torn tail is left out."""
    with open(path, "rb") as f:
        data = f.read()
    header, entries, offset = None, [], 0
    while offset + FRAME.size <= len(data):
        magic, length = FRAME.unpack_from(data, offset)
        end = offset + FRAME.size + length + CRC.size
        if magic not in (HEADER_MAGIC, ENTRY_MAGIC, EDGES_MAGIC) or end > len(data):
            break
        payload = data[offset + FRAME.size : end - CRC.size]
        if CRC.unpack_from(data, end - CRC.size)[0] != zlib.crc32(payload):
            break
        try:
            if magic == HEADER_MAGIC:
                header = json.loads(payload)
            elif header is not None and magic == ENTRY_MAGIC:
                entries.append(_entry(payload, tuple(header["components"])))
            elif header is not None:
                entries.append(_edges_entry(payload, header))
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
            break
        offset = end
    return header, entries


def component_info(header: dict) -> ComponentInfo:
    return ComponentInfo(
        tuple(header["components"]), tuple(header["period_s"]), tuple(header["power_error_w"]),
        tuple(header["estimated"]), tuple(float(c) for c in header["caps_w"]),
    )


def measurement_of(entry: Entry, header: dict):
    """Return the Measurement of a journal entry, as the meter would have given it without sampler data."""
    return window_measurement(entry.start, entry.stop, component_info(header), entry.failed, entry.shared)


def dead_journals(directory: str, exclusive: bool = True) -> list[tuple[str, int]]:
    """Return (path, locked fd) of every journal file whose writer is gone.

    The fd holds the lock (exclusive, or shared for a reader that changes nothing) until closed.
    """
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError:  # its kernel is alive and holds it
            os.close(fd)
            continue
        found.append((path, fd))
    return found


def open_file(directory: str, session: str, number: int, header: bytes) -> tuple[int, str]:
    """Create, lock and head a new journal file (owner-only, in an owner-only directory); return (fd, path)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{session}-{number}{SUFFIX}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, header)
    except OSError:
        os.close(fd)
        os.unlink(path)
        raise
    return fd, path


def _frame(magic: bytes, payload: bytes) -> bytes:
    return FRAME.pack(magic, len(payload)) + payload + CRC.pack(zlib.crc32(payload))


def _mask(indices) -> int:
    mask = 0
    for i in indices:
        if i < 64:
            mask |= 1 << i
    return mask


def _unmask(mask: int) -> frozenset:
    return frozenset(i for i in range(64) if mask >> i & 1)


def _attached_text(attached) -> bytes:
    if not attached:
        return NO_TEXT
    data = json.dumps(attached).encode()
    if len(data) > MAX_ATTACHED_BYTES:  # kept whole or not at all: a cut JSON reads as nothing
        return NO_TEXT
    return len(data).to_bytes(2, "little") + data


def _texts(*texts) -> bytes:
    out = []
    for text in texts:
        if text is None:
            out.append(NO_TEXT)
            continue
        data = text.encode("utf-8", "replace")[:MAX_TEXT_BYTES]
        out.append(len(data).to_bytes(2, "little"))
        out.append(data)
    return b"".join(out)


def _edges_entry(payload: bytes, header: dict) -> Entry:
    seq, count, success, failed, shared, t0, t1, u0, u1, wall_offset = EDGES.unpack_from(payload)
    offset, first, last = EDGES.size, [], []
    for kind in header["sources"]:
        for values in (first, last):
            if kind["kind"] == "rapl":
                capture, offset = rapl.unpack(payload, offset, kind["n"])
                values += rapl.counter_values(capture, t1 if values is first else u1, kind["ranges"], kind["rates"])
            else:
                numbers = struct.unpack_from(f"<{kind['n']}d", payload, offset)
                offset += 8 * kind["n"]
                values += numbers
    cell_id, source, error, attached = _read_texts(payload, offset)
    components = tuple(header["components"])[: len(first)]
    start = Reading((t0 + t1) / 2, (t0 + t1) / 2 + wall_offset, first, 0, components, t1 - t0)
    stop = Reading((u0 + u1) / 2, (u0 + u1) / 2 + wall_offset, last, 0, components, u1 - u0)
    return Entry(seq, None if count < 0 else count, bool(success), start, stop, _unmask(failed), _unmask(shared),
                 cell_id, first_line(source or ""), error, _attached(attached))


def _attached(text: str | None) -> dict | None:
    value = json.loads(text) if text else None
    return value if isinstance(value, dict) else None


def _read_texts(payload: bytes, offset: int) -> list:
    """Return the cell id, code, error name and attached JSON (None where absent: older entries have three)."""
    texts = []
    for _ in range(4):
        if offset == len(payload):
            texts.append(None)
            continue
        (length,) = struct.unpack_from("<H", payload, offset)
        offset += 2
        if length == 0xFFFF:
            texts.append(None)
            continue
        texts.append(payload[offset : offset + length].decode("utf-8", "replace"))
        offset += length
    return texts


def first_line(source: str, limit: int = 80) -> str:
    """Return the first non-blank line, shortened; scans only as far as that line (cells can be huge)."""
    start = 0
    while source and start < len(source):
        end = source.find("\n", start)
        if end < 0:
            end = len(source)
        line = source[start:end].rstrip()
        if line.strip():
            return line if len(line) <= limit else line[: limit - 1] + "…"
        start = end + 1
    return ""


def _entry(payload: bytes, components: tuple[str, ...]) -> Entry:
    seq, count, success, n, failed, shared, t0, wall0, spread0, t1, wall1, spread1 = FIXED.unpack_from(payload)
    offset = FIXED.size
    polled = payload[offset]
    k = n * (4 if polled else 2)
    numbers = list(struct.unpack_from(f"<{k}d", payload, offset + 1))
    offset += 1 + 8 * k
    texts = _read_texts(payload, offset)
    variation = (numbers[2 * n : 3 * n], numbers[3 * n : 4 * n]) if polled else (None, None)
    start = Reading(t0, wall0, numbers[:n], 0, components[:n], spread0, variation[0])
    stop = Reading(t1, wall1, numbers[n : 2 * n], 0, components[:n], spread1, variation[1])
    return Entry(seq, None if count < 0 else count, bool(success), start, stop, _unmask(failed), _unmask(shared),
                 texts[0], texts[1] or "", texts[2], _attached(texts[3]))


class JournalWriter:
    """One kernel session's journal files: the cell path appends, the sampler rotates and deletes.

    ``append`` (the cell's thread) makes one ``os.write``. When the sampler has a fresh file
    ready (``rotate``), the next append moves to it and leaves the old one in ``retired``;
    the sampler deletes a retired file once every row it holds is in the database. Each side
    only hands over through a single attribute, so neither ever waits for the other.
    A file that cannot be created or written gives one notice and the journal stops; cells
    still reach the database through the sampler.
    """

    def __init__(self, directory: str, session: str, header):
        _writers.add(self)
        self.directory, self.session = directory, session
        self._header = header  # a callable returning the header dict, called once
        self._header_bytes = None
        self._fd = self._path = None
        self._number = 0
        self._entries = 0  # entries in the active file
        self._next = None  # (fd, path) made ready by the sampler
        self.retired: list[tuple[int, str]] = []
        self.failed = None

    def append(self, data: bytes) -> bool:
        """Write one entry (the cell path); return False once the journal has failed."""
        if self.failed is not None:
            return False
        try:
            ready = self._next
            if ready is not None:
                if self._fd is not None:
                    self.retired.append((self._fd, self._path))
                (self._fd, self._path), self._next, self._entries = ready, None, 0
            elif self._fd is None:
                self._fd, self._path = self._new_file()
            if os.write(self._fd, data) != len(data):
                raise OSError(f"short write to {self._path} (disk full?)")
            self._entries += 1
            return True
        except OSError as error:
            self._fail(error)
            return False

    def rotate(self) -> None:
        """Make a fresh file ready for the next append, unless the active one is still empty (sampler).

        The first file is made here too, so that the first cell does not pay for it."""
        if self.failed is None and self._next is None and (self._entries or self._fd is None):
            try:
                self._next = self._new_file()
            except OSError as error:
                self._fail(error)

    def delete(self, files) -> None:
        """Delete retired files whose rows are all in the database (sampler)."""
        for entry in files:
            fd, path = entry
            remove_file(path)
            os.close(fd)
            self.retired.remove(entry)

    def close(self, delete: bool) -> None:
        """Close every file; delete them too when all their rows are in the database."""
        files = list(self.retired) + [f for f in ((self._fd, self._path), self._next) if f and f[0] is not None]
        self.retired, self._fd, self._path, self._next = [], None, None, None
        for fd, path in files:
            if delete:
                remove_file(path)
            os.close(fd)  # releases the lock: a file left behind is recovered by the next kernel

    def _forget(self) -> None:
        """In a forked child: close our copies of the files and write nothing more. The parent's lock
        stays (it is the open file's, which the parent still has), but no longer outlives the parent."""
        self.failed = "in a forked child"
        for fd in [f[0] for f in self.retired] + [f[0] for f in ((self._fd, self._path), self._next) if f]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.retired, self._fd, self._next = [], None, None

    def header(self) -> bytes:
        """Return the files' header, worked out the first time."""
        if self._header_bytes is None:
            self._header_bytes = header_bytes(self._header())
        return self._header_bytes

    def _new_file(self) -> tuple[int, str]:
        self._number += 1
        return open_file(self.directory, self.session, self._number, self.header())

    def _fail(self, error: Exception) -> None:
        self.failed = str(error)
        notice(
            "journal",
            f"cell journal in {self.directory} cannot be written ({error}); cells still go to the history "
            "database, but one finished just before the kernel is killed may be lost",
        )


_writers: "weakref.WeakSet[JournalWriter]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


def recover(directory: str, store, finish) -> int:
    """Turn the journals of kernels that are gone into database rows; return how many were added.

    ``finish(measurement)`` adds the carbon figures (worked out now, with today's settings).
    Entries already in the database (its ``entry`` column, per session) are not added twice.
    A file is deleted once its rows are in.
    """
    added = 0
    for path, fd in dead_journals(directory):
        try:
            header, entries = read(path)
            if header is not None:
                session = header["session"]
                present = store.entries(session)
                cells = [
                    StoredCell(e.record(header, finish, previous), session, header.get("kernel_id"),
                               header.get("hardware"), entry=e.seq)
                    for previous, e in zip([None] + entries, entries) if e.seq not in present
                ]
                store.add_all(cells)
                added += len(cells)
            remove_file(path)
        finally:
            os.close(fd)
    return added
