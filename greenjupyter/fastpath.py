"""The cell path's own work: read the counters of an edge; frame a journal entry and store it.

``_cellpath`` (a small C module, built with the wheel where a C compiler is found) does it without
releasing the GIL: in a kernel, the first release after IPython's own work costs several
microseconds more than the read it wraps (bench/cell_path_parts.py). Where it was not built, the
same functions in Python give the same results; ``BUILT`` says which are in use.
"""

from __future__ import annotations

import os
import struct
import time
import zlib

FRAME = struct.Struct("<4sI")  # magic, payload length; the payload is followed by its CRC-32
CRC = struct.Struct("<I")
COUNTER_BYTES = 32  # an energy_uj text is at most 20 digits and a newline
MAX_TEXT = 1024  # a text part keeps at most this many characters, then bytes
NO_TEXT = b"\xff\xff"


def read_counters(fds: tuple[int, ...]) -> tuple[float, float, bytes]:
    """Return (perf_counter before the reads, after them, the texts): the texts are each counter's text
    joined by NUL bytes (empty for a counter that could not be read), after their 2-byte length, as the
    journal keeps them."""
    before = time.perf_counter()
    try:
        texts = [os.pread(fd, COUNTER_BYTES, 0) for fd in fds]
    except OSError:  # a zone that vanished: read the others
        texts = [_read_or_empty(fd) for fd in fds]
    after = time.perf_counter()
    joined = b"\0".join(texts)
    return before, after, len(joined).to_bytes(2, "little") + joined


def frame(magic: bytes, parts) -> bytes:
    """Return one framed entry: the 4-byte magic, the payload's length, the payload and its CRC-32,
    so that a torn last write is told from a whole one. The payload is the ``parts`` in turn: bytes
    as they are, a str as ``text(part)``, None as NO_TEXT."""
    payload = b"".join(part if type(part) is bytes else text(part) for part in parts)
    return FRAME.pack(magic, len(payload)) + payload + CRC.pack(zlib.crc32(payload))


def text(value: str | None) -> bytes:
    """Return ``value`` as a journal keeps a text: a 2-byte length, then its UTF-8 (of at most MAX_TEXT
    characters, cut to MAX_TEXT bytes); None as NO_TEXT."""
    if value is None:
        return NO_TEXT
    data = value[:MAX_TEXT].encode("utf-8", "replace")[:MAX_TEXT]
    return len(data).to_bytes(2, "little") + data


def append(fd: int, magic: bytes, parts: tuple[bytes, ...]) -> None:
    """Write ``frame(magic, parts)`` with one ``os.write``; raise OSError unless it was written whole."""
    entry = frame(magic, parts)
    written = os.write(fd, entry)
    if written != len(entry):
        raise OSError(f"short write: {written} of {len(entry)} bytes (disk full?)")


def store(buffer, offset: int, magic: bytes, parts: tuple) -> int:
    """Copy ``frame(magic, parts)`` into the writable ``buffer`` (a shared mapping of a journal file) at
    ``offset``; return the offset after it, or -1 (copying nothing) when it does not fit."""
    entry = frame(magic, parts)
    end = offset + len(entry)
    if end > len(buffer):
        return -1
    buffer[offset:end] = entry
    return end


def _read_or_empty(fd: int) -> bytes:
    try:
        return os.pread(fd, COUNTER_BYTES, 0)
    except OSError:
        return b""


python_read_counters, python_append, python_store = read_counters, append, store
try:
    from ._cellpath import append, read_counters, store  # noqa: F811 (the same, without releasing the GIL)

    BUILT = True
except ImportError:
    BUILT = False
