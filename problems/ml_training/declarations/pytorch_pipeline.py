"""The PyTorch problem: per-pixel and per-quadrant feature loops, a per-column
normalisation written as loops, and a small network trained one sample at a time (the
seed's ``MLTrainingOptimizationPyTorch``).

It is graded by the ML-training grader (``problems.ml_training``) from this
declaration: the slow file, its reference solution (the strict tier), the names it must
keep, the output contract, the probes the runner watches and how its data is drawn and
split.  Labels are learnable (the brightness half of each image, under a secret class
order per data set: ``fresh_inputs``) and the accuracy tolerance is the seed's
0.02.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from problems.ml_training import fresh_inputs, probes
from problems.ml_training.runtime_checks import ACCURACY_RE
from problems.ml_training.spec import PROBLEM_DATA, REFERENCE_DIR, TaskSpec, training_batches

N_SAMPLES = 2000
EPOCHS = 3
HIDDEN = 32
N_FEATURES = 8
RECIPE = fresh_inputs.Recipe(n_classes=2, label_draw=None)


def simple_nn_forward(w: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """``SimpleNN`` in eval mode: fc1, ReLU, fc2."""
    h = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0.0)
    return h @ w["fc2.weight"].T + w["fc2.bias"]


def pytorch_spec(baseline: Path = PROBLEM_DATA / "slow_ml_training_pytorch.py",
                 n_samples: int = N_SAMPLES,
                 reference: Path = REFERENCE_DIR / "pytorch_reference.py") -> TaskSpec:
    """The problem's contract; tests use it with scaled-down copies (``n_samples``)."""
    n_train = int(0.8 * n_samples)
    n_test = n_samples - n_train
    return TaskSpec(
        name="pytorch",
        summary=("per-pixel PyTorch feature loops, a looped normalisation and a network "
                 "trained one sample at a time (2,000 images): make it fast, same accuracy"),
        baseline=baseline,
        required_imports=("torch", "torch.nn", "numpy"),
        required_classes=("SimpleNN", "SlowFeatureExtractor"),
        entry="run_pytorch_training_pipeline",
        output_patterns=(rf"Feature shape: \({n_samples}, {N_FEATURES}\)",
                         rf"Training set size: {n_train}", rf"Test set size: {n_test}",
                         ACCURACY_RE.pattern),
        probes=(
            probes.DataFunction("generate_synthetic_data", label_draw=None),
            probes.RowsThrough("SlowFeatureExtractor", "extract_features", n_samples),
            probes.TorchModule(
                "SimpleNN", train_rows=EPOCHS * n_train, eval_rows=n_test,
                batches=training_batches(n_train, EPOCHS, 1), forward=simple_nn_forward,
                inputs=N_FEATURES,
                init={"input_size": N_FEATURES, "hidden_size": HIDDEN, "num_classes": 2},
                weights={"fc1.weight": (HIDDEN, N_FEATURES), "fc1.bias": (HIDDEN,),
                         "fc2.weight": (2, HIDDEN), "fc2.bias": (2,)}),
            probes.EvalPredictions("SimpleNN", n_test),
        ),
        reference=reference,
        n_samples=n_samples,
        recipe=RECIPE,
        optimized_name="optimized_pytorch_training.py",
        default_target="0.7*strict",
        accuracy_tolerance=0.02,
        training=(f"{EPOCHS} epochs of Adam steps on one sample at a time, in the order "
                  "each epoch's permutation draws (initial weights drawn as the original "
                  "draws them)"),
    )


PYTORCH_SPEC = pytorch_spec()
