"""Fresh, learnable inputs: the data sets, the oracle, and the shortcuts they catch.

The grading tests run at 1000 samples, where the original pipeline learns the labels
well above chance (about 0.27 against 0.10) and untrained, unnormalised or barely
trained models fall clearly below it; at 100 samples every model sits at chance.
"""

from __future__ import annotations

import asyncio
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from candidates.variants import write_candidate
from conftest import REFERENCE, SLOW_PIPELINE, scaled_copy

import sandbox
from problems.ml_training import fresh_inputs, oracle
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.fresh_inputs import make_dataset
from problems.ml_training.spec import PROBLEM_DATA, GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import BaselineCache
from problems.ml_training.timing.executor import execute

N = 1000
VECTORIZED = REFERENCE.parent / "ml_training_vectorized.py"
OPTIONS = GradingOptions(repeats=1, baseline_repeats=1, target=1.0, min_timed_seconds=0)
# Pinned for the shortcut tests (fresh seeds are what the grader uses; see the tests of
# _datasets): on this data set the original reaches 0.28, far from chance, so a shortcut
# that loses what was learned is always more than the tolerance below it.
PINNED_SEED = 114365524


# ---- the data sets ----------------------------------------------------------------------
def test_dataset_follows_the_originals_stream():
    ds = make_dataset(1234, 200)
    rng = np.random.RandomState(1234)
    images = rng.rand(200, 28, 28).astype(np.float32)
    rng.randint(0, 10, size=200)
    order = rng.permutation(200)
    assert ds.test_rows == order[160:].tolist()
    labels = fresh_inputs.class_order(1234)[fresh_inputs.brightness_labels(images)]
    assert ds.hidden_test_labels == labels[order[160:]].tolist()
    assert [ds.visible_labels[i] for i in order[:160]] == labels[order[:160]].tolist()


def test_labels_are_balanced_deciles_of_brightness():
    images = np.random.RandomState(5).rand(1000, 28, 28).astype(np.float32)
    labels = fresh_inputs.brightness_labels(images)
    assert np.bincount(labels).tolist() == [100] * 10
    means = images.mean(axis=(1, 2))
    assert means[labels == 9].min() > means[labels == 0].max()


def test_each_data_set_orders_its_classes_its_own_way():
    """No fixed brightness-to-class table answers the test rows: the class order changes
    with the (secret) seed, and brightness deciles taken as labels score near chance."""
    orders = {tuple(fresh_inputs.class_order(seed)) for seed in range(1, 21)}
    assert len(orders) == 20
    for seed in range(1, 6):
        ds = make_dataset(seed, 1000)
        images = np.random.RandomState(seed).rand(1000, 28, 28).astype(np.float32)
        guessed = fresh_inputs.brightness_labels(images)[ds.test_rows].tolist()
        assert ds.accuracy(guessed) < 0.5  # 1.0 if the order were the identity


def test_test_rows_are_handed_decoy_labels():
    ds = make_dataset(77, 1000)
    given = [ds.visible_labels[i] for i in ds.test_rows]
    agreement = np.mean(np.array(given) == np.array(ds.hidden_test_labels))
    assert agreement < 0.2  # chance is 0.1: the true labels are not in the data handed out
    assert ds.accuracy(ds.hidden_test_labels) == 1.0
    assert ds.visible_accuracy(given) == 1.0
    assert ds.accuracy(ds.hidden_test_labels[:-1]) is None


def test_seeds_differ_every_time():
    assert len({fresh_inputs.draw_seed() for _ in range(50)}) == 50


# ---- the oracle is the original --------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("small")
    return {"slow": scaled_copy(SLOW_PIPELINE, d / "slow.py", 100),
            "reference": scaled_copy(REFERENCE, d / "reference.py", 100)}


