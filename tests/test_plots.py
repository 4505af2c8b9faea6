"""The pictures (``plots``): the batch's beside its summary and an experiment's, the
pass rate against the speedup threshold they draw, the pair written by
``plots.write_summary`` and ``python -m summary results.json``, which redraws both from
the records alone."""

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
from test_summary import ML_BASELINE, NO_ANSWER, realistic_results, realistic_runs

import plots
import safe_files
import summary
from problems.ml_training import runtime_checks
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


def math_runs() -> list[RunRecord]:
    """A problem that measures no speedup, whose model's prices are unknown."""
    return [RunRecord(1, "pass", found_by="submitted", score=1.0, steps=3),
            RunRecord(2, "fail", found_by="submitted", score=0.0, steps=5,
                      failed_checks=["answer"])]


def sped_up_runs() -> list[RunRecord]:
    """Seven graded runs from 40x to 100x, two of them failing only the speed check."""
    return [RunRecord(i, "fail" if i % 3 == 0 else "pass", found_by="submitted",
                      speedup=30.0 + 10 * i, speedup_ci95=(28.0 + 10 * i, 33.0 + 10 * i),
                      failed_checks=["speedup_target"] if i % 3 == 0 else [],
                      score=0.0 if i % 3 == 0 else 0.5, steps=5 + i, cost_usd=0.01 * i)
            for i in range(1, 8)]


def math_results() -> BatchResults:
    runs = math_runs()
    return BatchResults({"problem": "math", "runs": 2}, {}, runs, summary.batch_figures(runs))


BATCHES = {"realistic": realistic_results, "none-graded": lambda: realistic_results(
    no_graded_runs()), "no-runs": lambda: realistic_results([]), "math": math_results,
    "all-sped-up": lambda: realistic_results(sped_up_runs())}


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_the_plot_is_a_valid_png(tmp_path, batch):
    path = plots.write_plot(batch(), tmp_path / "summary.png")
    assert path == tmp_path / "summary.png"
    width, height = png_size(path)
    assert (width, height) == (1000, 1200)  # plots.SIZE_INCHES at plots.DPI
    assert [p.name for p in tmp_path.iterdir()] == ["summary.png"]  # no temporary left


@pytest.mark.parametrize("batch", BATCHES.values(), ids=BATCHES.keys())
def test_the_same_records_draw_the_same_bytes(batch):
    assert plots.render_png(batch()) == plots.render_png(batch())


def test_other_records_draw_other_bytes():  # the picture is drawn from them
    assert plots.render_png(realistic_results()) != plots.render_png(
        realistic_results(sped_up_runs()))


OTHER_MACHINE = {**ML_BASELINE, "target": 60.0}
EXPERIMENTS = {
    "two-arms": [("haiku", realistic_runs(), ML_BASELINE),
                 ("sonnet", sped_up_runs(), ML_BASELINE)],
    # an arm whose runs were all left out of the pass rate, and one with no run at all
    "none-counted": [("haiku", realistic_runs(), ML_BASELINE),
                     ("down", [RunRecord(1, "error", error_cause="api", steps=1)],
                      ML_BASELINE), ("empty", [], ML_BASELINE)],
    "cost-unknown": [("priced", sped_up_runs(), ML_BASELINE),
                     ("unpriced", [RunRecord(1, "pass", speedup=90.0, score=0.6, steps=4)],
                      ML_BASELINE)],
    "targets-differ": [("here", sped_up_runs(), ML_BASELINE),
                       ("there", realistic_runs(), OTHER_MACHINE)],
    "math": [("a", math_runs(), {}), ("b", math_runs()[:1], {})],
    "no-arms": [],
}


