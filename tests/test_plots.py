"""The picture beside the summary (``plots``), the pair written by ``plots.write_summary``
and ``python -m summary results.json``, which redraws both from the records alone."""

from __future__ import annotations

import errno
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image
from test_summary import NO_ANSWER, realistic_results

import plots
import safe_files
import summary
from records import BatchResults, RunRecord

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """The width and height of a valid PNG, from its IHDR chunk (checked by PIL too)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")  # the first chunk of every PNG
    width, height = struct.unpack(">II", data[16:24])
    with Image.open(path) as image:
        image.verify()
    return width, height


def no_graded_runs() -> list[RunRecord]:
    return [RunRecord(1, "error", error_cause="api", steps=2),
            RunRecord(2, "error", error_cause="harness", steps=4),
            RunRecord(3, "fail", reason=NO_ANSWER, steps=15)]


@pytest.mark.parametrize("runs", [None, no_graded_runs(), []],
                         ids=["realistic", "none-graded", "no-runs"])
def test_the_plot_is_a_valid_png(tmp_path, runs):
    path = plots.write_plot(realistic_results(runs), tmp_path / "summary.png")
    assert path == tmp_path / "summary.png"
    width, height = png_size(path)
    assert (width, height) == (900, 800)  # plots.SIZE_INCHES at plots.DPI
    assert [p.name for p in tmp_path.iterdir()] == ["summary.png"]  # no temporary left


def test_the_same_records_draw_the_same_bytes():
    assert plots.render_png(realistic_results()) == plots.render_png(realistic_results())


def test_the_plot_replaces_a_link_rather_than_writing_through_it(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.png").symlink_to(outside)
    plots.write_plot(realistic_results(), tmp_path / "out" / "summary.png")
    assert outside.read_text() == "keep"
    assert png_size(tmp_path / "out" / "summary.png")[0] > 0


def test_write_summary_writes_the_picture_and_the_summary_that_links_it(tmp_path):
    results = realistic_results()
    assert plots.write_summary(tmp_path, results) == ["summary.png", "run_summary.md"]
    assert png_size(tmp_path / "summary.png")[0] > 0
    assert ((tmp_path / "run_summary.md").read_text()
            == summary.render_markdown(results, "summary.png"))


def test_a_picture_that_cannot_be_written_is_not_linked(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plots, "write_plot", full)
    results = realistic_results()
    assert plots.write_summary(tmp_path, results) == ["run_summary.md"]
    assert (tmp_path / "run_summary.md").read_text() == summary.render_markdown(results)
    assert not (tmp_path / "summary.png").exists()


def _results_file(directory: Path, results: BatchResults) -> Path:
    path = directory / "results.json"
    path.write_text(json.dumps(results.to_json(), indent=2, default=str) + "\n")
    return path


@pytest.mark.parametrize("runs", [None, no_graded_runs()], ids=["realistic", "none-graded"])
def test_python_m_summary_redraws_both_from_results_json(tmp_path, runs):
    results = realistic_results(runs)
    path = _results_file(tmp_path, results)
    plots.write_summary(tmp_path, results)
    (tmp_path / "summary.png").unlink()
    (tmp_path / "run_summary.md").unlink()
    done = subprocess.run([sys.executable, "-m", "summary", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote summary.png and run_summary.md in {tmp_path}\n"
    assert png_size(tmp_path / "summary.png")[0] > 0
    assert ((tmp_path / "run_summary.md").read_text()
            == summary.render_markdown(results, "summary.png"))


def test_python_m_summary_says_a_missing_file_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "summary", str(tmp_path / "results.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == (f"summary: cannot read {tmp_path / 'results.json'}: "
                           "No such file or directory\n")


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "Expecting property name enclosed in double quotes"),
    ("[1, 2]", "not the results of a batch (no list of runs)"),
    ('{"runs": {"1": {}}}', "not the results of a batch (no list of runs)"),
    ('{"runs": [7]}', "'int' object has no attribute 'items'"),
    # records.from_json does not check types: the figures meet the string
    ('{"runs": [{"run_id": 1, "status": "pass", "speedup": "fast"}]}', "not supported"),
    ("\udcff", "codec can't decode"),
], ids=["not-json", "a-list", "runs-not-a-list", "run-not-an-object", "speedup-a-string",
        "not-utf8"])
def test_an_invalid_results_file_is_one_line_and_status_2(tmp_path, capsys, content, why):
    path = tmp_path / "results.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    assert summary.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"summary: {path} is not a batch's results.json: ")
    assert why in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # nothing written


def test_a_summary_that_cannot_be_written_is_status_4(tmp_path, capsys, monkeypatch):
    path = _results_file(tmp_path, realistic_results())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safe_files, "write_bytes", full)
    assert summary.main([str(path)]) == 4
    assert capsys.readouterr().err == (f"summary: cannot write in {tmp_path}: "
                                       "No space left on device\n")
