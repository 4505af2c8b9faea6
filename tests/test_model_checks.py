"""The grader's own computation of the model, and the checks that tie its evidence
together (``problems/model_checks.py``).  The gradings that exercise them against
exploit fixtures are in ``tests/test_fresh_inputs.py``."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import SLOW_PIPELINE, make_report, model_evidence

from problems import model_checks
from problems.execution_report import PackedArray, WeightSegment, pack

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
    report = make_report(eval_predictions=[2, 7, 1, 9],
                         **model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert check.passed and mine == [2, 7, 1, 9]
    report = replace(report, eval_predictions=(2, 7, 1, 0))  # one row answered otherwise
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert not check.passed and "25.0%" in check.message
    assert mine == [2, 7, 1, 9]  # what is scored: the model's own predictions


# (evidence the runner's format cannot hold, an array of the wrong size or weights that
# are not a list, is refused earlier, by the parse: tests/test_execution_report.py)
@pytest.mark.parametrize("broken", [
    {"eval_inputs": None},
    {"eval_weights": []},
    {"eval_weights": [{"rows": 4, "weights": {"fc1.weight": pack(np.zeros((128, 13)))}}]},
    {"eval_weights": [{"rows": 3, "weights": {}}]},
], ids=["no_inputs", "no_weights", "missing_layer", "rows_short"])
def test_unreadable_evidence_fails_the_check_with_a_reason(broken):
    evidence = {**model_evidence(TEST_ROWS, [0] * 4, 6), **broken}
    report = make_report(eval_predictions=[0] * 4,
                         **{k: v for k, v in evidence.items() if v is not None})
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert not check.passed and mine is None
    assert "could not compute" in check.message


def test_weights_giving_one_logit_per_row_fail_the_check():
    # A 1-D last layer makes the forward pass return one number per row: its argmax
    # was a scalar, and joining those raised in the harness.
    report = make_report(eval_predictions=[0] * 4, **model_evidence(TEST_ROWS, [0] * 4, 6))
    weights = dict(report.eval_weights[0].weights, **{
        "fc3.weight": PackedArray.of(np.ones(64)), "fc3.bias": PackedArray.of(np.zeros(()))})
    report = replace(report, eval_weights=(WeightSegment(4, weights),))
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert not check.passed and mine is None
    assert "do not fit the original's architecture" in check.message


def test_eval_inputs_must_be_the_features_of_the_test_rows():
    report = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    assert model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net").passed
    inputs = report.eval_inputs.array()
    noisy = inputs + np.random.RandomState(0).normal(0, 0.01, inputs.shape)
    # the pipeline's noise and clip
    report = replace(report, eval_inputs=PackedArray.of(np.clip(noisy, 0, 1)))
    assert model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net").passed
    report = replace(report, eval_inputs=PackedArray.of(inputs[::-1]))  # another order
    check = model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net")
    assert not check.passed and "not F's features" in check.message
    features = report.features.array()
    features[TEST_ROWS[0], 0] = 3.0  # clipped to 1 on its way into the model: allowed
    report = replace(report, features=PackedArray.of(features),
                     eval_inputs=PackedArray.of(np.clip(features[TEST_ROWS], 0, 1)))
    assert model_checks.inputs_are_features(report, TEST_ROWS, "F", "Net").passed


def test_features_must_not_depend_on_the_labels():
    same = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    other = make_report(**model_evidence(TEST_ROWS, [3, 7, 1, 9], 6))
    check = model_checks.features_from_images([(5, 0, same), (5, 1, same)], "F")
    assert check.passed and "different labels" in check.message
    check = model_checks.features_from_images([(5, 0, same), (5, 1, other)], "F")
    assert not check.passed and "images alone" in check.message
    check = model_checks.features_from_images([(5, 0, same), (5, 0, other)], "F")
    assert not check.passed and "same data" in check.message
    assert model_checks.features_from_images([(5, 0, same), (6, 0, other)], "F").skipped


def test_trained_weights_are_compared_tensor_by_tensor():
    original = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    assert model_checks.same_training(original, original, "Net", 1e-3).passed
    weights = original.eval_weights[-1].weights
    moved = dict(weights, **{"fc2.weight": PackedArray.of(weights["fc2.weight"].array() * 1.01)})
    drifted = replace(original, eval_weights=(WeightSegment(4, moved),))
    check = model_checks.same_training(drifted, original, "Net", 1e-3)
    assert not check.passed and "fc2.weight" in check.message
    assert model_checks.same_training(drifted, original, "Net", 2e-2).passed


def test_replayed_training_is_named_and_features_decide_when_to_replay():
    original = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    check = model_checks.same_training(original, original, "Net", 1e-3, replayed=True)
    assert check.passed and "replayed on its own features" in check.message
    assert model_checks.same_features(original, original)
    features = original.features.array()
    nudged = replace(original, features=PackedArray.of(features + 1e-3))
    assert not model_checks.same_features(nudged, original)
    assert not model_checks.same_features(make_report(), original)
    # The last bits of one feature: the same within tolerance, but not exactly (and
    # only exactly the same features may be held to the oracle's own trained weights).
    last_bit = features.astype(np.float32)
    largest = int(np.argmax(np.abs(last_bit)))
    last_bit.flat[largest] = np.nextafter(last_bit.flat[largest], np.float32(np.inf))
    tiny = replace(original, features=PackedArray.of(last_bit))
    assert model_checks.same_features(tiny, original)
    assert not model_checks.same_features(tiny, original, exact=True)
    assert model_checks.same_features(original, original, exact=True)


SHAPES = {"fc1.weight": (128, 13), "fc1.bias": (128,), "fc2.weight": (64, 128),
          "fc2.bias": (64,), "fc3.weight": (10, 64), "fc3.bias": (10,)}


@pytest.mark.parametrize("forged", ["wide_layer", "wide_inputs", "too_many_rows"])
def test_a_forged_architecture_is_refused_before_any_arithmetic(forged, monkeypatch):
    # A report the parse accepts (each array within its bound) but whose shapes would
    # make the harness's own forward pass multiply huge matrices (the red team's
    # 671 GiB): refused by shape, the forward never called.
    rows, width, hidden = 4, 13, 128
    if forged == "wide_inputs":
        width = 1
    elif forged == "too_many_rows":
        rows = 5000
    if forged == "wide_layer":
        hidden = 40_000
    inputs = np.zeros((rows, width), dtype=np.float32)
    weights = {"fc1.weight": pack(np.zeros((hidden, width))), "fc1.bias": pack(np.zeros(hidden))}
    report = make_report(eval_predictions=[0] * rows, eval_inputs=pack(inputs),
                         eval_weights=[{"rows": rows, "weights": weights}])

    def never(*_: object) -> None:
        raise AssertionError("the forward pass ran on a forged architecture")

    check, mine = model_checks.model_outputs(report, never, "Net", shapes=SHAPES, width=13,
                                             max_rows=TEST_ROWS.__len__() * 100)
    assert not check.passed and mine is None
    assert "could not compute" in check.message
