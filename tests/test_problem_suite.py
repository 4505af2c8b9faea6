"""The seed's `numpy` and `pytorch` problems, graded at small size through the same
grader as the flagship: their references pass in both semantics modes, the oracle
predicts what each original predicts on fresh data, and the hostile inputs and cheats
that apply to every ML problem fail on the check that names them (parametrized over
the problems; the flagship's own, larger set is in test_grader.py and
test_fresh_inputs.py)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
from candidates.variants import write_candidate
from conftest import make_report

import sandbox
from problem import GradingChoices
from problems import registry
from problems.ml_training import fresh_inputs, oracle, probes
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC, complex_spec
from problems.ml_training.declarations.numpy_pipeline import NUMPY_SPEC, numpy_spec
from problems.ml_training.declarations.pytorch_pipeline import PYTORCH_SPEC, pytorch_spec
from problems.ml_training.spec import PROBLEM_DATA, REFERENCE_DIR, SEMANTICS, GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing.cache import BaselineCache
from problems.ml_training.timing.executor import execute

N = 100
SUITE = {  # name: (spec builder, slow file, reference, the files' own n_samples)
    "numpy": (numpy_spec, PROBLEM_DATA / "slow_ml_training_numpy.py",
              REFERENCE_DIR / "numpy_reference.py", 1000),
    "pytorch": (pytorch_spec, PROBLEM_DATA / "slow_ml_training_pytorch.py",
                REFERENCE_DIR / "pytorch_reference.py", 2000),
    "complex": (complex_spec, PROBLEM_DATA / "slow_ml_training_complex.py",
                REFERENCE_DIR / "ml_training_reference.py", 3000),
}
NEW = ["numpy", "pytorch"]
OPTIONS = GradingOptions(repeats=3, baseline_repeats=1, accuracy_tolerance=0.5, target=2.0,
                         min_timed_seconds=0)


def scaled(source: Path, dest: Path, default: int, n: int = N) -> Path:
    text, count = re.subn(rf"n_samples={default}\b", f"n_samples={n}", source.read_text())
    assert count >= 1, f"{source} has no n_samples={default} default to scale"
    dest.write_text(text)
    return dest


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, dict]:
    """Each problem's slow file and reference at N samples, with a cache shared by the
    module (each baseline is measured once)."""
    out = {}
    for name, (spec_of, slow, reference, default) in SUITE.items():
        d = tmp_path_factory.mktemp(name)
        out[name] = {"baseline": scaled(slow, d / "slow.py", default),
                     "reference": scaled(reference, d / "reference.py", default),
                     "cache": d / "cache", "spec_of": spec_of, "default": default, "dir": d}
    return out


def problem_for(small: dict, name: str, **options) -> MLTrainingTask:
    s = small[name]
    spec = s["spec_of"](s["baseline"], N, reference=s["reference"])
    opts = GradingOptions(**{**OPTIONS.__dict__, **options})
    return MLTrainingTask(spec, opts, cache=BaselineCache(s["cache"]))


def variant(small: dict, name: str, label: str, *edits: tuple[str, str]) -> Path:
    """The problem's small reference with exact-string edits (each must occur)."""
    text = small[name]["reference"].read_text()
    for old, new in edits:
        assert old in text, f"{label}: {old!r} is not in the {name} reference"
        text = text.replace(old, new)
    path = small[name]["dir"] / f"{label}.py"
    path.write_text(text)
    return path


def failed(result) -> list[str]:
    return [c.name for c in result.checks if c.decisive_failure]


# ---- the registry and the declarations -------------------------------------------------
def test_the_seed_problems_are_registered_with_their_own_defaults():
    assert registry.names() == ["complex", "numpy", "pytorch", "math"]
    numpy_problem, torch_problem = registry.build("numpy"), registry.build("pytorch")
    assert numpy_problem.spec is NUMPY_SPEC and torch_problem.spec is PYTORCH_SPEC
    assert numpy_problem.options.accuracy_tolerance == 0.01
    assert torch_problem.options.accuracy_tolerance == 0.02
    assert registry.build("complex").spec is COMPLEX_SPEC
    for problem in (numpy_problem, torch_problem):
        assert problem.tier_names() == ["strict"]
        assert problem.default_target() == problem.options.target == "0.7*strict"
        knobs = {k.name: k.default for k in problem.knobs()}
        assert knobs["target"] == "0.7*strict" and knobs["n_samples"] in (1000, 2000)
    # the user's target still wins over the problem's
    built = registry.build("numpy", registry.Settings(grading=GradingChoices(target="0.5*strict")))
    assert built.options.target == "0.5*strict" and built.options.accuracy_tolerance == 0.01


