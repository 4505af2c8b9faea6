"""What the trained model predicts, computed by the harness from the model itself.

The execution reports the model's eval-mode predictions, and beside them the evidence
they came from: the inputs the model was called on in eval mode, the weights it had,
and the output of the feature extractor (``problems/timing_runner.py``, parsed by
``problems.execution_report``).  All of it is the candidate's to forge, so none of it is
believed alone.  Instead the pieces must fit:

- :func:`model_outputs`: the predictions are what the task's own model function (the
  original's architecture, in numpy here) gives with those weights on those inputs.
  The accuracy the grader scores is of *these* predictions, never of the reported ones,
  so an eval pass that answers rows by other means scores nothing for it;
- :func:`inputs_are_features`: those inputs are the extracted features of the test
  images (up to the pipeline's noise and clip), so they cannot be made up;
- :func:`features_from_images`: executions on the same images, under different labels,
  extracted the same features, so the labels cannot have been fed into them;
- :func:`same_training`: the weights are what the original's training, from the same
  random draws, makes of those features (the oracle's run, or a replay on the
  candidate's own features), so they were trained, fully, not made some other way.

To pass, a candidate must then hand the grader weights that, on features computed
from the images alone, predict labels it never saw: a trained model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from problem import Check
from problems.execution_report import ExecutionReport, PackedArray

Forward = Callable[[Mapping[str, np.ndarray], np.ndarray], np.ndarray]
MIN_AGREEMENT = 0.99  # of rows: float32 against float64 can flip an exact near-tie
INPUT_TOLERANCE = 0.08  # the pipeline's noise has std 0.01: 8 standard deviations


class EvidenceError(ValueError):
    """The execution's evidence is missing or malformed."""


def unpack(packed: PackedArray | None, what: str) -> np.ndarray:
    """An array the execution recorded, as float64 (EvidenceError when there is none)."""
    if packed is None:
        raise EvidenceError(f"the execution has no record of {what}")
    return packed.array()


def recorded_features(report: ExecutionReport | None, feature: str) -> np.ndarray:
    """The extractor's outputs, every call's joined in call order (EvidenceError when
    there are none, or when its calls returned rows of different widths)."""
    if report is not None and report.feature_widths_differ:
        raise EvidenceError(f"{feature} returned rows of different widths in its calls "
                            "(the feature method must give every image the same number "
                            "of features)")
    return unpack(report.features if report else None, f"{feature}'s output")