async def test_oracle_predicts_what_the_original_predicts(small):
    spec = complex_spec(small["slow"], 100, reference=small["reference"])
    problem = MLTrainingTask(spec, OPTIONS)
    inst = problem.spec.instrumentation()
    probes = problem.spec.probe_job(99)
    limits = sandbox.Limits(timeout=300)
    for seed in (11, 22, 33):
        ds = make_dataset(seed, 100)
        slow, ref = await asyncio.gather(*(
            execute(small[k], inst, threads=1, limits=limits, read_only=(PROBLEM_DATA,),
                    data=ds.job(), probes=probes, timed=False) for k in ("slow", "reference")))
        assert slow.ok and ref.ok, slow.error + ref.error
        original, answer = oracle.answer(ds, slow), oracle.answer(ds, ref)
        assert answer.predictions == original.predictions
        assert slow.report.eval_checksum == pytest.approx(ref.report.eval_checksum, rel=1e-5)
        for name in ("features", "activation", "logits"):
            want = original.probes.outputs[name]
            have = answer.probes.outputs[name]
            assert np.allclose(have, want, rtol=OPTIONS.strict_rtol, atol=OPTIONS.strict_atol)


async def test_perturbed_replays_move_the_arithmetic_and_nothing_else(small):
    """The harness's perturbed replays (``oracle.Perturbation``): each training output
    moved in its last bits, from draws of its own, so the run's own draws, batches and
    counts are the original's, the weights move by arithmetic noise only, and the same
    perturbation gives the same weights."""
    from problems.ml_training import training_checks

    spec = complex_spec(small["slow"], 100, reference=small["reference"])
    inst = spec.instrumentation()
    ds = make_dataset(21, 100)
    run = dict(inst=inst, threads=1, limits=sandbox.Limits(timeout=300),
               read_only=(PROBLEM_DATA,))
    assert await oracle.replay(small["reference"], jobs=[], **run) == []
    own = await execute(small["reference"], inst, threads=1, limits=run["limits"],
                        read_only=(PROBLEM_DATA,), data=ds.job(), timed=False)
    assert own.ok, own.error
    features = own.report.features
    perturbations = [oracle.Perturbation(5), oracle.Perturbation(5, output_ulps=16),
                     oracle.Perturbation(5, output_ulps=16), oracle.Perturbation(6, output_ulps=16),
                     oracle.Perturbation(6, feature_ulps=4)]
    runs = await oracle.replay(small["reference"], jobs=[(ds, features)] * 5,
                               perturbations=perturbations, **run)
    assert all(r.ok for r in runs), [r.error for r in runs]
    weights = [training_checks.final_weights(r.report) for r in runs]
    base = training_checks.final_weights(own.report)
    gaps = [training_checks.weights_gap(w, base)[0] for w in weights]
    assert gaps[0] == 0.0  # no perturbation: the original's training bit for bit
    assert 0 < gaps[1] < 1e-3 and 0 < gaps[3] < 1e-3 and 0 < gaps[4] < 1e-3
    assert training_checks.weights_gap(weights[1], weights[2])[0] == 0.0  # the same seed
    assert training_checks.weights_gap(weights[1], weights[3])[0] > 0.0  # another seed
    for r in runs:  # the draws, batches and counts are the original's
        assert r.report.train_rows == own.report.train_rows
        assert r.report.train_batches == own.report.train_batches
    with pytest.raises(ValueError, match="2 perturbations for 1 replays"):
        await oracle.replay(small["reference"], jobs=[(ds, features)],
                            perturbations=perturbations[:2], **run)