def test_the_instrumentation_is_derived_from_the_declared_probes():
    numpy_inst = NUMPY_SPEC.instrumentation()
    kinds = [p["kind"] for p in numpy_inst.watch]
    assert kinds == ["data", "rows", "estimator", "eval_predictions"]
    assert "torch" not in numpy_inst.preload
    assert {"sklearn.ensemble", "sklearn.model_selection"} <= set(numpy_inst.preload)
    torch_inst = PYTORCH_SPEC.instrumentation()
    assert [p["kind"] for p in torch_inst.watch] == ["data", "rows", "torch_module",
                                                     "eval_predictions"]
    assert torch_inst.preload[0] == "torch"
    spec = PYTORCH_SPEC
    assert spec.model.batches == {1: 3 * 1600}  # one sample per optimiser step, 3 epochs


def test_the_sklearn_split_is_the_one_the_pipeline_makes():
    from sklearn.model_selection import train_test_split

    ds = fresh_inputs.make_dataset(5, 1000, recipe=numpy_spec().recipe)
    _, test = train_test_split(np.arange(1000), test_size=0.2, random_state=42)
    assert ds.test_rows == test.tolist()
    assert set(ds.hidden_test_labels) == {0, 1}
    relabelled = fresh_inputs.make_dataset(5, 1000, labelling=1, recipe=numpy_spec().recipe)
    assert [1 - y for y in ds.hidden_test_labels] == relabelled.hidden_test_labels


def test_estimator_setup_names_a_changed_parameter():
    estimator = numpy_spec().estimator
    check = estimator.setup(make_report(fit_params=[{"n_estimators": 10, "random_state": 42}]))
    assert not check.passed and "n_estimators=10" in check.message
    assert not estimator.setup(make_report()).passed
    everything = estimator.all_params()
    assert everything["max_depth"] is None and everything["n_estimators"] == 100
    assert estimator.setup(make_report(fit_params=[everything])).passed
    assert estimator.setup(make_report(fit_params=[{**everything, "n_jobs": 2}])).passed  # free
    deeper = estimator.setup(make_report(fit_params=[{**everything, "max_depth": 3}]))
    assert not deeper.passed and "max_depth=3 (the original: None)" in deeper.message
    assert not probes.components_exercised(make_report(feature_rows=1000, fit_rows=800),
                                           numpy_spec().probes).passed


