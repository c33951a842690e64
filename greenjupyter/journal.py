"""The cell journal: each finished cell's two edges, as read, copied into a file mapped in memory.

A cell's own path does nothing else durable. What it stores is in the page cache, which outlives
the process, so a kernel killed with SIGKILL right after a cell's reply loses no cell. The
sampler thread turns the entries into records and SQLite rows; once the rows are in, the
journal file is retired and deleted. A journal left by a dead kernel is recovered into rows
by the next kernel that opens the database (``recover``).

Files live in ``<database>.pending/``, owner-only, one or more per kernel session, each
locked (``flock``) by its writer while it lives: a file that can be locked belongs to a
process that is gone. Each file starts with a header (JSON: the session, the components,
what their figures need) and holds entries framed as magic, length, payload, CRC-32, so a
torn last entry is told from a whole one; after the last entry a mapped file holds zeros.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import struct
import weakref
import zlib
from dataclasses import dataclass

from . import fastpath
from .measurement import CellRecord
from .meter import ComponentInfo, Reading, window_measurement
from .notices import notice
from .sources import rapl
from .store import StoredCell, make_folders, remove_file

try:
    import fcntl
except ImportError:  # Windows: no journal; cells reach the database on the sampler's tick
    fcntl = None
SUPPORTED = fcntl is not None

HEADER_MAGIC, ENTRY_MAGIC, EDGES_MAGIC = b"GJh1", b"GJc1", b"GJc2"
NO_TEXT = fastpath.NO_TEXT
FRAME, CRC = fastpath.FRAME, fastpath.CRC
# An entry of readings (GJc1): seq, execution count (-1: none), success, components, failed mask,
# shared mask, then for each edge: perf_counter time, wall time, reads' spread; then the values.
FIXED = struct.Struct("<QqBHQQdddddd")
# An entry of edges as captured (GJc2; the cell path's): seq, execution count, success, failed mask,
# shared mask, each edge's perf_counter times before and after its reads, the wall clock's offset
# from perf_counter; then each source's two packed captures, in the header's order of sources.
EDGES = struct.Struct("<QqBQQddddd")
SUFFIX = ".cells"
MAX_ATTACHED_BYTES = 16384  # metrics logged in a cell, as JSON
ATTACHED = ("metrics", "units", "unit_name", "tag")  # the CellRecord fields an entry may carry
# A mapped journal file's size: about 1,400 entries of short cells, more than back-to-back empty cells
# fill between two sampler ticks (the sampler moves the writer to a fresh file every tick).
MAPPED_BYTES = 512 * 1024


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
    return fastpath.frame(HEADER_MAGIC, (json.dumps(header).encode(),))


def entry_parts(seq: int, execution_count, success: bool, start: Reading, stop: Reading, failed, shared,
                cell_id, preview: str, error, attached=None) -> tuple[bytes, ...]:
    """Return the payload of an entry of two Readings (GJc1), in parts (see fastpath.frame)."""
    n = len(start.values)
    polled = start.variation is not None and stop.variation is not None
    numbers = start.values + stop.values[:n]
    if polled:
        numbers = numbers + start.variation + stop.variation[:n]
    payload = _numbers_struct(len(numbers)).pack(
        seq, -1 if execution_count is None else execution_count, success, n, _mask(failed) if failed else 0,
        _mask(shared) if shared else 0, start.t, start.wall, start.spread_s, stop.t, stop.wall, stop.spread_s,
        polled, *numbers,
    )
    return payload, cell_id, preview, error, _attached_text(attached)


def edges_parts(seq: int, execution_count, success: bool, start: tuple, stop: tuple, failed, shared,
                cell_id, source: str, error, wall_offset: float, attached=None) -> tuple[bytes, ...]:
    """Return the payload, in parts (see fastpath.frame), of an entry (GJc2) of two edges from
    ``Meter.edge()`` as captured (the cell path's only durable write, kept lean: no joules are worked out
    here). ``source`` is the cell's code; its first line is found when the entry is read. The edges'
    layout must be the one the header describes. ``attached``: what the user attached to the cell (a dict
    of ATTACHED fields), or None."""
    head = EDGES.pack(seq, -1 if execution_count is None else execution_count, success,
                      _mask(failed) if failed else 0, _mask(shared) if shared else 0,
                      start[0], start[1], stop[0], stop[1], wall_offset)
    attached = _attached_text(attached) if attached else None
    layout = start[2]
    if layout.counters is not None:  # the usual case: one RAPL source, whose capture is (state, texts)
        ((first, first_texts),), ((last, last_texts),) = start[3], stop[3]
        return head, first[3], first_texts, last[3], last_texts, cell_id, source, error, attached
    parts = [head]
    for src, first, last in zip(layout.sources, start[3], stop[3]):
        parts.append(src.pack(first))
        parts.append(src.pack(last))
    return (*parts, cell_id, source, error, attached)


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
    make_folders(directory)
    path = os.path.join(directory, f"{session}-{number}{SUFFIX}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)  # read: to map it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, header)
    except OSError:
        os.close(fd)
        os.unlink(path)
        raise
    return fd, path


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


class _File:
    """One journal file of a writer: its descriptor (which holds its lock), its path, and, where the file
    could be mapped, the shared mapping entries are stored in and the offset of the next one."""

    __slots__ = ("fd", "path", "map", "end")

    def __init__(self, fd: int, path: str, mapping, end: int):
        self.fd, self.path, self.map, self.end = fd, path, mapping, end

    def put(self, magic: bytes, parts: tuple) -> bool:
        """Store one framed entry; return False (storing nothing) when a mapped file has no room for it."""
        if self.map is None:
            _append(self.fd, magic, parts)
            return True
        end = _store(self.map, self.end, magic, parts)
        if end < 0:
            return False
        self.end = end
        return True

    def close(self, delete: bool) -> None:
        if self.map is not None:
            self.map.close()
        if delete:
            remove_file(self.path)
        os.close(self.fd)  # releases the lock: a file left behind is recovered by the next kernel


class JournalWriter:
    """One kernel session's journal files: the cell path appends, the sampler rotates and deletes.

    Each file is made by the sampler, ahead of the cells that use it: MAPPED_BYTES are allocated on
    disk and mapped shared, and every page is touched once, so that ``append`` (the cell's thread)
    only copies the entry into memory (``fastpath.store``): no system call, no page fault. Memory
    shared with a file is the page cache, which outlives a SIGKILL. Where a file cannot be allocated
    or mapped, entries are written to it instead, with one write each (``fastpath.append``).
    When the sampler has a fresh file ready (``rotate``), the next append moves to it and leaves the
    old one in ``retired``, as does a file that is full; the sampler deletes a retired file once every
    row it holds is in the database. Each side only hands over through a single attribute, so neither
    ever waits for the other. A file that cannot be created or written gives one notice and the
    journal stops; cells still reach the database through the sampler.
    """

    def __init__(self, directory: str, session: str, header):
        _writers.add(self)
        self.directory, self.session = directory, session
        self._header = header  # a callable returning the header dict, called once
        self._header_bytes = None
        self._file: _File | None = None
        self._number = 0
        self._entries = 0  # entries in the active file
        self._next: _File | None = None  # made ready by the sampler
        self.retired: list[_File] = []
        self.failed = None

    def append(self, magic: bytes, parts: tuple) -> bool:
        """Store one framed entry (the cell path); return False once the journal has failed."""
        if self.failed is not None:
            return False
        try:
            active = self._file
            if self._next is not None or active is None:
                active = self._switch()
            if not active.put(magic, parts) and not self._switch().put(magic, parts):  # full: the next file
                raise OSError(f"a journal entry larger than a journal file ({MAPPED_BYTES} bytes)")
            self._entries += 1
            return True
        except (OSError, ValueError) as error:
            self._fail(error)
            return False

    def _switch(self) -> _File:
        """Move to the file the sampler made ready, or to a new one made now."""
        ready, self._next = self._next, None
        if self._file is not None:
            self.retired.append(self._file)
        self._file, self._entries = ready if ready is not None else self._new_file(), 0
        return self._file

    def rotate(self) -> None:
        """Make a fresh file ready for the next append, unless the active one is still empty (sampler).

        The first file is made here too, so that the first cell does not pay for it."""
        if self.failed is None and self._next is None and (self._entries or self._file is None):
            try:
                self._next = self._new_file()
            except OSError as error:
                self._fail(error)

    def delete(self, files) -> None:
        """Delete retired files whose rows are all in the database (sampler)."""
        for file in files:
            file.close(delete=True)
            self.retired.remove(file)

    def close(self, delete: bool) -> None:
        """Close every file; delete them too when all their rows are in the database."""
        files = self.retired + [f for f in (self._file, self._next) if f is not None]
        self.retired, self._file, self._next = [], None, None
        for file in files:
            file.close(delete)

    def _forget(self) -> None:
        """In a forked child: close our copies of the files and write nothing more. The parent's lock
        stays (it is the open file's, which the parent still has), but no longer outlives the parent."""
        self.failed = "in a forked child"
        for file in self.retired + [f for f in (self._file, self._next) if f is not None]:
            try:
                file.close(delete=False)
            except (OSError, ValueError):
                pass
        self.retired, self._file, self._next = [], None, None

    def header(self) -> bytes:
        """Return the files' header, worked out the first time."""
        if self._header_bytes is None:
            self._header_bytes = header_bytes(self._header())
        return self._header_bytes

    def _new_file(self) -> _File:
        self._number += 1
        header = self.header()
        fd, path = open_file(self.directory, self.session, self._number, header)
        return _File(fd, path, _mapped(fd, len(header)), len(header))

    def _fail(self, error: Exception) -> None:
        self.failed = str(error)
        notice(
            "journal",
            f"cell journal in {self.directory} cannot be written ({error}); cells still go to the history "
            "database, but one finished just before the kernel is killed may be lost",
        )


def _mapped(fd: int, start: int):
    """Return a shared, writable mapping of MAPPED_BYTES of the journal file ``fd``, its disk space
    allocated and every page from ``start`` on touched; None where that cannot be done."""
    try:
        os.posix_fallocate(fd, 0, MAPPED_BYTES)  # never SIGBUS for want of space: it is taken now
        mapping = mmap.mmap(fd, MAPPED_BYTES)
    except (OSError, ValueError, AttributeError):  # no fallocate (macOS, some network file systems)
        os.ftruncate(fd, start)  # entries are written after the header, then
        return None
    for offset in range(start, MAPPED_BYTES, mmap.PAGESIZE):  # each page's first write faults here, not in a cell
        mapping[offset] = 0
    return mapping


_writers: "weakref.WeakSet[JournalWriter]" = weakref.WeakSet()
_append, _store = fastpath.append, fastpath.store


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