@pytest.mark.parametrize("arms", EXPERIMENTS.values(), ids=EXPERIMENTS.keys())
def test_the_experiment_plot_is_a_valid_png_and_deterministic(tmp_path, arms):
    path = plots.write_experiment_plot(tmp_path / "experiment.png", arms)
    assert path == tmp_path / "experiment.png"
    assert png_size(path) == (1200, 1200)  # plots.EXPERIMENT_SIZE_INCHES at plots.DPI
    assert [p.name for p in tmp_path.iterdir()] == ["experiment.png"]
    assert path.read_bytes() == plots.render_experiment_png(arms)


def test_an_experiment_with_other_arms_draws_other_bytes():
    assert (plots.render_experiment_png(EXPERIMENTS["two-arms"])
            != plots.render_experiment_png(EXPERIMENTS["two-arms"][::-1]))


def test_the_speed_check_is_the_one_the_ml_problem_names():
    assert runtime_checks.speedup_target(10.0, 20.0, 3).name == plots.SPEED_CHECK


@pytest.mark.parametrize(("run", "up_to"), [
    (RunRecord(1, "pass", speedup=30.0), 30.0),
    (RunRecord(2, "fail", speedup=20.0, failed_checks=["speedup_target"]), 20.0),
    # another check failed: a lower target would not have passed it
    (RunRecord(3, "fail", speedup=20.0, failed_checks=["speedup_target", "accuracy"]), None),
    (RunRecord(4, "fail", speedup=200.0, failed_checks=["speedup_plausible"]), None),
    (RunRecord(5, "fail", reason=NO_ANSWER), None),
    (RunRecord(6, "error", error_cause="harness", speedup=50.0,
               failed_checks=["speedup_target"]), None),
    (RunRecord(7, "pass", score=1.0), None),  # no speedup measured (math)
], ids=["pass", "only-speed-failed", "speed-and-accuracy-failed", "implausible",
        "no-answer", "error", "no-speedup"])
def test_the_speedup_a_run_passes_up_to(run, up_to):
    assert plots.passes_up_to(run) == up_to


def test_pass_rate_at_thresholds():
    runs = [RunRecord(1, "pass", speedup=30.0),
            RunRecord(2, "fail", speedup=20.0, failed_checks=["speedup_target"]),
            RunRecord(3, "fail", speedup=50.0, failed_checks=["accuracy"]),
            RunRecord(4, "error", error_cause="harness"),  # counted, never passes
            RunRecord(5, "error", error_cause="api"),  # left out of the denominator
            RunRecord(6, "error", error_cause="budget", speedup=90.0)]
    rates = plots.pass_rate_at_thresholds(runs, [1.0, 20.0, 20.5, 30.0, 30.5, 60.0])
    assert rates == [0.5, 0.5, 0.25, 0.25, 0.0, 0.0]


def test_pass_rate_at_thresholds_names_its_speed_check():
    runs = [RunRecord(1, "fail", speedup=20.0, failed_checks=["too_slow"])]
    assert plots.pass_rate_at_thresholds(runs, [10.0]) == [0.0]
    assert plots.pass_rate_at_thresholds(runs, [10.0], speed_check="too_slow") == [1.0]


def test_pass_rate_at_thresholds_without_a_counted_run_is_none():
    assert plots.pass_rate_at_thresholds([RunRecord(1, "error", error_cause="api")],
                                         [1.0]) is None
    assert plots.pass_rate_at_thresholds([], [1.0]) is None


def test_the_threshold_grid_reaches_past_the_best_and_holds_each_step():
    runs = [RunRecord(1, "pass", speedup=30.0),
            RunRecord(2, "fail", speedup=20.0, failed_checks=["speedup_target"])]
    grid = plots.threshold_grid(runs, [("target 85.3x", 85.3, "--")])
    assert grid[0] == 1.0 and grid[-1] == pytest.approx(85.3 * 1.25)
    assert {20.0, 30.0} <= set(grid) and grid == sorted(grid)
    assert plots.threshold_grid([], [])[-1] == pytest.approx(1.25)  # math: 1x to 1.25x


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