# ---- gradings at 1000 samples ------------------------------------------------------------
STRICT = "strict"
EXPECTED = {  # fixture: (seed mode, strict mode); None passes, else a check that fails
    # (strict mode is graded only where its verdict says something the seed mode's
    # does not; a shortcut that fails seed mode fails strict mode the same way)
    "reference": (None, None),
    "tier_vectorized": (None, None),  # every calibration tier passes both modes
    "honest_fast.py": (None, None),
    "honest_static_extractor.py": (None, None),
    "honest_batched_eval.py": (None, None),
    "honest_traced_eval.py": (None, None),
    "seed_zscore.py": (None, "strict_features"),
    "seed_standard_scaler.py": (None, "strict_features"),
    "seed_magnitude.py": ("accuracy", "strict_features"),
    "cheat_no_normalization.py": ("accuracy", "strict_features"),
    "cheat_untrained.py": ("accuracy", None),
    "cheat_big_batches.py": ("training_setup", None),
    "cheat_one_epoch.py": ("components_exercised", None),
    "cheat_precomputed_features.py": ("accuracy", None),
    "cheat_forged_counts_untrained.py": ("accuracy", None),
    "cheat_one_epoch_forged_counts.py": ("trained_weights", "trained_weights"),
    "cheat_zscore_one_epoch_forged_counts.py": ("trained_weights", "strict_features"),
}
JOBS = [(name, "seed") for name in EXPECTED] + [
    (name, STRICT) for name, (seed, strict) in EXPECTED.items()
    if not (seed is not None and strict is None)]


@pytest.fixture(scope="module")
def gradings(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("n1000")
    spec = complex_spec(scaled_copy(SLOW_PIPELINE, d / "slow.py", N), N,
                        reference=scaled_copy(REFERENCE, d / "reference.py", N))
    cache = BaselineCache(d / "cache")
    asyncio.run(MLTrainingTask(spec, OPTIONS, cache=cache).figures())
    def grade(job):
        name, semantics = job
        if name == "reference":
            path = spec.reference
        elif name == "tier_vectorized":
            path = scaled_copy(VECTORIZED, Path(tempfile.mkdtemp(dir=d)) / "vec.py", N)
        else:
            path = write_candidate(name, Path(tempfile.mkdtemp(dir=d)) / name, N)
        problem = MLTrainingTask(spec, replace(OPTIONS, semantics=semantics),
                                                cache=cache)
        problem.draw_datasets = lambda count: [make_dataset(PINNED_SEED, N)] * count
        return job, asyncio.run(problem.grade(path))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fresh_inputs, "draw_seed", lambda: 4242)  # the probes' seed
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = dict(pool.map(grade, JOBS))
    results["spec"], results["cache"] = spec, cache
    return results


@pytest.mark.parametrize(("name", "mode"), JOBS, ids=[f"{n}-{m}" for n, m in JOBS])
def test_each_shortcut_fails_by_name_and_honest_work_passes(gradings, name, mode):
    result = gradings[(name, mode)]
    expected = EXPECTED[name][mode == "strict"]
    if expected is None:
        assert result.passed, result.reason
    else:
        assert not result.passed
        assert expected in result.failed_checks, result.reason
    names = [c.name for c in result.checks]
    assert ("strict_features" in names) is (mode == "strict" and result.details["executed"]
                                            and "runs_cleanly" not in result.failed_checks)


def test_records_show_seeds_and_the_originals_accuracy(gradings):
    result = gradings[("honest_fast.py", "seed")]
    (execution,) = result.details["per_execution"]
    assert execution["seed"] == PINNED_SEED
    assert execution["accuracy"] == result.accuracy
    assert execution["original_accuracy"] == result.baseline_accuracy
    assert result.accuracy > 0.15  # well above chance: the labels are learnable
    summary = result.agent_summary()
    assert str(execution["seed"]) not in summary  # the agent never sees the seed
    assert "the original on the same data" in summary


async def test_behaviour_that_depends_on_the_data_is_caught(gradings, tmp_path):
    # Seeds picked so that the cheat trains on one data set and not on the other.
    spec, cache = gradings["spec"], gradings["cache"]
    by_pixel = {}
    for seed in range(1, 50):
        bright = np.random.RandomState(seed).rand(1)[0] >= 0.5
        by_pixel.setdefault(bright, seed)
    problem = MLTrainingTask(spec, replace(OPTIONS, repeats=2), cache=cache)
    problem.draw_datasets = lambda count: [make_dataset(by_pixel[True], N),
                                       make_dataset(by_pixel[False], N)]
    path = write_candidate("cheat_depends_on_data.py", tmp_path / "c.py", N)
    result = await problem.grade(path)
    assert "accuracy" in result.failed_checks, result.reason
    accuracies = [e["accuracy"] - e["original_accuracy"]
                  for e in result.details["per_execution"]]
    assert max(accuracies) > -0.05 > min(accuracies)  # honest on one, not on the other


