"""What the trained model predicts, computed by the harness from the model itself.

The execution reports the model's eval-mode predictions, and beside them the evidence
they came from: the inputs the model was called on in eval mode, the weights it had,
and the output of the feature extractor (``problems/ml_training/timing_runner.py``, parsed by
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


def weights_gap(have: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]
                ) -> tuple[float, str]:
    """How far ``have`` is from ``want``: the largest difference of an element, relative
    to its tensor's largest element in ``want``, and that tensor's name (infinite when a
    tensor is missing, of another shape or not finite)."""
    worst, where = 0.0, ""
    for key, target in want.items():
        got = have.get(key)
        if got is None or got.shape != target.shape:
            return float("inf"), key
        with np.errstate(all="ignore"):
            gap = float(np.max(np.abs(got - target)) / (np.max(np.abs(target)) or 1.0))
        if not np.isfinite(gap) or gap > worst:
            worst, where = (gap if np.isfinite(gap) else float("inf")), key
    return worst, where


# "The same training", on a data set where honest training is chaotic: the harness
# replays the original's training with its arithmetic perturbed in the last bits (the
# features, the model's outputs in training: ``oracle.Perturbation``), and these
# replays and the basis are a cloud of honest outcomes.  A chaotic training often turns on
# a discrete event (a unit crossing zero), so the cloud falls on a few branches, and an
# honest file lands on one of them; where it diverges smoothly instead, the cloud is
# spread out.  So the candidate is measured from the nearest point of the cloud, and the
# tolerance is SPREAD_MARGIN times the cloud's own scale (the median distance from each of
# its points to the nearest other), never below the fixed floor (the option
# weights_tolerance) nor above SPREAD_CEILING.  Measured in benchmarks/README.md ("False
# refusals"): one epoch of three lands 0.6-0.8 away at full size.
SPREAD_MARGIN = 3.0
SPREAD_CEILING = 0.3
# A data set proves full training only where a third of it ends further than this many
# tolerances from the whole (honest features: 0.16 at 100 samples, 0.6-0.8 at full size).
SHORTCUT_MARGIN = 2.0


def honest_spread(cloud: list[Mapping[str, np.ndarray]]) -> float | None:
    """The scale of a cloud of honest outcomes: the median, over its points, of the
    distance to the nearest other point (None for fewer than two points)."""
    if len(cloud) < 2:
        return None
    nearest = [min(weights_gap(a, b)[0] for j, b in enumerate(cloud) if j != i)
               for i, a in enumerate(cloud)]
    return float(np.median(nearest))


def training_tolerance(floor: float, spread: float | None) -> float:
    """The tolerance of ``trained_weights`` on a data set whose honest outcomes have the
    scale ``spread`` (None: not measured, the floor alone)."""
    if spread is None or not np.isfinite(spread):
        return floor
    return max(floor, min(SPREAD_CEILING, SPREAD_MARGIN * spread))


def near_the_cloud(have: Mapping[str, np.ndarray], cloud: list[Mapping[str, np.ndarray]],
                   floor: float) -> tuple[tuple[float, str], float, float | None]:
    """Where weights ``have`` lie against a cloud of honest outcomes (its first point the
    basis): the distance to the nearest point (and the tensor that decides it), the
    tolerance the cloud's spread gives, and that spread (None for the basis alone)."""
    spread = honest_spread(cloud)
    nearest = min(weights_gap(have, point) for point in cloud)
    return nearest, training_tolerance(floor, spread), spread


def same_training(report: ExecutionReport | None, original: ExecutionReport | None,
                  model: str, tolerance: float, replayed: bool = False,
                  replays: list[Mapping[str, np.ndarray]] | None = None,
                  shortcut: Mapping[str, np.ndarray] | None = None) -> Check:
    """The same training from the same random draws gives the same weights, so the
    model's trained weights match ``original``'s, each tensor within the tolerance of its
    largest element.  ``original`` is the original's run on the same data, or, when the
    candidate's features differ (``replayed``), the original's training replayed by the
    harness on the candidate's own features.  ``replays`` are the weights of the same
    training with its arithmetic perturbed in the last bits (measured where the candidate
    lands beyond ``tolerance``): then the candidate may land near any of them, within
    the tolerance their spread gives (:func:`training_tolerance`).  Fewer epochs or
    steps, other batches, another order, other random draws, another optimiser or
    weights made any other way all end elsewhere, provided the data set can tell them
    apart: ``shortcut`` are the weights of the same training with no effect after a
    third of it, and where they end within SHORTCUT_MARGIN times the tolerance of the
    basis (features that leave the model nothing to learn), this data set cannot decide:
    the check is skipped, failed, saying why (:func:`decided`)."""
    name = "trained_weights"
    basis = ("the original's training replayed on its own features" if replayed
             else "the original's, trained on the same data")
    try:
        have = final_weights(report)
        want = final_weights(original)
    except EvidenceError as exc:
        return Check(name, False, f"{model}'s trained weights could not be compared with "
                                  f"{basis}: {exc}")
    worst, where = weights_gap(have, want)
    if where and (have.get(where) is None or have[where].shape != want[where].shape):
        return Check(name, False, f"{model} has no parameter {where} of shape "
                                  f"{list(want[where].shape)}, as the original has")
    cloud = [want, *(replays or [])]
    nearest, allowed, spread = near_the_cloud(have, cloud, tolerance)
    measured = ("" if spread is None else
                f"; with the harness's {len(cloud) - 1} replays with the arithmetic perturbed in "
                f"the last bits, {nearest[0]:.2g} from the nearest, tolerance {allowed:.2g} (their "
                f"spread {spread:.2g})")
    if shortcut is not None:
        cut, _ = weights_gap(shortcut, want)
        if cut <= SHORTCUT_MARGIN * allowed:
            # undecided here (skipped): another data set of the grading may decide
            return Check(name, False, f"on these features a third of {model}'s training ends "
                                      f"within {cut:.2g} of the whole training (tolerance "
                                      f"{allowed:.2g}): the weights cannot show that the model "
                                      "was trained in full. Features that leave the model "
                                      "nothing to learn (saturated, constant) prove nothing: "
                                      "keep them in a range the model learns from",
                         skipped=True)
    if nearest[0] > allowed:
        return Check(name, False, f"{model}'s trained weights differ from {basis} ({where} "
                                  f"by {worst:.2g} of its scale, tolerance {tolerance:g}"
                                  f"{measured}): keep the epochs, the batches, their order, "
                                  "the random draws and the optimiser")
    return Check(name, True, f"{model}'s trained weights match {basis} ({worst:.2g} of each "
                             f"tensor's scale, tolerance {tolerance:g}{measured})")