# ---- the oracle and the references -----------------------------------------------------
@pytest.mark.parametrize("name", NEW)
async def test_oracle_predicts_what_the_original_predicts(small, name):
    problem = problem_for(small, name)
    inst, probe_job = problem.spec.instrumentation(), problem.spec.probe_job(99)
    limits = sandbox.Limits(timeout=300)
    for seed in (11, 22):
        ds = fresh_inputs.make_dataset(seed, N, recipe=problem.spec.recipe)
        slow, ref = await asyncio.gather(*(
            execute(small[name][k], inst, threads=1, limits=limits, read_only=(PROBLEM_DATA,),
                    data=ds.job(), probes=probe_job, timed=False)
            for k in ("baseline", "reference")))
        assert slow.ok and ref.ok, slow.error + ref.error + slow.stderr_tail + ref.stderr_tail
        original, answer = oracle.answer(ds, slow), oracle.answer(ds, ref)
        assert answer.predictions == original.predictions
        assert original.accuracy > 0.6  # learnable labels: well above chance (0.5)
        assert np.allclose(answer.probes.outputs["features"], original.probes.outputs["features"],
                           rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("semantics", ["seed", "strict"])
@pytest.mark.parametrize("name", NEW)
async def test_the_reference_passes_in_both_modes(small, name, semantics):
    problem = problem_for(small, name, semantics=semantics)
    result = await problem.grade(small[name]["reference"])
    assert result.passed, result.reason
    names = [c.name for c in result.checks]
    assert ("trained_weights" in names) == (name == "pytorch")
    assert ("estimator_setup" in names) == ("fitted_model" in names) == (name == "numpy")
    if semantics == "strict":
        strict = {n for n in names if n.startswith("strict_")}
        # each component on the grader's inputs, and on what the pipeline computed
        assert strict == ({"strict_features", "strict_logits", "strict_pipeline_features",
                           "strict_pipeline_logits"} if name == "pytorch"
                          else {"strict_features", "strict_pipeline_features"})


SEED_ONLY = {  # computes another function, of the same quality: seed mode only
    "numpy": ("        std = np.sqrt(((flat - mean[:, None]) ** 2).sum(axis=1) / (height * "
              "width))\n",
              "        std = np.sqrt(((flat - mean[:, None]) ** 2).sum(axis=1) / (height * "
              "width - 1))\n"),
    "pytorch": ("        return ((f - mean) / (std + 1e-8)).astype(np.float32)\n",
                "        return ((f - mean) / (2 * std + 1e-8)).astype(np.float32)\n"),
}


@pytest.mark.parametrize("name", NEW)
async def test_another_function_passes_seed_mode_and_fails_strict(small, name):
    path = variant(small, name, "seed_only", SEED_ONLY[name])
    seed = await problem_for(small, name).grade(path)
    strict = await problem_for(small, name, semantics="strict").grade(path)
    assert seed.passed, seed.reason
    assert not strict.passed and "strict_features" in failed(strict), strict.reason


# ---- hostile inputs and cheats, on every ML problem --------------------------------------
HOSTILE = {  # name: (content, the check that fails)
    "empty": (b"", "required_definitions"),
    "binary": (b"\x00\xff\xfe garbage \x80", "candidate_readable"),
    "syntax_error": (b"def broken(:\n", "syntax"),
    "oversized": (b"#" * 1_000_001, "candidate_readable"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("name", list(SUITE))
async def test_hostile_files_fail_statically_on_every_problem(small, name, case, tmp_path):
    content, check = HOSTILE[case]
    path = tmp_path / "candidate.py"
    path.write_bytes(content)
    result = await problem_for(small, name).grade(path)
    assert not result.passed and check in failed(result), (failed(result), result.reason)
    assert result.details == {"executed": False}


ENTRY = {"numpy": "def run_numpy_training_pipeline():\n",
         "pytorch": "def run_pytorch_training_pipeline():\n",
         "complex": "def run_complex_training_pipeline():\n"}
FEATURES = {"numpy": "    features = extractor.extract_features(images)\n",
            "pytorch": "    features = extractor.extract_features(images)\n",
            "complex": "    features = extractor.extract_all_features(images)\n"}
DATA = "    images, labels = generate_synthetic_data()\n"
N_FEATURES = {"numpy": 8, "pytorch": 8, "complex": 13}


def _cheat(name: str, cheat: str) -> list[tuple[str, str]]:
    entry, features = ENTRY[name], FEATURES[name]
    return {
        # work at import, then nothing: the program crashes when run
        "crashes": [(entry, entry + "    raise RuntimeError('boom')\n")],
        # the entry returns before doing anything
        "exits_early": [(entry, entry + "    import sys\n    sys.exit(0)\n")],
        # prints the output contract and an accuracy, does no work
        "hardcoded_output": [(entry, entry + f"    print('Feature shape: ({N}, "
                              f"{N_FEATURES[name]})')\n    print('Test accuracy: 0.9900')\n"
                              "    return 0.99\n")],
        # features for ten images, repeated for the rest (a shrunk workload)
        "ten_images": [(features, features.replace("(images)", "(images[:10])")
                        + "    features = np.resize(features, (len(images), "
                        "features.shape[1]))\n")],
        # its own data, drawn the original's way: not the grader's fresh data
        "own_data": [(DATA, "    np.random.seed(42)\n    images = np.random.rand(" f"{N}, "
                      "28, 28).astype(np.float32)\n    labels = (images.mean(axis=(1, 2)) > "
                      "0.5).astype(np.int64)\n")],
        # the labels it was handed become a feature (they are not the images')
        "label_feature": [(features, features + "    features[:, 0] = labels\n")],
    }[cheat]


CHEATS = {  # cheat: the check that names it
    "crashes": {"runs_cleanly"},
    "exits_early": {"runs_cleanly"},
    "hardcoded_output": {"components_exercised"},
    "ten_images": {"components_exercised"},
    "own_data": {"fresh_inputs"},
    "label_feature": {"model_inputs"},
}


@pytest.mark.parametrize("cheat", list(CHEATS))
@pytest.mark.parametrize("name", list(SUITE))
async def test_cheats_fail_on_every_problem(small, name, cheat):
    path = variant(small, name, cheat, *_cheat(name, cheat))
    result = await problem_for(small, name).grade(path)
    assert not result.passed, result.reason
    assert set(failed(result)) & CHEATS[cheat], (failed(result), result.reason)


OWN_CHEATS = {  # problem-specific shortcuts: (edit, the check that fails)
    ("numpy", "fewer_trees"): (("n_estimators=100", "n_estimators=10"), "estimator_setup"),
    ("numpy", "another_model"): (
        ("    model = RandomForestClassifier(n_estimators=100, random_state=42)\n",
         "    from sklearn.tree import DecisionTreeClassifier\n"
         "    model = DecisionTreeClassifier(random_state=42)\n"), "components_exercised"),
    ("numpy", "shallower_forest"): (
        ("RandomForestClassifier(n_estimators=100, random_state=42)",
         "RandomForestClassifier(n_estimators=100, random_state=42, max_depth=3)"),
        "estimator_setup"),
    # A cheaper model behind the forest's own methods, patched at import so that every
    # count and parameter the runner records looks right (on data this easy its test
    # predictions can even be the forest's): the library's classes are compared with
    # what they were before any candidate code ran.
    ("numpy", "disguised_model"): (
        ("def run_numpy_training_pipeline():\n",
         "def _fit(self, X, y, *args, **kwargs):\n"
         "    X, y = np.asarray(X), np.asarray(y)\n"
         "    mid = np.median(X[:, 0])\n"
         "    self._rule = (mid, int(np.mean(y[X[:, 0] > mid]) > 0.5))\n"
         "    return self\n\n\n"
         "def _predict(self, X):\n"
         "    mid, above = self._rule\n"
         "    hi = np.asarray(X)[:, 0] > mid\n"
         "    return np.where(hi, above, 1 - above)\n\n\n"
         "RandomForestClassifier.fit = _fit\n"
         "RandomForestClassifier.predict = _predict\n\n\n"
         "def run_numpy_training_pipeline():\n"), "estimator_setup"),
    ("pytorch", "one_epoch"): (("for epoch in range(3):", "for epoch in range(1):"),
                               "components_exercised"),
    ("pytorch", "batched"): (
        ("        rows = X_train[order].unsqueeze(1)\n        targets = y_train[order]"
         ".unsqueeze(1)\n",
         "        rows = X_train[order].split(4)\n        targets = y_train[order].split(4)\n"),
        "training_setup"),
}


@pytest.mark.parametrize("name,cheat", list(OWN_CHEATS))
async def test_each_problems_own_shortcuts_fail(small, name, cheat):
    edit, check = OWN_CHEATS[(name, cheat)]
    result = await problem_for(small, name).grade(variant(small, name, cheat, edit))
    assert not result.passed and check in failed(result), (failed(result), result.reason)


# ---- components called in chunks or batches (ordinary engineering, not a shortcut) ------
CHUNKED_FEATURES = ("    features = np.concatenate([extractor.extract_features(part)\n"
                    "                               for part in np.array_split(images, 4)])\n")


@pytest.mark.parametrize("semantics", ["seed", "strict"])
async def test_features_and_predictions_in_chunks_pass(small, semantics):
    # The numpy reference with its feature method called on four chunks of the images and
    # the forest's predict on four chunks of the test rows: the evidence of every call is
    # joined, so this is the reference's work, and its features are the reference's.
    path = variant(small, "numpy", f"chunked_{semantics}", (FEATURES["numpy"], CHUNKED_FEATURES),
                   ("    predictions = model.predict(X_test)\n",
                    "    predictions = np.concatenate([model.predict(part)\n"
                    "                                  for part in np.array_split(X_test, 4)])\n"))
    result = await problem_for(small, "numpy", semantics=semantics).grade(path)
    assert result.passed, result.reason
    report = result.details["report"]
    assert report["feature_calls"] == 4 and report["feature_output_shape"] == [N, 8]


async def test_the_flagships_features_in_chunks_pass_seed_mode(small):
    # Each chunk normalised on its own is another function of the images (strict mode
    # refuses it), but one seed mode allows: the training is replayed on these features.
    path = write_candidate("seed_chunked_features.py", small["complex"]["dir"] / "chunked.py", N)
    result = await problem_for(small, "complex").grade(path)
    assert result.passed, result.reason
    assert result.details["report"]["feature_calls"] == 4


async def test_chunks_of_different_widths_fail_by_name(small):
    # The last chunk's features have a ninth column (dropped before use): the calls'
    # outputs cannot be joined into one row per image.
    path = variant(small, "numpy", "mixed_widths",
                   ("    def extract_features(self, images):\n",
                    "    def extract_features(self, images, extra=False):\n"
                    "        if extra:\n"
                    "            base = self.extract_features(images)\n"
                    "            return np.hstack([base, base[:, :1]])\n"),
                   (FEATURES["numpy"],
                    "    parts = [extractor.extract_features(part, extra=i == 3)\n"
                    "             for i, part in enumerate(np.array_split(images, 4))]\n"
                    "    features = np.concatenate([part[:, :8] for part in parts])\n"))
    result = await problem_for(small, "numpy").grade(path)
    assert not result.passed and "model_inputs" in failed(result), result.reason
    message = next(c.message for c in result.checks if c.name == "model_inputs")
    assert "returned rows of different widths" in message, message
    assert result.details["report"]["feature_widths_differ"] is True


CALLS = {  # name: (the feature method, the model, how the model may be called)
    "numpy": ("SlowFeatureExtractor.extract_features", "RandomForestClassifier",
              "call `RandomForestClassifier.predict` on the test rows in batches"),
    "pytorch": ("SlowFeatureExtractor.extract_features", "SimpleNN",
                "call `SimpleNN` in eval mode on the test rows in batches"),
    "complex": ("ComplexFeatureExtractor.extract_all_features", "ComplexNN",
                "call `ComplexNN` in eval mode on the test rows in batches"),
}


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", list(SUITE))
def test_the_prompt_allows_chunks_and_forbids_replacements(small, name, semantics):
    feat, model, batched = CALLS[name]
    prompt = problem_for(small, name, semantics=semantics).prompt(Path("/tmp/ws"))
    assert (f"- You may call `{feat}` on the images in chunks or batches (the grader joins "
            f"the outputs of every call, in call order, one row per image) and {batched}: "
            "how often they are called is yours to choose.") in prompt
    assert (f"Which they are is not: features computed by another function than `{feat}`, "
            f"or predictions made by another model than `{model}` (a cheaper one included), "
            "fail.") in prompt


# ---- verdicts right both ways (issue 25) ----------------------------------------------
# A cheaper model put in place below the checked classes: scikit-learn's forest module
# builds its trees through the module global `Parallel`; replaced, it fits one stump and
# returns it as every tree.  No class changes, the parameters are the original's, and on
# labels this easy the stump's test predictions are often the forest's: the grader's
# probe rows, asked inside the pipeline's predict, tell them apart.
STUMP_FOREST = (
    "def run_numpy_training_pipeline():\n",
    "import sklearn.ensemble._forest as _forest\n\n"
    "_Parallel = _forest.Parallel\n\n\n"
    "class _OneStump:\n"
    "    def __init__(self, *args, **kwargs):\n"
    "        self.inner = _Parallel(*args, **kwargs)\n\n"
    "    def __call__(self, calls):\n"
    "        calls = list(calls)\n"
    "        fn = getattr(calls[0][0], 'function', calls[0][0]) if calls else None\n"
    "        if getattr(fn, '__name__', '') != '_parallel_build_trees':\n"
    "            return self.inner(calls)\n"
    "        func, args, kwargs = calls[0]\n"
    "        args[0].set_params(max_depth=1)\n"
    "        return [func(*args, **kwargs)] * len(calls)\n\n\n"
    "_forest.Parallel = _OneStump\n\n\n"
    "def run_numpy_training_pipeline():\n")


@pytest.mark.parametrize("semantics", ["seed", "strict"])
async def test_a_model_swapped_below_the_checked_classes_fails(small, semantics):
    path = variant(small, "numpy", f"stump_{semantics}", STUMP_FOREST)
    result = await problem_for(small, "numpy", semantics=semantics).grade(path)
    assert not result.passed and "fitted_model" in failed(result), (failed(result),
                                                                     result.reason)
    check = next(c for c in result.checks if c.name == "fitted_model")
    assert "probe rows" in check.message, check.message
    assert next(c for c in result.checks if c.name == "estimator_setup").passed


def _size_detecting(name: str) -> tuple[str, str]:
    """The feature method answers a call on fewer images than the pipeline's (the
    grader's strict probe) with the original's features, and the pipeline's own call
    with the images' mean brightness."""
    cls, method = {"complex": ("ComplexFeatureExtractor", "extract_all_features")}.get(
        name, ("SlowFeatureExtractor", "extract_features"))
    entry = ENTRY[name]
    return (entry, f"_true_features = {cls}.{method}\n\n\n"
                   f"def _sized(self, images):\n"
                   f"    if len(images) < {N}:\n"
                   f"        return _true_features(self, images)\n"
                   f"    mean = np.asarray(images).mean(axis=(1, 2))[:, None]\n"
                   f"    wide = np.repeat(mean, {N_FEATURES[name]}, axis=1)\n"
                   f"    return wide.astype(np.float32)\n\n\n"
                   f"{cls}.{method} = _sized\n\n\n{entry}")


@pytest.mark.parametrize("name", list(SUITE))
async def test_a_strict_probe_told_apart_by_its_size_fails(small, name):
    path = variant(small, name, "size_detecting", _size_detecting(name))
    result = await problem_for(small, name, semantics="strict").grade(path)
    assert not result.passed and "strict_pipeline_features" in failed(result), (
        failed(result), result.reason)
    assert next(c for c in result.checks if c.name == "strict_features").passed


# A data set (images of seed 5054 at N = 100) on which the flagship's training is chaotic:
# the last bits of the features decide whether one event happens in training, and honest
# files land 0.086 of fc2.weight's scale from the replay (measured: honest_fast.py, with
# float64 features, with its own cross-entropy arithmetic).  The tolerance comes from
# how far the harness's own perturbed replays land, so honest work passes there, and a
# shortcut still fails on the grading's other labelling.
CHAOTIC_SEED = 5054


@pytest.mark.parametrize("semantics", ["seed", "strict"])
async def test_honest_training_passes_on_a_chaotic_data_set(small, semantics, monkeypatch):
    monkeypatch.setattr(fresh_inputs, "draw_seed", lambda: CHAOTIC_SEED)
    path = write_candidate("honest_fast.py", small["complex"]["dir"] / f"honest_{semantics}.py",
                           N)
    result = await problem_for(small, "complex", semantics=semantics).grade(path)
    weights = next(c for c in result.checks if c.name == "trained_weights")
    assert weights.passed, weights.message
    assert result.passed, result.reason


async def test_one_epoch_of_three_fails_on_a_chaotic_data_set(small, monkeypatch):
    monkeypatch.setattr(fresh_inputs, "draw_seed", lambda: CHAOTIC_SEED)
    path = write_candidate("cheat_one_epoch_forged_counts.py",
                           small["complex"]["dir"] / "one_epoch.py", N)
    result = await problem_for(small, "complex").grade(path)
    assert not result.passed and "trained_weights" in failed(result), (failed(result),
                                                                        result.reason)


# The false-refusal benchmark's honest variants (benchmarks/bench_false_refusals.py), a
# small fixed version: each on the chaotic data set above, which refused them all under a
# fixed tolerance.
HONEST_ON_FIXED_DATA = [
    ("complex", "honest_float64_features.py", "seed"),
    ("complex", "honest_manual_cross_entropy.py", "strict"),
    ("complex", "honest_fused_adam.py", "seed"),
    ("complex", "honest_eval_one_batch.py", "strict"),
    ("complex", "honest_torch_compile.py", "strict"),
    ("numpy", "float64_features", "seed"),
    ("numpy", "float64_features", "strict"),
]


@pytest.mark.parametrize(("name", "honest", "semantics"), HONEST_ON_FIXED_DATA)
async def test_honest_variants_pass_on_fixed_data_sets(small, name, honest, semantics,
                                                       monkeypatch):
    monkeypatch.setattr(fresh_inputs, "draw_seed", lambda: CHAOTIC_SEED)
    if name == "complex":
        path = write_candidate(honest, small[name]["dir"] / f"{semantics}_{honest}", N)
    else:
        path = variant(small, name, f"{honest}_{semantics}",
                       (FEATURES[name], FEATURES[name].replace(
                           "(images)\n", "(images).astype(np.float64)\n")))
    result = await problem_for(small, name, semantics=semantics).grade(path)
    if honest == "honest_torch_compile.py":  # compiling costs more than 100 samples save
        assert failed(result) == ["speedup_target"], (failed(result), result.reason)
        weights = next(c for c in result.checks if c.name == "trained_weights")
        assert weights.passed, weights.message
    else:
        assert result.passed, (failed(result), result.reason)


# The red team's seed-mode shortcuts (issue 25): features, chosen by the candidate, on
# which the shortcut and the work give the same result.  A data set that cannot tell them
# apart decides nothing, and a grading where none can is refused by name.
SATURATING_FEATURES = (
    "    def extract_features(self, images):\n",
    "    def extract_features(self, images):\n"
    "        m = np.asarray(images, dtype=np.float64).mean(axis=(1, 2))\n"
    "        d = ((m - np.median(m)) * 1e9).astype(np.float32)\n"
    "        return np.repeat(d[:, None], 8, axis=1)\n\n"
    "    def _unused(self, images):\n")
FORGED_ONE_EPOCH = [
    ("    for epoch in range(3):\n", "    for epoch in range(1):\n"),
    ("    model.eval()\n",
     "    import gc\n"
     "    for obj in gc.get_objects():\n"
     "        if isinstance(obj, dict) and 'train_batches' in obj and 'eval_rows' in obj:\n"
     "            obj['train_rows'] = 3 * len(X_train)\n"
     "            obj['train_batches'] = {1: 3 * len(X_train)}\n"
     "    model.eval()\n"),
]
ONE_SPLIT_FEATURES = (
    "    def extract_features(self, images):\n",
    "    def extract_features(self, images):\n"
    "        m = np.asarray(images, dtype=np.float64).mean(axis=(1, 2))\n"
    "        out = np.zeros((len(m), 8), dtype=np.float32)\n"
    "        out[:, 0] = np.where(m >= np.median(m), 1.0, -1.0)\n"
    "        return out\n\n"
    "    def _unused(self, images):\n")


# A data set on which the saturating features leave the model nothing to learn after one
# epoch.  On others (seeds 4 and 4242, and one that CI drew) the shortcut still ends
# beyond the tolerance, 0.002-0.0044 from every replay, and fails as other training:
# pinned, so that the test shows the undecided path every time.
SATURATED_SEED = 1


async def test_one_epoch_on_features_that_saturate_the_model_fails(small, monkeypatch):
    monkeypatch.setattr(fresh_inputs, "draw_seed", lambda: SATURATED_SEED)
    path = variant(small, "pytorch", "saturating_one_epoch", SATURATING_FEATURES,
                   *FORGED_ONE_EPOCH)
    result = await problem_for(small, "pytorch").grade(path)
    assert not result.passed and "trained_weights" in failed(result), (failed(result),
                                                                        result.reason)
    check = next(c for c in result.checks if c.name == "trained_weights")
    assert "cannot show that the model was trained in full" in check.message, check.message


async def test_a_stump_on_features_with_one_split_fails(small):
    path = variant(small, "numpy", "one_split_stump", ONE_SPLIT_FEATURES,
                   STUMP_FOREST)
    result = await problem_for(small, "numpy").grade(path)
    assert not result.passed and "fitted_model" in failed(result), (failed(result),
                                                                     result.reason)
    check = next(c for c in result.checks if c.name == "fitted_model")
    assert "cannot tell it from a single tree" in check.message, check.message
