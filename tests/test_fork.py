"""os.fork() in a cell: the child measures with its own meter and never writes the parent's history."""

import json
import os
import select
import signal
import sqlite3
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell

import greenjupyter
from greenjupyter import runtime
from greenjupyter.ipython import extension

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_WAIT_S = 10.0  # a child that deadlocked on an inherited lock would never answer
SLEEP_S = 0.05

# The child measures a block, says what it got through the pipe, then lets the cell end, so
# that the extension's post_run_cell hook runs in the child too; the test then ends the child.
FORKING_CELL = f"""
import json, os, time, greenjupyter
child = os.fork()
if child == 0:
    try:
        with greenjupyter.measure() as block:
            sum(range(100_000))
            time.sleep({SLEEP_S})
        report = {{"energy_j": block.energy_j, "duration_s": block.duration_s,
                   "components": sorted(block.components), "cells": len(greenjupyter.cells())}}
    except BaseException as error:
        report = {{"error": repr(error)}}
    os.write(pipe, json.dumps(report).encode())
    os.close(pipe)
"""


def history_counts(path):
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT execution_count FROM cells ORDER BY id")]
    finally:
        db.close()


def wait_for(child, reader):
    """Return (what the child wrote, seconds until it exited, its exit code); kill it past CHILD_WAIT_S."""
    started, data = time.monotonic(), b""
    deadline = started + CHILD_WAIT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([reader], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(reader, 65536) if ready else b""
        if not chunk:
            break
        data += chunk
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return data.decode(), time.monotonic() - started, os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    pytest.fail(f"child {child} still running after {CHILD_WAIT_S:g} s (report so far: {data!r})")


def test_thirty_forks_while_the_sampler_runs_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("GREENJUPYTER_SAMPLE_INTERVAL_S", "0.01")
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter", store_history=True)
    parent = os.getpid()
    try:
        recorder = extension.current_recorder()
        assert recorder.store is not None and recorder.meter.sampler.interval_s == 0.01
        counts, slowest = [], 0.0
        for _ in range(30):
            reader, writer = os.pipe()
            shell.user_ns["pipe"] = writer
            try:
                result = shell.run_cell(FORKING_CELL, store_history=True)
            finally:
                if os.getpid() != parent:
                    os._exit(0)  # the child has run its whole cell, hooks included: it ends here
            os.close(writer)
            try:
                text, waited, code = wait_for(shell.user_ns["child"], reader)
            finally:
                os.close(reader)
            report = json.loads(text or "{}")
            assert result.success and code == 0
            counts.append(result.execution_count)
            slowest = max(slowest, waited)
            assert "error" not in report, report
            assert report["energy_j"] > 0 and "cpu:process" in report["components"]
            # The block sleeps 50 ms and sums 100,000 numbers (a few ms); a busy 2-core machine
            # may add scheduling delay, never remove any: 1 s is far above any such delay.
            assert SLEEP_S <= report["duration_s"] < 1.0, report
            assert report["cells"] == len(counts) - 1  # the child keeps its parent's records, adds none
        print(f"slowest of 30 children: {slowest:.3f} s from the cell's end to its exit")
        assert history_counts(recorder.store.path) == counts  # each parent cell once, no child's row
        assert [r.execution_count for r in greenjupyter.cells()] == counts
        assert runtime._inherited == []  # the parent's own state was never swapped
    finally:
        shell.run_line_magic("unload_ext", "greenjupyter")
        for name in ("pipe", "child", "block", "report"):
            shell.user_ns.pop(name, None)


def test_a_forked_child_has_its_own_meter_and_no_store(tmp_path):
    parent_meter = runtime.get_meter()
    assert runtime.get_store() is not None
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which reports through the pipe
        try:
            with greenjupyter.measure() as block:
                time.sleep(0.01)
            fresh = runtime.get_meter()
            report = {
                "fresh_meter": fresh is not parent_meter and runtime._inherited[0][0] is parent_meter,
                "sampler_alive": fresh.sampler._thread is not None and fresh.sampler._thread.is_alive(),
                "fresh_store": runtime._store is False,
                "duration_s": block.duration_s,
            }
        except BaseException as error:
            report = {"error": repr(error)}
        os.write(writer, json.dumps(report).encode())
        os._exit(0)
    os.close(writer)
    try:
        text, _, code = wait_for(child, reader)
    finally:
        os.close(reader)
    report = json.loads(text or "{}")
    assert code == 0 and report == {
        "fresh_meter": True, "sampler_alive": True, "fresh_store": True, "duration_s": report["duration_s"]
    }, report
    assert runtime.get_meter() is parent_meter  # the parent goes on with its own


def test_a_window_open_across_a_fork_closes_in_the_child_without_a_figure(tmp_path, capfd):
    """A %%carbon cell and a with block both open when the cell forks: the child runs through both."""
    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext greenjupyter", store_history=True)
    parent = os.getpid()
    reader, writer = os.pipe()
    shell.user_ns["pipe"] = writer
    source = (
        "%%carbon -q -o outer\n"
        "import os, greenjupyter\n"
        "with greenjupyter.measure() as block:\n"
        "    child = os.fork()\n"
        "if child == 0:\n"
        "    os.write(pipe, repr(block.result).encode())\n"
    )
    try:
        try:
            result = shell.run_cell(source, store_history=True)
        finally:
            if os.getpid() != parent:
                os._exit(0)
        os.close(writer)
        try:
            report, _, code = wait_for(shell.user_ns["child"], reader)
        finally:
            os.close(reader)
        assert code == 0 and report == "None"  # the child got through both windows, with no figure
        assert result.success and shell.user_ns["block"].result is not None
        assert greenjupyter.cells()[-1].measurement is shell.user_ns["outer"]
        counts = history_counts(extension.current_recorder().store.path)
        assert counts == [result.execution_count]
        assert "opened before os.fork() has no result in the child" in capfd.readouterr().err
    finally:
        shell.run_line_magic("unload_ext", "greenjupyter")
        for name in ("pipe", "child", "block", "outer"):
            shell.user_ns.pop(name, None)

