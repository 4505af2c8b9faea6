"""Whether the model was trained: the candidate's trained weights (or fitted forest)
against the original's training on the same features, within how far honest training
lands.

- :func:`same_training`: the weights are what the original's training, from the same
  random draws, makes of those features (the oracle's run, or a replay on the
  candidate's own features), within the fixed floor or the spread of the grader's
  perturbed replays (``evidence``), and apart from a shortcut's;
- :func:`same_predictions` and :func:`probe_agreement`: a fitted estimator predicts
  what the original's, fitted in full on the same rows, predicts, on the test rows and
  on the grader's own probe rows;
- :func:`decided`: one check over every data set.

The evidence is gathered by ``evidence``; what the model predicts and on which inputs
is ``model_checks``'.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from problem import Check
from problems.ml_training.execution_report import ExecutionReport
from problems.ml_training.model_checks import EvidenceError


def final_weights(report: ExecutionReport | None) -> dict[str, np.ndarray]:
    """The weights of the model's last eval-mode calls (raises EvidenceError)."""
    if report is None or not report.eval_weights:
        raise EvidenceError("the execution recorded no weights for its eval-mode calls")
    return {k: v.array() for k, v in report.eval_weights[-1].weights.items()}


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
