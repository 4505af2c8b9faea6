"""The grader's own computation of the model, and the checks that tie its evidence
together (``problems/ml_training/model_checks.py``).  The gradings that exercise them against
exploit fixtures are in ``tests/test_fresh_inputs.py``."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import SLOW_PIPELINE, make_report, model_evidence

from problems.ml_training import model_checks, training_checks
from problems.ml_training.execution_report import PackedArray, WeightSegment, pack

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
    assert training_checks.same_training(original, original, "Net", 1e-3).passed
    weights = original.eval_weights[-1].weights
    moved = dict(weights, **{"fc2.weight": PackedArray.of(weights["fc2.weight"].array() * 1.01)})
    drifted = replace(original, eval_weights=(WeightSegment(4, moved),))
    check = training_checks.same_training(drifted, original, "Net", 1e-3)
    assert not check.passed and "fc2.weight" in check.message
    assert training_checks.same_training(drifted, original, "Net", 2e-2).passed


def test_replayed_training_is_named_and_features_decide_when_to_replay():
    original = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    check = training_checks.same_training(original, original, "Net", 1e-3, replayed=True)
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


# ---- issue 25: verdicts right both ways -------------------------------------------------
def _weights(report):
    return training_checks.final_weights(report)


def _moved(report, factor):
    weights = report.eval_weights[-1].weights
    moved = dict(weights, **{"fc2.weight": PackedArray.of(weights["fc2.weight"].array()
                                                          * factor)})
    return replace(report, eval_weights=(WeightSegment(4, moved),))


def test_trained_weights_near_any_honest_replay_pass_and_far_from_all_fail():
    original = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    branch = _moved(original, 1.08)  # another branch of a chaotic training, 8 % away
    # no replays: the floor alone
    assert not training_checks.same_training(branch, original, "Net", 1e-3).passed
    # the harness's perturbed replays visited that branch (and the basis's): the
    # candidate is measured from the nearest, and the cloud's own scale is 0
    replays = [_weights(branch), _weights(original), _weights(branch)]
    check = training_checks.same_training(branch, original, "Net", 1e-3, replays=replays)
    assert check.passed and "replays" in check.message, check.message
    # a shortcut lands away from every replay: refused, the replays named
    shortcut = _moved(original, 1.3)
    check = training_checks.same_training(shortcut, original, "Net", 1e-3, replays=replays)
    assert not check.passed and "from the nearest" in check.message, check.message


def test_a_smoothly_spread_cloud_widens_the_tolerance_up_to_its_ceiling():
    original = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    cloud = [_weights(_moved(original, 1 + k * 0.01)) for k in (1, 2, 3)]
    spread = training_checks.honest_spread([_weights(original), *cloud])
    assert spread == pytest.approx(0.01, rel=0.05)
    assert training_checks.training_tolerance(1e-3, spread) == pytest.approx(3 * spread)
    assert training_checks.training_tolerance(1e-3, None) == 1e-3
    assert training_checks.training_tolerance(1e-3, 10.0) == training_checks.SPREAD_CEILING
    near = _moved(original, 0.985)  # 1.5 % from the basis: within 3 x 1 %
    assert training_checks.same_training(near, original, "Net", 1e-3, replays=cloud).passed
    far = _moved(original, 0.9)
    assert not training_checks.same_training(far, original, "Net", 1e-3, replays=cloud).passed


def _probed(votes, digest="ab" * 32, predictions=(0, 1, 1, 0)):
    return make_report(eval_predictions=list(predictions), model_probe_rows=digest,
                       model_probe_votes=pack(np.asarray(votes, dtype=np.float64)))


def test_a_forest_is_judged_on_the_graders_probe_rows_too():
    forest = [[0.7, 0.3], [0.46, 0.54], [0.2, 0.8], [0.51, 0.49]]
    original = _probed(forest)
    check = training_checks.same_predictions(_probed(forest), original, "Forest")
    assert check.passed and "probe rows" in check.message
    # the same test predictions from a cheaper model: its votes on the probe rows differ
    stump = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    check = training_checks.same_predictions(_probed(stump), original, "Forest")
    assert not check.passed and "4 of 4 of the grader's probe rows" in check.message
    # fitted on other rows: the probe rows drawn from them differ
    check = training_checks.same_predictions(_probed(forest, digest="cd" * 32), original,
                                          "Forest")
    assert not check.passed and "fitted on other rows" in check.message
    # never asked (no predict after a fit, or the estimator raised)
    asked = make_report(eval_predictions=[0, 1, 1, 0], model_probe_error="TypeError: no")
    check = training_checks.same_predictions(asked, original, "Forest")
    assert not check.passed and "TypeError: no" in check.message
    # different test predictions: named, and the probe's verdict added
    check = training_checks.same_predictions(_probed(stump, predictions=(1, 1, 1, 0)),
                                          original, "Forest")
    assert not check.passed and "1 of 4 test rows" in check.message
    assert "probe rows" in check.message


def test_strict_mode_checks_the_pipelines_own_features_and_outputs():
    original = make_report(**model_evidence(TEST_ROWS, [2, 7, 1, 9], 6))
    check = model_checks.pipeline_features(original, original, "F", 1e-4, 1e-5)
    assert check.passed
    other = replace(original, features=PackedArray.of(original.features.array() * 0.5))
    check = model_checks.pipeline_features(other, original, "F", 1e-4, 1e-5)
    assert not check.passed and "timed run" in check.message
    # the eval outputs: the grader's forward of the recorded weights and inputs
    weights = {k: v.array() for k, v in original.eval_weights[-1].weights.items()}
    logits = model_checks.complex_nn_forward(weights, original.eval_inputs.array())
    honest = replace(original, eval_logits=PackedArray.of(logits))
    assert model_checks.pipeline_logits(honest, model_checks.complex_nn_forward, "Net",
                                        1e-4, 1e-5).passed
    forged = replace(original, eval_logits=PackedArray.of(logits + 0.01))
    check = model_checks.pipeline_logits(forged, model_checks.complex_nn_forward, "Net",
                                         1e-4, 1e-5)
    assert not check.passed and "not the original's function" in check.message
    unrecorded = replace(original, eval_logits=None)
    check = model_checks.pipeline_logits(unrecorded, model_checks.complex_nn_forward, "Net",
                                         1e-4, 1e-5)
    assert not check.passed and "could not be checked" in check.message
