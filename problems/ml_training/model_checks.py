"""What the trained model predicts, computed by the harness from the model itself.

The execution reports the model's eval-mode predictions, and beside them the evidence
they came from: the inputs the model was called on in eval mode, the weights it had,
and the output of the feature extractor (the runner (``timing/runner_*.py``), parsed by
``problems.ml_training.execution_report``).  All of it is the candidate's to forge, so none of it is
believed alone.  Instead the pieces must fit:

- :func:`model_outputs`: the predictions are what the task's own model function (the
  original's architecture, in numpy here) gives with those weights on those inputs.
  The accuracy the grader scores is of *these* predictions, never of the reported ones,
  so an eval pass that answers rows by other means scores nothing for it;
- :func:`inputs_are_features`: those inputs are the extracted features of the test
  images (up to the pipeline's noise and clip), so they cannot be made up;
- :func:`features_from_images`: executions on the same images, under different labels,
  extracted the same features, so the labels cannot have been fed into them;
- that the weights were trained, fully, from the same random draws, is
  ``training_checks``'.

To pass, a candidate must then hand the grader weights that, on features computed
from the images alone, predict labels it never saw: a trained model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from problem import Check
from problems.ml_training.execution_report import ExecutionReport, PackedArray

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
    """The predictions of the reported weights on the reported eval inputs (see
    :func:`recompute_logits`)."""
    return recompute_logits(report, forward, shapes, width, max_rows).argmax(axis=-1)


def recompute_logits(report: ExecutionReport, forward: Forward,
                     shapes: Mapping[str, tuple[int, ...]] | None = None,
                     width: int | None = None, max_rows: int | None = None) -> np.ndarray:
    """The original's eval-mode outputs with the reported weights on the reported eval
    inputs (rows x width, as the parse guarantees).  ``shapes`` (the original's
    parameters), ``width`` (its input's) and ``max_rows`` (the most the runner keeps) are
    checked before any arithmetic: a forged report must not make the harness multiply
    matrices of the candidate's choosing."""
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
        predictions.append(logits)
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


def _beyond(have: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> float | None:
    """None when ``have`` is within ``rtol``/``atol`` of ``want`` everywhere, else its
    worst element as a multiple of the tolerance (infinite for a non-finite one)."""
    if np.allclose(have, want, rtol=rtol, atol=atol):
        return None
    with np.errstate(all="ignore"):
        ratio = np.abs(have - want) / (atol + rtol * np.abs(want))
    return float(np.max(np.where(np.isfinite(ratio), ratio, np.inf)))


def _against_original(name: str, have: np.ndarray, want: np.ndarray, rtol: float,
                      atol: float, what: str, inputs: str) -> Check:
    """``what`` (rows the pipeline computed) against the original's function of
    ``inputs`` (``want``), element by element."""
    if have.shape != want.shape:
        return Check(name, False, f"{what} have shape {list(have.shape)}; the original's "
                                  f"function of {inputs} gives {list(want.shape)}")
    if (err := _beyond(have, want, rtol, atol)) is not None:
        return Check(name, False, f"{what} are not the original's function of {inputs} "
                                  f"(worst element {err:.1f}x the tolerance rtol={rtol:g}, "
                                  f"atol={atol:g})")
    return Check(name, True, f"{what} are the original's function of {inputs} "
                             f"({len(have)} rows, rtol={rtol:g}, atol={atol:g})")


def pipeline_logits(report: ExecutionReport | None, forward: Forward, model: str,
                    rtol: float, atol: float,
                    shapes: Mapping[str, tuple[int, ...]] | None = None,
                    width: int | None = None, max_rows: int | None = None) -> Check:
    """Strict mode, on what the pipeline itself computed in the timed run: the outputs
    of its eval-mode calls are the original's function (computed by the grader) of the
    weights and inputs those calls had, element by element, not only in their argmax."""
    name = "strict_pipeline_logits"
    report = report if report is not None else ExecutionReport()
    try:
        want = recompute_logits(report, forward, shapes, width, max_rows)
        have = unpack(report.eval_logits, f"{model}'s eval-mode outputs")
    except EvidenceError as exc:
        return Check(name, False, f"{model}'s eval-mode outputs could not be checked: {exc}")
    return _against_original(name, have, want, rtol, atol,
                             f"{model}'s eval-mode outputs in the pipeline",
                             "its weights and inputs")


def pipeline_features(report: ExecutionReport | None, original: ExecutionReport | None,
                      feature: str, rtol: float, atol: float) -> Check:
    """Strict mode, on what the pipeline itself computed in the timed run: its features
    of the data set's images are the original's function of those images (the strict
    tier's, run by the harness on the same data), whatever size of call the pipeline
    made.  A method that answers the grader's small probe one way and the pipeline's own
    call another fails here."""
    name = "strict_pipeline_features"
    try:
        have = recorded_features(report, feature)
        want = unpack(original.features if original else None, "the original's features")
    except EvidenceError as exc:
        return Check(name, False, f"the pipeline's features could not be checked: {exc}")
    return _against_original(name, have, want, rtol, atol,
                             f"the features {feature} gave the pipeline in the timed run",
                             "the same images")


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
