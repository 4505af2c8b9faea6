"""Shared fixtures: every test writes into tmp_path, never into the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from candidates.variants import scaled_text

ROOT = Path(__file__).resolve().parent.parent
SLOW_PIPELINE = ROOT / "problem_data" / "slow_ml_training_complex.py"
REFERENCE = ROOT / "problems" / "ml_training" / "reference" / "ml_training_reference.py"
VECTORIZED = REFERENCE.parent / "ml_training_vectorized.py"


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Point the measurement cache and --save's directory at tmp_path (a subprocess
    inherits them)."""
    monkeypatch.setenv("HELLO_PY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HELLO_PY_SAVED_OUTPUTS", str(tmp_path / "saved_outputs"))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def scaled_copy(source: Path, dest: Path, n_samples: int) -> Path:
    """A copy of a pipeline file whose data set has ``n_samples`` samples."""
    dest.write_text(scaled_text(source.read_text(), n_samples, source))
    return dest


@pytest.fixture(scope="session")
def small_pipelines(tmp_path_factory) -> dict[str, Path]:
    """Slow baseline and reference solution scaled down to 100 samples."""
    d = tmp_path_factory.mktemp("pipelines")
    out = {"baseline": scaled_copy(SLOW_PIPELINE, d / "slow_small.py", 100)}
    if REFERENCE.exists():
        out["reference"] = scaled_copy(REFERENCE, d / "reference_small.py", 100)
    return out


def model_evidence(test_rows: list[int], predictions: list[int], n_samples: int = 100,
                   n_features: int = 13) -> dict:
    """What an execution records of its model (``model_checks``), for a model
    built to give ``predictions``: one-hot features on the test rows, and weights that
    read them (the harness's own computation of the model then gives those predictions)."""
    import numpy as np

    from problems.ml_training.execution_report import pack

    features = np.full((n_samples, n_features), 0.5, dtype=np.float32)
    features[test_rows] = 0.0
    features[test_rows, predictions] = 1.0
    weights = {}
    for name, shape in (("fc1", (128, n_features)), ("fc2", (64, 128)), ("fc3", (10, 64))):
        w = np.zeros(shape, dtype=np.float32)
        w[:10, :10] = 5.0 * np.eye(10)
        weights |= {f"{name}.weight": pack(w), f"{name}.bias": pack(np.zeros(shape[0]))}
    from problems.ml_training.model_checks import complex_nn_forward

    logits = complex_nn_forward({k: np.frombuffer(__import__("base64").b64decode(v["b64"]),
                                                  dtype=np.float32).reshape(v["shape"])
                                 for k, v in weights.items()}, features[test_rows])
    return {"features": pack(features), "eval_inputs": pack(features[test_rows]),
            "eval_logits": pack(logits),
            "eval_weights": [{"rows": len(test_rows), "weights": weights}]}


def make_report(**fields):
    """An ``ExecutionReport`` parsed as the harness parses the runner's: ``fields`` (in
    the runner's JSON form, e.g. ``model_evidence(...)``) over an execution that did
    nothing."""
    from problems.ml_training.execution_report import ExecutionReport, parse_report

    return parse_report({**ExecutionReport().to_json(), **fields})
