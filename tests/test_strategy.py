"""The strategy analysis (``problems.ml_training.strategy``): which bottleneck each run
fixed, by how much, and whether its normalisation kept the original's algorithm.

The judging is tested on arrays; the whole analysis on the flagship scaled to 100
images, with the seed's strategies as candidates (``candidates/variants.py``), each run
in the sandbox as a batch runs it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from candidates.variants import (
    HONEST,
    NORMALIZE_BODY,
    apply_edits,
    scaled_text,
    write_candidate,
)

from problems.ml_training import strategy
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.execution_report import MalformedReport, pack
from problems.ml_training.spec import GradingOptions
from problems.ml_training.strategy import (
    Component,
    ComponentRun,
    Strategist,
    alternative,
    compare,
    components_of,
    parse_component,
    parse_lines,
    same,
    summarise,
)

N = 100
RAW = np.random.RandomState(0).rand(N, 13).astype(np.float32) * np.linspace(0.1, 400, 13)


# ---- judging, on arrays ---------------------------------------------------------------
@pytest.mark.parametrize(("name", "output", "scalers"), [
    ("z-score", (RAW - RAW.mean(0)) / (RAW.std(0) + 1e-8), ()),
    ("magnitude scaling", RAW / (np.median(np.linalg.norm(RAW, axis=1)) + 1e-8), ()),
    ("min-max scaling", (RAW - RAW.min(0)) / (RAW.max(0) - RAW.min(0)), ()),
    ("no normalisation", RAW, ()),
    # the same numbers as the z-score: which one it is, only the call shows
    ("scikit-learn StandardScaler", (RAW - RAW.mean(0)) / RAW.std(0), ("StandardScaler",)),
])
def test_a_known_normalisation_is_named(name, output, scalers):
    # computed in float32, as a candidate computes it
    assert alternative(output.astype(np.float32), RAW.astype(np.float64), scalers) == name


def test_a_normalisation_of_its_own_is_not_named():
    assert alternative(RAW * 0.37 + 1.0, RAW.astype(np.float64), ()) is None


def test_same_allows_float32_arithmetic_but_not_another_function():
    exact = RAW.astype(np.float64) / 3.0
    assert same((RAW / np.float32(3.0)).astype(np.float64), exact)
    assert not same(exact * 1.01, exact)
    assert not same(exact[:, :12], exact)  # another shape


def test_a_component_faster_and_the_same_is_fixed():
    original = ComponentRun("gradient", 0.5, RAW.astype(np.float64))
    mine = ComponentRun("gradient", 0.01, RAW.astype(np.float64))
    row = compare(Component("gradient", "method", "C", "extract_gradient_features"),
                  mine, original, None)
    assert row == {"name": "gradient", "candidate_s": 0.01, "original_s": 0.5, "ratio": 50.0,
                   "function": "same", "approach": None}
    assert summarise([row])["fixed"] == ["gradient"]


def test_a_component_that_failed_is_an_error_never_fixed():
    row = compare(Component("forward", "forward", "M"), ComponentRun("forward", error="boom"),
                  ComponentRun("forward", 1.0, np.zeros(3)), None)
    assert (row["function"], row["approach"], row["ratio"]) == ("error", "boom", None)
    assert summarise([row])["fixed"] == []


def _line(**fields):
    base = {"name": "forward", "seconds": [0.1], "output": pack(np.zeros(2)), "error": "",
            "scalers": [], "captured": None}
    return base | fields


@pytest.mark.parametrize("raw", [
    "not an object",
    {"name": "forward"},  # fields missing
    _line(extra=1),  # a field the runner never writes
    _line(name="another"),  # not a component of the job
    _line(seconds=[float("nan")]),
    _line(seconds=[0.1] * 9),  # more calls than the job allows
    _line(seconds=[True]),
    _line(error="x" * 1000),
    _line(output={"shape": [3], "b64": "AAAA"}),  # too few bytes for the shape
    _line(output={"shape": [10**9], "b64": ""}),
    _line(scalers=[1]),
    _line(output=None),  # neither an output nor an error
])
def test_a_malformed_component_line_is_refused(raw):
    with pytest.raises(MalformedReport):
        parse_component(raw, {"forward"}, 3)


def test_the_runners_last_line_for_a_component_counts():
    # A line the candidate wrote itself comes before the runner's, written after the call.
    forged = '{"name": "forward", "seconds": [1e-9], "output": null, "error": "x", ' \
             '"scalers": [], "captured": null}'
    real = __import__("json").dumps(_line(error="it raised", seconds=[], output=None))
    components = (Component("forward", "forward", "M"), Component("activation", "submodule",
                                                                   "M", "activation"))
    run = parse_lines(['LOADED {"error": ""}', f"COMPONENT {forged}", f"COMPONENT {real}",
                       "COMPONENT {not json", "GARBAGE"], components, 3, "was killed")
    assert run.runs["forward"].error == "it raised"
    assert run.runs["activation"].error.startswith("not reached")


def test_a_file_that_reports_nothing_is_an_error():
    assert parse_lines([], (), 3, "timed out").error.endswith("(timed out)")


def test_the_flagships_components_come_from_its_declaration_and_source():
    names = [c.name for c in components_of(complex_spec())]
    assert names == ["features", "statistical", "gradient", "frequency", "normalisation",
                     "activation", "forward", "training step"]


# ---- the whole analysis, sandboxed -----------------------------------------------------
@pytest.fixture(scope="module")
def strategist(tmp_path_factory, small_pipelines):
    """The flagship at 100 images, its original analysed once for every test here."""
    found = Strategist(complex_spec(baseline=small_pipelines["baseline"], n_samples=N),
                       GradingOptions())
    original = asyncio.run(found.original())
    assert not original.error, original.error
    return found


def _rows(record):
    assert "components" in record, record
    return {r["name"]: r for r in record["components"]}


async def test_the_vectorised_pairwise_normalisation_keeps_the_original_algorithm(
        strategist, tmp_path):
    record = await strategist.analyse(write_candidate("honest_fast.py", tmp_path / "c.py", N))
    rows = _rows(record)
    assert rows["normalisation"]["function"] == "same"
    assert rows["normalisation"]["approach"] == "the original's algorithm"
    assert rows["normalisation"]["ratio"] >= 2
    assert record["note"].startswith("kept the original's normalisation algorithm")
    # a vectorised feature family: fixed, the same function
    assert rows["gradient"]["function"] == "same" and rows["gradient"]["ratio"] >= 10
    assert {"gradient", "activation", "normalisation"} <= set(record["fixed"])


@pytest.mark.parametrize(("fixture", "approach"), [
    ("seed_zscore.py", "z-score"),
    ("seed_magnitude.py", "magnitude scaling"),
    ("seed_standard_scaler.py", "scikit-learn StandardScaler"),
])
async def test_a_replaced_normalisation_is_named(strategist, tmp_path, fixture, approach):
    rows = _rows(await strategist.analyse(write_candidate(fixture, tmp_path / "c.py", N)))
    assert (rows["normalisation"]["function"], rows["normalisation"]["approach"]) == (
        "different", approach)
    assert (rows["features"]["function"], rows["features"]["approach"]) == (
        "different", approach)
    assert rows["gradient"]["function"] == "same"  # the rest is the original's


def _edited(tmp_path, *edits):
    text = apply_edits(HONEST.read_text(), list(edits), "test")
    path = tmp_path / "c.py"
    path.write_text(scaled_text(text, N, "test"))
    return path


async def test_a_file_that_cannot_be_imported_is_an_error(strategist, tmp_path):
    path = _edited(tmp_path, ("import time\n", "import time\nraise SystemExit(3)\n"))
    record = await strategist.analyse(path)
    assert set(record) == {"error"} and "could not be imported" in record["error"]


async def test_a_component_that_raises_is_its_own_error(strategist, tmp_path):
    path = _edited(tmp_path, (NORMALIZE_BODY, "        raise ValueError('no')\n"
                                              + NORMALIZE_BODY))
    rows = _rows(await strategist.analyse(path))
    assert rows["normalisation"]["function"] == "error"
    assert "ValueError: no" in rows["normalisation"]["approach"]
    assert rows["gradient"]["function"] == "same"


async def test_a_component_that_hangs_is_stopped_at_its_limit(strategist, tmp_path,
                                                               monkeypatch):
    monkeypatch.setattr(strategy, "CANDIDATE_LIMITS", strategy.Limits(call=2.0, total=60.0))
    path = _edited(tmp_path, ("        corner = images[:, :-1, :-1]\n",
                              "        while True:\n            pass\n"))
    rows = _rows(await strategist.analyse(path))
    assert rows["gradient"]["function"] == "error"
    assert "limit" in rows["gradient"]["approach"]
    assert rows["activation"]["function"] == "same"  # the analysis went on


async def test_a_component_that_ends_the_process_leaves_the_rest_unreached(
        strategist, tmp_path):
    activation = "        return torch.where(x > 0"
    path = _edited(tmp_path, (activation, "        import os\n        os._exit(0)\n"
                                          + activation))
    rows = _rows(await strategist.analyse(path))
    assert rows["normalisation"]["function"] == "same"  # reported before it ended
    assert rows["activation"]["function"] == "error"
    assert rows["forward"]["approach"].startswith("not reached")


async def test_a_forged_report_from_the_candidate_is_overridden(strategist, tmp_path):
    # At import, the candidate claims on the runner's channel that its failing
    # normalisation was fast and the original's; the runner's own line comes later.
    forged = ('import os\nos.write(3, b\'COMPONENT {"name": "normalisation", "seconds": [1e-9],'
              ' "output": null, "error": "", "scalers": [], "captured": null}\\n\')\n')
    path = _edited(tmp_path, ("import time\n", "import time\n" + forged),
                   (NORMALIZE_BODY, "        raise ValueError('no')\n" + NORMALIZE_BODY))
    rows = _rows(await strategist.analyse(path))
    assert rows["normalisation"]["function"] == "error"


def test_a_flood_of_control_lines_keeps_only_the_last_within_its_bound():
    # A candidate can write as many lines as it likes to the control channel while its
    # components run: the harness keeps the newest within a bound (the last line of a
    # component is the one that counts), never all of them.
    kept = strategy._LastLines(1000)
    for i in range(10_000):
        kept.add(f"COMPONENT {i:097d}")  # 107 characters each
    assert kept.size <= 1000 and len(kept.lines) == 9
    assert kept.lines[-1] == f"COMPONENT {9999:097d}"
    one = strategy._LastLines(10)
    one.add("x" * 50)  # a line above the bound alone is kept: it is the last
    assert list(one.lines) == ["x" * 50]
