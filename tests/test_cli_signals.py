"""A real SIGTERM to a running `main.py` batch: records written whole, exit status 130.

The measurement cache is seeded with made-up baseline and tier figures (keyed
exactly as the grader keys them), so the batch starts at once instead of spending two
minutes on the real baseline.  Nothing here depends on those figures being true."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time

from conftest import REFERENCE, ROOT, SLOW_PIPELINE, VECTORIZED

from problems.ml_training.timing.cache import BaselineCache, CachedMeasurement


def _seed_cache(directory):
    cache = BaselineCache(directory)
    for path, label, seconds in ((SLOW_PIPELINE, "baseline", 100.0),
                                 (VECTORIZED, "tier-vectorized", 3.0)):
        key = cache.key(path, threads=1, label=label, anchor=REFERENCE)
        cache.store(CachedMeasurement(times=[seconds] * 3, accuracy=0.1, key=key,
                                      units=[seconds] * 3, anchor_times=[1.0] * 4))


def _wait_for(proc, text, limit=120.0):
    """Read the child's stderr until ``text`` shows up; return what was read."""
    seen = ""
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + limit
    while text not in seen:
        assert time.monotonic() < deadline, f"never saw {text!r}:\n{seen}"
        assert proc.poll() is None, f"exited early ({proc.returncode}):\n{seen}"
        if selector.select(timeout=1):
            seen += os.read(proc.stderr.fileno(), 65536).decode()
    return seen


def test_sigterm_mid_batch_writes_complete_records(tmp_path):
    _seed_cache(tmp_path / "cache")
    out = tmp_path / "batch"
    env = dict(os.environ, HELLO_PY_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--agent", "scripted", "--runs", "2", "--sequential",
         "--output", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        _wait_for(proc, "run 1: step 3/")  # run 1 is profiling its file
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1].decode()
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    results = json.loads((out / "results.json").read_text())  # complete JSON
    assert results["interrupted"] is True
    assert results["runs"] == []  # no run had finished
    summary = (out / "run_summary.md").read_text()
    assert "**Interrupted**" in summary and summary.endswith("\n")
    assert not list(out.rglob("*.tmp"))  # nothing half-written left behind


def test_sigterm_mid_concurrent_batch_leaves_no_cgroup_and_no_traceback(tmp_path):
    # Both runs are profiling (a sandboxed child each) when the signal comes: their
    # sandboxes go, and with them every cgroup named after the batch's pid; asyncio
    # reports nothing "never retrieved" on the console.
    import sandbox

    _seed_cache(tmp_path / "cache")
    out = tmp_path / "batch"
    env = dict(os.environ, HELLO_PY_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--agent", "scripted", "--runs", "2", "--concurrent",
         "--output", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        seen = _wait_for(proc, "run 2: step 3/")
        if "run 1: step 3/" not in seen:
            seen += _wait_for(proc, "run 1: step 3/")
        time.sleep(0.5)  # their profiles have started
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1].decode()
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert "never retrieved" not in rest and "Traceback" not in rest, rest
    assert [p for parent in sandbox._cgroup_parents()
            for p in parent.glob(f"{proc.pid}-*")] == []
