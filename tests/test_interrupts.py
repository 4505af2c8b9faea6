"""Ctrl-C (SIGINT) and SIGTERM to a real `main.py`, wherever they land: during the
baseline, mid-batch and mid-`grade`.  Each ends with status 130, one truthful line and
no traceback; what finished is recorded, --save still happens, and the previous batch's
records survive an interrupt that has nothing to replace them with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SLOW_PIPELINE
from test_cli_signals import _seed_cache, _wait_for

import output_dir


def _start(argv: list[str], tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, HELLO_PY_CACHE_DIR=str(tmp_path / "cache"),
               HELLO_PY_SAVED_OUTPUTS=str(tmp_path / "saved"))
    return subprocess.Popen([sys.executable, "main.py", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _interrupt(proc: subprocess.Popen, when: str, sig: int) -> tuple[int, str]:
    """Send ``sig`` once ``when`` shows on stderr; the exit status and all of stderr."""
    try:
        seen = _wait_for(proc, when)
        proc.send_signal(sig)
        rest = proc.communicate(timeout=90)[1].decode()
    finally:
        proc.kill()
    return proc.returncode, seen + rest


def _records(out: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(out)): None if p.is_dir() else p.read_bytes()
            for p in sorted(out.rglob("*")) if p.name != output_dir.LOCK}


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err and "never retrieved" not in err, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_during_the_baseline_keeps_the_previous_batch(tmp_path, sig):
    out = tmp_path / "out"
    previous = subprocess.run([sys.executable, "main.py", "--agent", "scripted", "--problem",
                               "math", "--runs", "2", "--output", str(out)], cwd=ROOT,
                              capture_output=True)
    assert previous.returncode == 0, previous.stderr.decode()
    before = _records(out)
    # An empty measurement cache: the baseline is measured, for minutes.
    proc = _start(["--agent", "scripted", "--runs", "1", "--output", str(out)], tmp_path)
    status, err = _interrupt(proc, "timed execution", sig)
    assert status == 130, err
    _no_traceback(err)
    assert "before the runs started" in err and "untouched" in err
    assert "summary" not in err.split("interrupted")[-1]  # no claim of a summary written
    assert _records(out) == before


def test_ctrl_c_mid_batch_records_the_finished_runs_and_still_saves(tmp_path):
    _seed_cache(tmp_path / "cache")
    out = tmp_path / "out"
    proc = _start(["--agent", "scripted", "--runs", "2", "--sequential", "--output",
                   str(out), "--save", "kept"], tmp_path)
    status, err = _interrupt(proc, "run 1: step 3/", signal.SIGINT)
    assert status == 130, err
    _no_traceback(err)
    assert "--resume" in err
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True
    saved = tmp_path / "saved" / "kept"
    assert json.loads((saved / "results.json").read_text()) == results
    assert "saved to" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_mid_grade_is_one_line_and_status_130(tmp_path, sig):
    _seed_cache(tmp_path / "cache")
    proc = _start(["grade", str(SLOW_PIPELINE)], tmp_path)
    status, err = _interrupt(proc, "timed execution", sig)
    assert status == 130, err
    _no_traceback(err)
    assert "interrupted" in err