async def test_repeated_data_set_checks_determinism(gradings, tmp_path):
    spec, cache = gradings["spec"], gradings["cache"]
    problem = MLTrainingTask(spec, replace(OPTIONS, repeats=3), cache=cache)
    keys = [d.key for d in problem.draw_datasets(3)]
    assert len(keys) == 3 and len(set(keys)) == 2
    path = write_candidate("cheat_nondeterministic.py", tmp_path / "c.py", N)
    result = await problem.grade(path)
    assert "determinism" in result.failed_checks, result.reason


async def test_torch_compile_runs_in_the_sandbox(tmp_path):
    # Its compiler writes large files, runs a C++ compiler and asks for the user's name
    # (the sandbox uid has no passwd entry): all of that must work in an execution.
    path = tmp_path / "compiled.py"
    path.write_text("import torch\n\n\ndef run_complex_training_pipeline():\n"
                    "    f = torch.compile(lambda x: torch.tanh(x) * 2 + 1)\n"
                    "    print('compiled', float(f(torch.ones(4, 3)).sum()))\n"
                    "    return 0.0\n")
    inst = complex_spec().instrumentation()
    run = await execute(path, inst, threads=1, limits=sandbox.Limits(timeout=300))
    assert run.ok, run.error + run.stderr_tail
    assert "compiled 30.27" in run.stdout  # 12 x (2 tanh(1) + 1)


async def _graded(gradings, name, tmp_path, datasets=None, repeats=1):
    """Fixture ``name`` graded in seed mode on ``datasets`` (default: the pinned one)."""
    problem = MLTrainingTask(gradings["spec"], replace(OPTIONS, repeats=repeats),
                                            cache=gradings["cache"])
    problem.draw_datasets = lambda count: list(datasets or [make_dataset(PINNED_SEED, N)])
    return await problem.grade(write_candidate(name, tmp_path / "c.py", N))


async def test_reading_the_answers_from_the_images_is_caught(gradings, tmp_path):
    result = await _graded(gradings, "exploit_reads_the_answers.py", tmp_path)
    assert not result.passed


async def test_fitting_the_answer_table_from_the_training_rows_is_caught(gradings, tmp_path):
    # The training rows reveal the secret class order; a table fitted to them answers
    # rows of the eval pass while no model is trained.  The grader scores what the
    # model's own weights predict, so the answers count for nothing.
    result = await _graded(gradings, "exploit_learns_the_answer_table.py", tmp_path)
    assert "model_outputs" in result.failed_checks, result.reason
    assert "accuracy" in result.failed_checks, result.reason  # of the model's predictions


async def test_weights_built_for_made_up_inputs_are_caught(gradings, tmp_path):
    # The next move: make the model itself give the table's answers, with hand-built
    # weights reading one-hot codes in place of the features.
    result = await _graded(gradings, "exploit_builds_the_weights.py", tmp_path)
    assert "model_inputs" in result.failed_checks, result.reason
    assert "model_outputs" not in result.failed_checks  # the model does give those answers


async def test_labels_fed_into_the_features_are_caught(gradings, tmp_path):
    # And the next: put the table's answers into the features, and train the model on
    # them honestly.  The same images under other labels give other features.
    result = await _graded(gradings, "exploit_labels_in_the_features.py", tmp_path,
                           [make_dataset(PINNED_SEED, N),
                            make_dataset(PINNED_SEED, N, labelling=1)], repeats=2)
    assert not result.passed
    assert result.failed_checks == ["features_from_images"], result.reason
