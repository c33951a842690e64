"""The cell path's C module and its Python twin: the same counters' texts, the same entry bytes."""

import errno
import mmap
import os
import time
import zlib

import pytest

from greenjupyter import fastpath, journal

IMPLEMENTATIONS = {"python": (fastpath.python_read_counters, fastpath.python_append, fastpath.python_store)}
if fastpath.BUILT:
    from greenjupyter import _cellpath

    IMPLEMENTATIONS["c"] = (_cellpath.read_counters, _cellpath.append, _cellpath.store)

PARTS = [
    (),
    (b"",),
    (b"\x00\x01head", "cell-id", "x = 1\ny = 2", None, b"tail"),
    ("é" * 700,),  # 1,400 bytes: cut to 1,024 bytes, mid-character
    ("a" * 5000, "b" * 1023 + "é"),  # characters first, then bytes
    ("\ud800 lone surrogate",),  # replaced, not an error
    ("", None, None),
    (b"x" * 9000,),  # larger than the C module's stack buffer
]


def test_the_c_module_is_built_where_a_compiler_is_found():
    # The README's commands install with gcc present (every machine of this kind has it).
    assert fastpath.BUILT, "greenjupyter/_cellpath.c was not built: see hatch_build.py's message in the install log"
    assert fastpath.read_counters is _cellpath.read_counters and journal._store is _cellpath.store


@pytest.fixture()
def counters(tmp_path):
    """Open counter files as sysfs gives them, and some that read as no counter can."""
    texts = [b"262143328850\n", b"0\n", b"", b"9" * 40]  # the last one longer than any counter: cut at 32
    fds = []
    for i, text in enumerate(texts):
        (tmp_path / f"c{i}").write_bytes(text)
        fds.append(os.open(tmp_path / f"c{i}", os.O_RDONLY))
    fds.append(os.open(tmp_path, os.O_RDONLY))  # a read fails (EISDIR), as a vanished zone's does (ENODEV)
    yield tuple(fds)
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_counters_are_read_as_the_journal_keeps_them(name, counters):
    read_counters = IMPLEMENTATIONS[name][0]
    now = time.perf_counter()
    before, after, texts = read_counters(counters)
    assert now <= before <= after <= time.perf_counter()  # time.perf_counter's clock
    joined = b"262143328850\n\x000\n\x00\x00" + b"9" * 32 + b"\x00"
    assert texts == len(joined).to_bytes(2, "little") + joined
    assert read_counters(())[2] == b"\x00\x00"


def test_counters_bad_descriptors_are_refused_with_the_value_named():
    if "c" not in IMPLEMENTATIONS:
        pytest.skip("the C module is not built here")
    with pytest.raises(ValueError, match="not -1"):
        _cellpath.read_counters((-1,))
    with pytest.raises(TypeError, match="tuple"):
        _cellpath.read_counters([0])
    with pytest.raises(ValueError, match="at most 64"):
        _cellpath.read_counters((0,) * 65)


def frame_of(parts) -> bytes:
    """The entry the journal's reader expects, built here from the format itself."""
    payload = b""
    for part in parts:
        if part is None:
            payload += b"\xff\xff"
        elif isinstance(part, str):
            data = part[:1024].encode("utf-8", "replace")[:1024]
            payload += len(data).to_bytes(2, "little") + data
        else:
            payload += part
    return b"GJc2" + len(payload).to_bytes(4, "little") + payload + zlib.crc32(payload).to_bytes(4, "little")


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("parts", PARTS, ids=range(len(PARTS)))
def test_an_entry_is_written_and_stored_as_framed(name, parts, tmp_path):
    _, append, store = IMPLEMENTATIONS[name]
    expected = frame_of(parts)
    assert fastpath.frame(b"GJc2", parts) == expected
    fd = os.open(tmp_path / "j", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    append(fd, b"GJc2", parts)
    append(fd, b"GJc2", parts)
    os.close(fd)
    assert (tmp_path / "j").read_bytes() == expected * 2
    buffer = bytearray(b"\xaa" * (len(expected) + 10))
    assert store(buffer, 3, b"GJc2", parts) == 3 + len(expected)
    assert buffer == b"\xaa" * 3 + expected + b"\xaa" * 7
    assert store(buffer, 11, b"GJc2", parts) == -1  # does not fit: nothing is copied
    assert buffer == b"\xaa" * 3 + expected + b"\xaa" * 7
    exact = bytearray(len(expected))
    assert store(exact, 0, b"GJc2", parts) == len(expected) and exact == expected


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_an_entry_goes_into_a_shared_mapping_of_a_file(name, tmp_path):
    store = IMPLEMENTATIONS[name][2]
    fd = os.open(tmp_path / "m", os.O_RDWR | os.O_CREAT)
    os.posix_fallocate(fd, 0, 4096)
    mapping = mmap.mmap(fd, 4096)
    end = store(mapping, 0, b"GJc2", PARTS[2])
    mapping.close()
    os.close(fd)
    data = (tmp_path / "m").read_bytes()
    assert data[:end] == frame_of(PARTS[2]) and data[end:] == bytes(4096 - end)


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_bad_parts_and_failed_writes_raise(name, tmp_path):
    _, append, store = IMPLEMENTATIONS[name]
    with pytest.raises(TypeError):
        append(1, b"GJc2", (b"ok", 5))
    with pytest.raises(TypeError):
        store(bytearray(100), 0, b"GJc2", (3.5,))
    read_only = os.open(tmp_path, os.O_RDONLY)
    with pytest.raises(OSError) as raised:
        append(read_only, b"GJc2", (b"x",))
    assert raised.value.errno in (errno.EBADF, errno.EISDIR)
    os.close(read_only)
    if name == "c":
        with pytest.raises(ValueError, match="4-byte magic"):
            append(1, b"GJc", ())
        with pytest.raises(ValueError, match="at most 32 parts"):
            store(bytearray(100), 0, b"GJc2", (b"",) * 33)
        with pytest.raises(TypeError):
            store(b"read-only bytes", 0, b"GJc2", ())


def test_carbon_sources_says_which_cell_path_is_in_use(monkeypatch):
    from greenjupyter import format as fmt
    from greenjupyter.sources import Detection

    detection = Detection()
    monkeypatch.setattr(fastpath, "BUILT", True)
    assert "by the C module (greenjupyter/_cellpath.c)" in fmt.sources_text(detection)
    monkeypatch.setattr(fastpath, "BUILT", False)
    assert "the C module was not built (no C compiler" in fmt.sources_text(detection)
