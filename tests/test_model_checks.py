"""The grader's own computation of the model, and the checks that tie its evidence
together (``problems/model_checks.py``).  The gradings that exercise them against
exploit fixtures are in ``tests/test_fresh_inputs.py``."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from conftest import SLOW_PIPELINE, model_evidence

from problems import model_checks
from problems.model_checks import pack

TEST_ROWS = [3, 1, 4, 0]


def _original_module():
    spec = importlib.util.spec_from_file_location("slow_original", SLOW_PIPELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_graders_forward_is_the_originals_model():
    # The original's ComplexNN in eval mode, with random weights, on inputs that reach
    # both branches of its activation: the numpy function gives the same logits.
    torch.manual_seed(3)
    net = _original_module().ComplexNN(input_size=13, hidden_size=128, num_classes=10).eval()
    x = torch.empty(16, 13).uniform_(-2.0, 2.0)
    with torch.no_grad():
        want = net(x).double().numpy()
    weights = {k: v.double().numpy() for k, v in net.state_dict().items()}
    have = model_checks.complex_nn_forward(weights, x.double().numpy())
    assert np.allclose(have, want, rtol=1e-5, atol=1e-6)


def test_predictions_are_recomputed_from_the_weights():
    report = {"eval_predictions": [2, 7, 1, 9], **model_evidence(TEST_ROWS, [2, 7, 1, 9], 6)}
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert check.passed and mine == [2, 7, 1, 9]
    report["eval_predictions"] = [2, 7, 1, 0]  # one row answered by other means
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert not check.passed and "25.0%" in check.message
    assert mine == [2, 7, 1, 9]  # what is scored: the model's own predictions


@pytest.mark.parametrize("broken", [
    {"eval_inputs": None},
    {"eval_inputs": {"shape": [4, 13], "b64": "not base64!"}},
    {"eval_inputs": {"shape": [999, 13], "b64": pack(np.zeros((4, 13)))["b64"]}},
    {"eval_weights": []},
    {"eval_weights": [{"rows": 4, "weights": {"fc1.weight": pack(np.zeros((128, 13)))}}]},
    {"eval_weights": [{"rows": 3, "weights": {}}]},
    {"eval_weights": "junk"},
])
def test_unreadable_evidence_fails_the_check_with_a_reason(broken):
    report = {"eval_predictions": [0] * 4, **model_evidence(TEST_ROWS, [0] * 4, 6), **broken}
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert not check.passed and mine is None
    assert "could not compute" in check.message


def test_eval_inputs_must_be_the_features_of_the_test_rows():
    report = model_evidence(TEST_ROWS, [2, 7, 1, 9], 6)
    assert model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net").passed
    inputs = model_checks.unpack(report["eval_inputs"], "x")
    noisy = inputs + np.random.RandomState(0).normal(0, 0.01, inputs.shape)
    report["eval_inputs"] = pack(np.clip(noisy, 0, 1))  # the pipeline's noise and clip
    assert model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net").passed
    report["eval_inputs"] = pack(inputs[::-1])  # another order
    check = model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net")
    assert not check.passed and "not F's features" in check.message
    features = model_checks.unpack(report["features"], "f")
    features[TEST_ROWS[0], 0] = 3.0  # clipped to 1 on its way into the model: allowed
    report |= {"features": pack(features), "eval_inputs": pack(
        np.clip(features[TEST_ROWS], 0, 1))}
    assert model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net").passed


def test_features_must_not_depend_on_the_labels():
    same = model_evidence(TEST_ROWS, [2, 7, 1, 9], 6)
    other = model_evidence(TEST_ROWS, [3, 7, 1, 9], 6)
    check = model_checks.features_from_images([(5, 0, same), (5, 1, same)], "F")
    assert check.passed and "different labels" in check.message
    check = model_checks.features_from_images([(5, 0, same), (5, 1, other)], "F")
    assert not check.passed and "images alone" in check.message
    check = model_checks.features_from_images([(5, 0, same), (5, 0, other)], "F")
    assert not check.passed and "same data" in check.message
    assert model_checks.features_from_images([(5, 0, same), (6, 0, other)], "F").skipped


def test_trained_weights_are_compared_tensor_by_tensor():
    original = model_evidence(TEST_ROWS, [2, 7, 1, 9], 6)
    assert model_checks.same_training(original, original, "Net", 1e-3).passed
    weights = original["eval_weights"][-1]["weights"]
    moved = dict(weights, **{"fc2.weight": pack(
        model_checks.unpack(weights["fc2.weight"], "w") * 1.01)})
    drifted = dict(original, eval_weights=[{"rows": 4, "weights": moved}])
    check = model_checks.same_training(drifted, original, "Net", 1e-3)
    assert not check.passed and "fc2.weight" in check.message
    assert model_checks.same_training(drifted, original, "Net", 2e-2).passed


def test_replayed_training_is_named_and_features_decide_when_to_replay():
    original = model_evidence(TEST_ROWS, [2, 7, 1, 9], 6)
    check = model_checks.same_training(original, original, "Net", 1e-3, replayed=True)
    assert check.passed and "replayed on its own features" in check.message
    assert model_checks.same_features(original, original)
    features = model_checks.unpack(original["features"], "f")
    nudged = dict(original, features=pack(features + 1e-3))
    assert not model_checks.same_features(nudged, original)
    assert not model_checks.same_features({}, original)
    # The last bits of one feature: the same within tolerance, but not exactly (and
    # only exactly the same features may be held to the oracle's own trained weights).
    last_bit = features.astype(np.float32)
    largest = int(np.argmax(np.abs(last_bit)))
    last_bit.flat[largest] = np.nextafter(last_bit.flat[largest], np.float32(np.inf))
    tiny = dict(original, features=pack(last_bit))
    assert model_checks.same_features(tiny, original)
    assert not model_checks.same_features(tiny, original, exact=True)
    assert model_checks.same_features(original, original, exact=True)