def decided(checks: list[Check]) -> Check:
    """One check over every execution, from the data sets that could decide it (not
    skipped): the first that failed, else the first.  When none could, the first
    undecided one, as a failure: a grading must show the work on some data set."""
    able = [c for c in checks if not c.skipped]
    if able:
        return next((c for c in able if not c.passed), able[0])
    first = checks[0]
    return Check(first.name, False, first.message)


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
    probed = probe_agreement(report, original, model, basis)
    if differ:
        return Check(name, False, f"{model}'s predictions differ from {basis} on {differ} of "
                                  f"{len(want)} test rows: keep the original's estimator, its "
                                  "parameters, its seed and its training rows"
                                  + (f"; and {probed}" if probed else ""))
    if probed is not None:
        return Check(name, False, probed)
    votes = original.model_probe_votes.array()
    if bool(np.all(np.isclose(votes.max(axis=1), 1.0))):
        # undecided here (skipped): another data set of the grading may decide
        return Check(name, False, f"on these features {basis} is unanimous on every one of "
                                  "the grader's probe rows (every tree votes alike): the "
                                  "grader cannot tell it from a single tree, so its "
                                  "predictions cannot show that the model was fitted in "
                                  "full. Keep features the model can learn more than one "
                                  "split from", skipped=True)
    rows = original.model_probe_votes.shape[0]
    return Check(name, True, f"{model}'s predictions are {basis}'s on all {len(want)} test "
                             f"rows and its class probabilities on all {rows} of the "
                             "grader's probe rows")


PROBE_VOTE_TOLERANCE = 1e-4  # of a class probability (a forest's are multiples of 1/trees)


def probe_agreement(report: ExecutionReport | None, original: ExecutionReport,
                    model: str, basis: str) -> str | None:
    """Why the estimator in the pipeline is not the original's fitted model, judged on
    the grader's probe rows (drawn inside the timed run from the fit's own rows: across
    the class boundary, across the data's range and off the data, where a cheaper model
    and the original disagree even when the test rows are easy), or None when it is."""
    if original.model_probe_votes is None:
        return (f"{basis} could not be asked about the grader's probe rows "
                f"({original.model_probe_error or 'no record'}): the harness's fault")
    if report is None or report.model_probe_votes is None:
        why = (report.model_probe_error if report is not None else None) or (
            "no fitted estimator was asked to predict after its fit")
        return (f"{model} could not be asked about the grader's probe rows, inside the "
                f"pipeline's first predict after each fit: {why}")
    if report.model_probe_rows != original.model_probe_rows:
        return (f"{model} was fitted on other rows than {basis} (the grader's probe rows, "
                "drawn from the rows of the fit, differ): keep the original's training rows")
    have, want = report.model_probe_votes.array(), original.model_probe_votes.array()
    if have.shape != want.shape:
        return (f"{model} gave class probabilities of shape {list(have.shape)} on the "
                f"grader's probe rows; {basis} gives {list(want.shape)}")
    off = np.abs(have - want).max(axis=1) > PROBE_VOTE_TOLERANCE
    if off.any():
        flipped = int(np.sum(have.argmax(axis=1) != want.argmax(axis=1)))
        return (f"{model} is not the model fitted as {basis}: its class probabilities "
                f"differ on {int(off.sum())} of {len(want)} of the grader's probe rows (across the "
                f"class boundary and the data's range), its predictions on {flipped}: keep "
                "the original's estimator, its parameters and its seed, fitted in full")
    return None