def complex_nn_forward(w: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The flagship's ``ComplexNN`` in eval mode (dropout off): fc1, the custom
    activation (0.9x + 0.1 tanh x above 0, 0.5 tanh x otherwise), fc2, ReLU, fc3."""
    h = x @ w["fc1.weight"].T + w["fc1.bias"]
    h = np.where(h > 0, 0.9 * h + 0.1 * np.tanh(h), 0.5 * np.tanh(h))
    h = np.maximum(h @ w["fc2.weight"].T + w["fc2.bias"], 0.0)
    return h @ w["fc3.weight"].T + w["fc3.bias"]


def recompute(report: ExecutionReport, forward: Forward,
              shapes: Mapping[str, tuple[int, ...]] | None = None,
              width: int | None = None, max_rows: int | None = None) -> np.ndarray:
    """The predictions of the reported weights on the reported eval inputs (rows x
    width, as the parse guarantees).  ``shapes`` (the original's parameters), ``width``
    (its input's) and ``max_rows`` (the most the runner keeps) are checked before any
    arithmetic: a forged report must not make the harness multiply matrices of the
    candidate's choosing."""
    inputs = unpack(report.eval_inputs, "the model's eval inputs")
    if not report.eval_weights:
        raise EvidenceError("the execution recorded no weights for its eval-mode calls")
    if max_rows is not None and len(inputs) > max_rows:
        raise EvidenceError(f"{len(inputs)} eval rows were recorded; the runner keeps at "
                            f"most {max_rows}")
    if width is not None and inputs.shape[1:] != (width,):
        raise EvidenceError(f"the model's eval inputs are {list(inputs.shape[1:])} wide, "
                            f"not the original's {width}")
    predictions, start = [], 0
    for segment in report.eval_weights:
        rows = segment.rows
        for name, shape in (shapes or {}).items():
            have = segment.weights.get(name)
            if have is not None and tuple(have.shape) != tuple(shape):
                raise EvidenceError(f"the model's {name} has shape {list(have.shape)}, not "
                                    f"the original's {list(shape)}: keep the original's "
                                    "architecture")
        weights = {k: v.array() for k, v in segment.weights.items()
                   if shapes is None or k in shapes}
        if rows <= 0 or start + rows > len(inputs):
            raise EvidenceError("the recorded weights do not cover the eval inputs")
        try:
            with np.errstate(all="ignore"):
                logits = np.asarray(forward(weights, inputs[start:start + rows]))
            if logits.shape[:1] != (rows,) or logits.ndim != 2:
                raise ValueError(f"logits of shape {list(logits.shape)} for {rows} rows")
        except KeyError as exc:
            raise EvidenceError(f"the model has no parameter {exc}: keep the original's "
                                "layers and their names") from exc
        except ValueError as exc:
            raise EvidenceError(f"the model's weights do not fit the original's "
                                f"architecture ({exc})") from exc
        predictions.append(logits.argmax(axis=-1))
        start += rows
    if start != len(inputs):
        raise EvidenceError("the recorded weights do not cover the eval inputs")
    return np.concatenate(predictions)


def model_outputs(report: ExecutionReport | None, forward: Forward, model: str,
                  shapes: Mapping[str, tuple[int, ...]] | None = None,
                  width: int | None = None, max_rows: int | None = None
                  ) -> tuple[Check, list[int] | None]:
    """The check, and the predictions the harness computed (None when it could not).
    ``shapes``, ``width``, ``max_rows``: the original's, checked first (see
    :func:`recompute`)."""
    name = "model_outputs"
    report = report if report is not None else ExecutionReport()
    try:
        mine = recompute(report, forward, shapes, width, max_rows)
    except EvidenceError as exc:
        return Check(name, False, f"the grader could not compute {model}'s predictions "
                                  f"itself: {exc}"), None
    reported = report.eval_predictions
    if len(reported) != len(mine):
        return Check(name, False, f"{model} was called in eval mode on {len(mine)} recorded "
                                  f"rows but {len(reported)} predictions were recorded"), None
    agree = float(np.mean(mine == np.asarray(reported)))
    if agree < MIN_AGREEMENT:
        return Check(name, False,
                     f"the eval-mode predictions are not {model}'s: on {1 - agree:.1%} of the "
                     "test rows they differ from what its weights give on its inputs "
                     "(the grader computes the model itself)"), mine.tolist()
    return Check(name, True, f"the predictions are what {model}'s weights give on its inputs "
                             f"({agree:.1%} of rows, computed by the grader)"), mine.tolist()


def inputs_are_features(report: ExecutionReport | None, test_rows: list[int],
                        feature: str, model: str) -> Check:
    """The model's eval inputs are the extractor's features of the test rows, in order,
    up to the pipeline's noise (std 0.01) and its clip to [0, 1]."""
    name = "model_inputs"
    report = report if report is not None else ExecutionReport()
    try:
        inputs = unpack(report.eval_inputs, "the model's eval inputs")
        features = recorded_features(report, feature)
    except EvidenceError as exc:
        return Check(name, False, str(exc))
    if features.ndim != 2 or max(test_rows) >= len(features):
        return Check(name, False, f"{feature} returned shape {list(features.shape)}: not "
                                  "one row of features per image")
    want = features[test_rows]
    if inputs.shape != want.shape:
        return Check(name, False, f"{model} was evaluated on inputs of shape "
                                  f"{list(inputs.shape)}; the test rows' features have shape "
                                  f"{list(want.shape)}")
    gap = np.minimum(np.abs(inputs - want), np.abs(inputs - np.clip(want, 0.0, 1.0)))
    worst = float(np.nanmax(gap)) if gap.size else 0.0
    if not np.isfinite(gap).all() or worst > INPUT_TOLERANCE:
        return Check(name, False, f"{model} was evaluated on inputs that are not {feature}'s "
                                  "features of the test images (an element differs by "
                                  f"{worst:.3g}; the pipeline's noise allows {INPUT_TOLERANCE})")
    return Check(name, True, f"{model} was evaluated on the test images' features "
                             f"(within {worst:.3g})")


def features_from_images(reports: list[tuple[int, int, ExecutionReport | None]],
                         feature: str) -> Check:
    """``reports`` are (image seed, labelling, report): the features of the same images
    are the same in every execution, whatever their labels."""
    name = "features_from_images"
    by_images: dict[int, list[tuple[int, np.ndarray]]] = {}
    for seed, labelling, report in reports:
        try:
            by_images.setdefault(seed, []).append(
                (labelling, recorded_features(report, feature)))
        except EvidenceError as exc:
            return Check(name, False, str(exc))
    compared = [runs for runs in by_images.values() if len(runs) > 1]
    if not compared:
        return Check(name, True, "no two executions shared their images", skipped=True)
    relabelled = any(len({lab for lab, _ in runs}) > 1 for runs in compared)
    for runs in compared:
        first_labelling, first = runs[0]
        for labelling, other in runs[1:]:
            if other.shape != first.shape or not np.allclose(other, first, rtol=1e-4,
                                                             atol=1e-5, equal_nan=True):
                why = ("under different labels: features must be computed from the images "
                       "alone" if labelling != first_labelling else "between executions on "
                       "the same data")
                return Check(name, False, f"{feature} gave different features for the same "
                                          f"images {why}")
    basis = "under different labels" if relabelled else "on repeated data"
    return Check(name, True, f"{feature} gave the same features for the same images {basis}")


def final_weights(report: ExecutionReport | None) -> dict[str, np.ndarray]:
    """The weights of the model's last eval-mode calls (raises EvidenceError)."""
    if report is None or not report.eval_weights:
        raise EvidenceError("the execution recorded no weights for its eval-mode calls")
    return {k: v.array() for k, v in report.eval_weights[-1].weights.items()}


def same_features(report: ExecutionReport | None, original: ExecutionReport | None,
                  *, exact: bool = False) -> bool:
    """Whether two executions' extractors gave the same features: bit for bit with
    ``exact`` (only then are the original's trained weights the ones to compare with:
    three epochs of training can carry a difference in the last bits of one feature to
    a few per cent of a weight), else within ``rtol=1e-4, atol=1e-5``."""
    try:
        a = unpack(report.features if report else None, "the features")
        b = unpack(original.features if original else None, "the features")
    except EvidenceError:
        return False
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b)) if exact else bool(
        np.allclose(a, b, rtol=1e-4, atol=1e-5))


def same_training(report: ExecutionReport | None, original: ExecutionReport | None,
                  model: str, tolerance: float, replayed: bool = False) -> Check:
    """The same training from the same random draws gives the same weights, so the
    model's trained weights match ``original``'s, each tensor within ``tolerance`` of its
    largest element.  ``original`` is the original's run on the same data, or, when the
    candidate's features differ (``replayed``), the original's training replayed by the
    harness on the candidate's own features.  Fewer epochs or steps, other batches,
    another order, other random draws, another optimiser or weights made any other way
    all end elsewhere."""
    name = "trained_weights"
    basis = ("the original's training replayed on its own features" if replayed
             else "the original's, trained on the same data")
    try:
        have = final_weights(report)
        want = final_weights(original)
    except EvidenceError as exc:
        return Check(name, False, f"{model}'s trained weights could not be compared with "
                                  f"{basis}: {exc}")
    worst, where = 0.0, ""
    for key, target in want.items():
        got = have.get(key)
        if got is None or got.shape != target.shape:
            return Check(name, False, f"{model} has no parameter {key} of shape "
                                      f"{list(target.shape)}, as the original has")
        gap = float(np.max(np.abs(got - target)) / (np.max(np.abs(target)) or 1.0))
        if not np.isfinite(gap) or gap > worst:
            worst, where = (gap if np.isfinite(gap) else float("inf")), key
    if worst > tolerance:
        return Check(name, False, f"{model}'s trained weights differ from {basis} ({where} "
                                  f"by {worst:.2g} of its scale; tolerance {tolerance:g}): "
                                  "keep the epochs, the batches, their order, the random "
                                  "draws and the optimiser")
    return Check(name, True, f"{model}'s trained weights match {basis} (within {worst:.2g} "
                             "of each tensor's scale)")


def same_predictions(report: ExecutionReport | None, original: ExecutionReport | None,
                     model: str, replayed: bool = False) -> Check:
    """A fitted estimator the grader cannot recompute (a forest): its test predictions
    are exactly what the original's estimator, fitted by the harness on the same
    features (the oracle's run, or a replay on the candidate's own features), predicts.
    The same estimator, parameters and seed on the same rows predict the same; a
    cheaper model in its place, or predictions made some other way, do not."""
    name = "fitted_model"
    basis = ("the original's estimator fitted on its own features" if replayed
             else "the original's, fitted on the same data")
    have = list(report.eval_predictions) if report else []
    want = list(original.eval_predictions) if original else []
    if not want:
        return Check(name, False, f"{model}'s predictions could not be compared with {basis}: "
                                  "the original's run recorded none")
    if len(have) != len(want):
        return Check(name, False, f"{model} predicted {len(have)} test rows; {basis} "
                                  f"predicts {len(want)}")
    differ = sum(a != b for a, b in zip(have, want, strict=True))
    if differ:
        return Check(name, False, f"{model}'s predictions differ from {basis} on {differ} of "
                                  f"{len(want)} test rows: keep the original's estimator, its "
                                  "parameters, its seed and its training rows")
    return Check(name, True, f"{model}'s predictions are {basis}'s on all {len(want)} test "
                             "rows")
