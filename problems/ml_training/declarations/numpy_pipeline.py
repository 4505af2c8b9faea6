"""The NumPy problem: a pipeline whose eight features are Python loops over every pixel,
with a scikit-learn random forest as its model (the seed's ``MLTrainingOptimizationNumPy``).

It is graded by the ML-training grader (``problems.ml_training``) from this
declaration: the slow file, its reference solution (the strict tier), the names it must
keep, the output contract, the probes the runner watches and how its data is drawn and
split.  Labels are learnable (the brightness half of each image, under a secret class
order per data set: ``fresh_inputs``) and the accuracy tolerance is the seed's
0.01.
"""

from __future__ import annotations

from pathlib import Path

from problems.ml_training import fresh_inputs, probes
from problems.ml_training.runtime_checks import ACCURACY_RE
from problems.ml_training.spec import PROBLEM_DATA, REFERENCE_DIR, TaskSpec

N_SAMPLES = 1000
PARAMS = {"n_estimators": 100, "random_state": 42}
RECIPE = fresh_inputs.Recipe(n_classes=2, label_draw=None, split="sklearn")


def numpy_spec(baseline: Path = PROBLEM_DATA / "slow_ml_training_numpy.py",
               n_samples: int = N_SAMPLES,
               reference: Path = REFERENCE_DIR / "numpy_reference.py") -> TaskSpec:
    """The problem's contract; tests use it with scaled-down copies (``n_samples``)."""
    n_test = len(RECIPE.test_rows(None, n_samples))
    n_train = n_samples - n_test
    return TaskSpec(
        name="numpy",
        summary=("per-pixel NumPy feature loops and a scikit-learn random forest (1,000 "
                 "images): make it fast with the same accuracy (within 0.01)"),
        baseline=baseline,
        required_imports=("numpy", "sklearn.ensemble", "sklearn.model_selection"),
        required_classes=("SlowFeatureExtractor",),
        entry="run_numpy_training_pipeline",
        output_patterns=(rf"Feature shape: \({n_samples}, 8\)",
                         rf"Training set size: {n_train}", rf"Test set size: {n_test}",
                         ACCURACY_RE.pattern),
        probes=(
            probes.DataFunction("generate_synthetic_data", label_draw=None, seeds_torch=False),
            probes.RowsThrough("SlowFeatureExtractor", "extract_features", n_samples),
            probes.Estimator("sklearn.ensemble", "RandomForestClassifier", fit_rows=n_train,
                             predict_rows=n_test, params=PARAMS),
            probes.EvalPredictions("RandomForestClassifier", n_test),
        ),
        reference=reference,
        n_samples=n_samples,
        recipe=RECIPE,
        preload=("sklearn.model_selection",),
        optimized_name="optimized_numpy_training.py",
        default_target="0.7*strict",
        accuracy_tolerance=0.01,
        training="a RandomForestClassifier(n_estimators=100, random_state=42)",
    )


NUMPY_SPEC = numpy_spec()
