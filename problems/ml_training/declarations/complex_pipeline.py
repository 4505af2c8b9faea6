"""The flagship: the slow complex pipeline (``problem_data/slow_ml_training_complex.py``).

Per-pixel and per-quadrant feature loops over 3,000 images, a per-column normalisation
written as loops, and a small network (``ComplexNN``) trained on batches of 8 for three
epochs.  Its tiers are the ``vectorized`` solution (the default target: what every seed
run achieved) and the strict reference.  Graded by ``problems.ml_training`` from this
declaration alone.
"""

from __future__ import annotations

from pathlib import Path

from problems.ml_training import fresh_inputs, model_checks, probes
from problems.ml_training.runtime_checks import ACCURACY_RE
from problems.ml_training.spec import PROBLEM_DATA, REFERENCE_DIR, TaskSpec, training_batches


def complex_spec(baseline: Path = PROBLEM_DATA / "slow_ml_training_complex.py",
                 n_samples: int = 3000,
                 reference: Path = REFERENCE_DIR / "ml_training_reference.py",
                 vectorized: Path | None = REFERENCE_DIR / "ml_training_vectorized.py"
                 ) -> TaskSpec:
    """The flagship's contract; tests use it with scaled-down copies (``n_samples``), and
    without the ``vectorized`` tier unless they scale that too."""
    if n_samples != 3000 and vectorized == REFERENCE_DIR / "ml_training_vectorized.py":
        vectorized = None  # the full-size tier cannot calibrate a scaled-down problem
    n_train = int(0.8 * n_samples)
    n_test = n_samples - n_train
    epochs, batch_size = 3, 8
    hidden, n_classes = 128, fresh_inputs.N_CLASSES
    return TaskSpec(
        name="complex",
        summary=("the flagship: make a slow PyTorch/NumPy training pipeline (3,000 images) "
                 "much faster with the same model quality"),
        baseline=baseline,
        required_imports=("torch", "torch.nn", "numpy"),
        required_classes=("ComplexNN", "ComplexFeatureExtractor"),
        entry="run_complex_training_pipeline",
        output_patterns=(rf"Feature shape: \({n_samples}, 13\)",
                         rf"Training set size: {n_train}",
                         rf"Test set size: {n_test}", ACCURACY_RE.pattern),
        probes=(
            probes.DataFunction("generate_synthetic_data", label_draw=n_classes),
            probes.RowsThrough("ComplexFeatureExtractor", "extract_all_features", n_samples),
            probes.TorchModule(
                "ComplexNN", train_rows=epochs * n_train, eval_rows=n_test,
                batches=training_batches(n_train, epochs, batch_size),
                forward=model_checks.complex_nn_forward, inputs=13,
                init={"input_size": 13, "hidden_size": hidden, "num_classes": n_classes},
                weights={"fc1.weight": (hidden, 13), "fc1.bias": (hidden,),
                         "fc2.weight": (64, hidden), "fc2.bias": (64,),
                         "fc3.weight": (n_classes, 64), "fc3.bias": (n_classes,)},
                submodules={"activation": hidden}),
            probes.EvalPredictions("ComplexNN", n_test),
        ),
        reference=reference,
        n_samples=n_samples,
        extra_tiers=(("vectorized", vectorized),) if vectorized is not None else (),
        training=(f"{epochs} epochs of optimiser steps on batches of {batch_size} (shuffle, "
                  "noise, initial weights and dropout drawn as the original draws them)"),
    )


COMPLEX_SPEC = complex_spec()
