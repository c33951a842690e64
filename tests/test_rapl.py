"""RAPL through a fake powercap tree: discovery, units, wraparound, vanishing and closed counters."""

import ctypes
import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from greenjupyter.errors import SourceUnavailable
from greenjupyter.sources import detect_cpu_memory
from greenjupyter.sources.rapl import find_zones, open_rapl
from tests.fakes.powercap import SERVER, FakePowercap, FakeZone


def test_packages_and_dram_are_read_and_overlapping_zones_left_out(tmp_path):
    fake = FakePowercap(
        tmp_path,
        SERVER + [("intel-rapl:0:1", "core", 30.0), ("intel-rapl:2", "psys", 100.0)],
    )
    (tmp_path / "intel-rapl-mmio:0").mkdir()  # the MMIO twin of package-0
    zones, notes = find_zones(str(fake.root))
    assert [z.component for z in zones] == ["cpu:package-0", "dram:0", "cpu:package-1", "dram:1"]
    assert any("core" in n and "double counting" in n for n in notes)
    assert any("psys" in n and "double counting" in n for n in notes)


def test_counter_deltas_are_joules(tmp_path):
    fake = FakePowercap(tmp_path, [("intel-rapl:0", "package-0", 0, 262143328850, 1_000_000)])
    source = open_rapl(str(tmp_path))
    first = source.read()
    fake.write("intel-rapl:0", 1_000_000 + 2_500_000)  # 2.5 J later
    assert source.read()[0] - first[0] == pytest.approx(2.5, abs=1e-9)


def test_wraparound_uses_max_energy_range(tmp_path):
    fake = FakePowercap(tmp_path, [FakeZone("intel-rapl:0", "package-0", 0, max_range_uj=65_532_610_987, start_uj=65_532_000_000)])
    source = open_rapl(str(tmp_path))
    before = source.read()[0]
    fake.write("intel-rapl:0", 389_013)  # wrapped: 610,987 µJ to the top, then 389,013 µJ
    assert source.read()[0] - before == pytest.approx(1.0, abs=1e-9)
    fake.write("intel-rapl:0", 3_389_013)
    assert source.read()[0] - before == pytest.approx(4.0, abs=1e-9)


def test_missing_tree_and_empty_tree_say_why(tmp_path):
    with pytest.raises(SourceUnavailable, match="no powercap tree"):
        find_zones(str(tmp_path / "absent"))
    (tmp_path / "intel-rapl").mkdir()
    with pytest.raises(SourceUnavailable, match="no RAPL package or DRAM zones"):
        find_zones(str(tmp_path))


def test_powercap_root_that_is_a_file_says_so(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SourceUnavailable, match="cannot list .*/file: Not a directory"):
        find_zones(str(tmp_path / "file"))


def test_a_zone_with_a_garbled_counter_is_left_out_and_the_rest_read(tmp_path):
    fake = FakePowercap(tmp_path, SERVER)
    (fake.root / "intel-rapl:1:0" / "energy_uj").write_text("not a number\n")
    source = open_rapl(str(tmp_path))
    assert source.components == ("cpu:package-0", "dram:0", "cpu:package-1")
    assert any(n.startswith("intel-rapl:1:0: unreadable energy_uj") for n in source.notes)


def test_no_readable_zone_means_unavailable(tmp_path):
    fake = FakePowercap(tmp_path, SERVER[:1])
    (fake.root / "intel-rapl:0" / "energy_uj").unlink()
    with pytest.raises(SourceUnavailable, match="no RAPL zone could be read: intel-rapl:0: cannot open energy_uj"):
        open_rapl(str(tmp_path))


def test_zone_without_range_is_left_out(tmp_path):
    fake = FakePowercap(tmp_path, SERVER[:2])
    (fake.root / "intel-rapl:0:0" / "max_energy_range_uj").unlink()
    zones, notes = find_zones(str(fake.root))
    assert [z.component for z in zones] == ["cpu:package-0"]
    assert any("max_energy_range_uj" in n for n in notes)


def test_zone_that_vanishes_reads_nan_and_others_carry_on(tmp_path, monkeypatch):
    FakePowercap(tmp_path, SERVER)
    source = open_rapl(str(tmp_path))
    dead = source.fds[1]  # dram:0
    real_pread = os.pread

    def pread(fd, n, offset):
        if fd == dead:
            raise OSError(errno.ENODEV, "No such device")  # what sysfs answers once the device is gone
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    values = source.read()
    assert values[1] != values[1]
    assert all(v == v for i, v in enumerate(values) if i != 1)


def test_without_rapl_the_estimate_covers_cpu_and_memory(tmp_path):
    found = detect_cpu_memory(str(tmp_path / "absent"))
    assert [c for s in found.sources for c in s.components] == ["cpu:process", "dram:process"]
    assert found.unavailable[0].kind == "rapl"


def test_rapl_without_dram_keeps_the_memory_estimate(tmp_path):
    FakePowercap(tmp_path, [("intel-rapl:0", "package-0", 10.0)])
    found = detect_cpu_memory(str(tmp_path))
    assert [c for s in found.sources for c in s.components] == ["cpu:package-0", "dram:process"]


def _as_another_user(function):
    """Run ``function`` on a thread whose file-system identity is "nobody" (when we are root).

    Root reads any file, so a root test session checks real permission denial by changing
    only the thread's fsuid, as a normal user on a real machine would meet it.
    """
    if os.geteuid() != 0:
        return function()
    libc = ctypes.CDLL(None, use_errno=True)
    outcome = {}

    def run():
        libc.setfsgid(65534)
        libc.setfsuid(65534)
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed back to the test's thread
            outcome["error"] = error
        finally:
            libc.setfsuid(0)
            libc.setfsgid(0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_permission_denied_reports_the_fix_and_falls_back_to_estimates():
    """Linux 5.10+ makes energy_uj root-only (mode 0400, owned by root)."""
    root = Path(tempfile.mkdtemp(prefix="powercap-"))
    try:
        os.chmod(root, 0o755)
        fake = FakePowercap(root, SERVER)
        for zone in fake.zones:
            os.chmod(root / zone.entry / "energy_uj", 0o400 if os.geteuid() == 0 else 0)
        found = _as_another_user(lambda: detect_cpu_memory(str(root)))
    finally:
        shutil.rmtree(root)
    assert [c for s in found.sources for c in s.components] == ["cpu:process", "dram:process"]
    (missing,) = found.unavailable
    assert missing.kind == "rapl" and "root only" in missing.reason
    assert missing.hint.startswith(f"sudo chmod a+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*:*/energy_uj")
