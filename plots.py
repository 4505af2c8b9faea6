"""The pictures beside the summaries, drawn from the records alone.

``summary.png`` (:func:`render_png`), beside a batch's ``run_summary.md``, has four
panels: each run's speedup with its 95 % interval (log scale) against the target and the
calibration tiers, a run without a speedup (an error, no answer, a problem that measures
none) marked on the bottom edge; the pass rate against the speedup threshold (the curve
GSO and KernelBench publish, :func:`pass_rate_at_thresholds`); and the score against
steps and against cost.  :func:`render_experiment_png` draws an experiment's arms (each a
batch's runs and baseline) side by side: the pass rate per arm with its 95 % Wilson
interval, the speedups per arm, one threshold curve per arm, and score against steps and
cost coloured by arm.  Each figure is drawn with matplotlib's Agg renderer on a
``Figure`` of its own (no pyplot: no global state, no display), with fixed size,
resolution and the bundled font, so the same records draw the same bytes, and is written
atomically through ``safe_files``.  :func:`write_summary` writes the batch's picture and
``run_summary.md`` beside it (the batch's and ``python -m summary``'s one way);
:func:`not_ours` says where a redraw may not write.  What the figures mean (which runs
the pass rate counts, the Wilson interval) and the markdown around them are
``summary``'s; which arms make an experiment is the caller's.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

import output_dir
import safe_files
import summary
from records import BatchResults, RunRecord

log = logging.getLogger(__name__)

# The check that fails when a candidate is right but slower than the target
# (problems/ml_training/runtime_checks.speedup_target): a run whose only failed check is
# this one would pass at a lower threshold.
SPEED_CHECK = "speedup_target"
STATUS_COLOURS = {"pass": "#2a9d4a", "fail": "#d62728", "error": "#7f7f7f"}
STATUS_MARKERS = {"pass": "o", "fail": "s", "error": "X"}  # the experiment's (colour: arm)
TIER_COLOURS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf")
ARM_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
               "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SIZE_INCHES, EXPERIMENT_SIZE_INCHES, DPI = (10.0, 12.0), (12.0, 12.0), 100
GREY = "#555555"

Arm = tuple[str, list[RunRecord], dict[str, Any]]  # label, its runs, its batch's baseline
Line = tuple[str, float, str]  # label, speedup, line style
Series = tuple[str | None, str, str, list[RunRecord]]  # legend label, colour, marker, runs


def passes_up_to(run: RunRecord, speed_check: str = SPEED_CHECK) -> float | None:
    """The highest speedup threshold ``run`` would pass at: its speedup when it passed,
    or when ``speed_check`` is its only failed check (a lower target would have passed
    it); None when it passes at none (another check failed, no answer, an error, no
    speedup measured)."""
    if not _positive(run.speedup):
        return None
    if run.status == "pass" or (run.status == "fail"
                                and set(run.failed_checks) == {speed_check}):
        return float(run.speedup)
    return None


def pass_rate_at_thresholds(runs: Sequence[RunRecord], thresholds: Iterable[float],
                            speed_check: str = SPEED_CHECK) -> list[float] | None:
    """At each threshold, the fraction of the runs the pass rate counts
    (``summary.counts_in_pass_rate``) that would pass at it (:func:`passes_up_to` at or
    above it); None when the pass rate counts no run."""
    counted = [r for r in runs if summary.counts_in_pass_rate(r)]
    if not counted:
        return None
    limits = [v for r in counted if (v := passes_up_to(r, speed_check)) is not None]
    return [sum(1 for v in limits if v >= t) / len(counted) for t in thresholds]


def threshold_grid(runs: Iterable[RunRecord], lines: Sequence[Line],
                   points: int = 200) -> list[float]:
    """Thresholds on a log grid from 1x to a quarter above the best speedup, target and
    tier, with every speedup a run passes up to among them (the curve's steps fall there
    exactly)."""
    limits = [v for r in runs if (v := passes_up_to(r)) is not None]
    top = max([1.0, *(r.speedup for r in runs if _positive(r.speedup)),
               *(v for _, v, _ in lines)]) * 1.25
    return sorted({*np.geomspace(1.0, top, points).tolist(), *(v for v in limits if v >= 1)})


def write_plot(results: BatchResults, path: Path) -> Path:
    """Draw ``results`` and replace ``path`` with the PNG (atomically).  A batch with no
    run, or none with a speedup, still gets a valid picture that says so.  OSError when
    the file cannot be written."""
    safe_files.write_bytes(path.parent, path.name, render_png(results))
    return path


def write_experiment_plot(path: Path, arms: list[Arm]) -> Path:
    """Draw the experiment's ``arms`` and replace ``path`` with the PNG (atomically).
    OSError when the file cannot be written."""
    safe_files.write_bytes(path.parent, path.name, render_experiment_png(arms))
    return path


def render_png(results: BatchResults) -> bytes:
    """The batch's picture as PNG bytes: the same records draw the same bytes."""
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    axes = fig.subplot_mosaic([["speedups"] * 2, ["threshold"] * 2, ["steps", "cost"]],
                              height_ratios=(3, 2, 2))
    config, runs = results.config, results.runs
    fig.suptitle(f"{config.get('problem', 'batch')}: {len(runs)} runs"
                 + (f", model {config['model']}" if config.get("model") else "")
                 + (" (interrupted)" if results.interrupted else ""), fontsize=12)
    lines = _reference_lines(results.baseline)
    axes["speedups"].set_title("speedup per run (95 % interval) against the target and "
                               "the tiers", fontsize=10)
    axes["speedups"].set_xlabel("run")
    _speedups(axes["speedups"], [(r.run_id, r) for r in runs], lines)
    _run_axis(axes["speedups"], runs)
    _threshold_curves(axes["threshold"], [("pass rate", "black", runs)], lines)
    series: list[Series] = [(status, colour, "o", [r for r in runs if r.status == status])
                            for status, colour in STATUS_COLOURS.items()]
    _score_against(axes["steps"], series, "steps", annotate=True)
    _score_against(axes["cost"], series, "cost", annotate=True)
    return _png(fig)


def render_experiment_png(arms: list[Arm]) -> bytes:
    """The experiment's picture as PNG bytes, one colour per arm (in ``arms``' order):
    the same arms draw the same bytes."""
    fig = Figure(figsize=EXPERIMENT_SIZE_INCHES, dpi=DPI, layout="constrained")
    axes = fig.subplot_mosaic([["rates", "speedups"], ["threshold"] * 2, ["steps", "cost"]],
                              height_ratios=(3, 2, 2), width_ratios=(1, 2))
    fig.suptitle(f"experiment: {len(arms)} arms, {sum(len(r) for _, r, _ in arms)} runs",
                 fontsize=12)
    lines = _arm_lines(arms)
    _pass_rates(axes["rates"], arms)
    points = []
    for i, (_, runs, _) in enumerate(arms):  # spread over ±0.3 around the arm, by run id
        ordered = sorted(runs, key=lambda r: r.run_id)
        step = 0.6 / (len(ordered) - 1) if len(ordered) > 1 else 0.0
        points += [(i - 0.3 * (len(ordered) > 1) + k * step, r) for k, r in enumerate(ordered)]
    axes["speedups"].set_title("speedup of each run (95 % interval) against the target "
                               "and the tiers", fontsize=10)
    _speedups(axes["speedups"], points, lines)
    _arm_axis(axes["speedups"], arms)
    axes["speedups"].grid(alpha=0.3, which="both", axis="y")
    _threshold_curves(axes["threshold"],
                      [(label, _arm_colour(i), runs) for i, (label, runs, _) in enumerate(arms)],
                      lines)
    series: list[Series] = []
    for i, (label, runs, _) in enumerate(arms):  # the arm named once, on its first points
        groups = [(marker, [r for r in runs if r.status == status])
                  for status, marker in STATUS_MARKERS.items()]
        first = next((k for k, (_, mine) in enumerate(groups) if mine), None)
        series += [(label if k == first else None, _arm_colour(i), marker, mine)
                   for k, (marker, mine) in enumerate(groups)]
    for name in ("steps", "cost"):
        _score_against(axes[name], series, name, annotate=False)
        axes[name].set_title(axes[name].get_title() + "\n(colour: arm; ○ pass, □ fail, "
                             "✕ error)", fontsize=10)
    return _png(fig)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # no Software entry: the bytes do not change with matplotlib's version
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _speedups(ax: Any, points: list[tuple[float, RunRecord]], lines: list[Line]) -> None:
    """Each run's speedup at its x, coloured by status, with the reference ``lines``."""
    ax.set_ylabel("speedup over the baseline (×)")
    measured = [(x, r) for x, r in points if _positive(r.speedup)]
    for status, colour in STATUS_COLOURS.items():
        mine = [(x, r) for x, r in measured if r.status == status]
        if not mine:
            continue
        low = [r.speedup - r.speedup_ci95[0] if r.speedup_ci95 else 0.0 for _, r in mine]
        high = [r.speedup_ci95[1] - r.speedup if r.speedup_ci95 else 0.0 for _, r in mine]
        ax.errorbar([x for x, _ in mine], [r.speedup for _, r in mine],
                    yerr=[[max(v, 0.0) for v in low], [max(v, 0.0) for v in high]],
                    fmt="o", color=colour, capsize=4, label=status)
    _draw_lines(ax.axhline, lines)
    if measured or lines:
        ax.set_yscale("log")
        _times_axis(ax.yaxis)
    unmeasured = [(x, r) for x, r in points if not _positive(r.speedup)]
    if unmeasured:  # on the bottom edge, whatever the scale: x in data, y in axes units
        ax.scatter([x for x, _ in unmeasured], [0.03] * len(unmeasured), marker="x",
                   color=[STATUS_COLOURS.get(r.status, "black") for _, r in unmeasured],
                   transform=ax.get_xaxis_transform(), clip_on=False,
                   label="no speedup (error, no answer, not measured)")
    if not measured:
        _say(ax, "no run has a measured speedup", y=0.6)
        if not lines:  # no scale to show
            ax.set_yticks([])
    _legend(ax)


def _reference_lines(baseline: dict[str, Any]) -> list[Line]:
    """(label, speedup, line style) of the target and each tier the baseline records."""
    lines = []
    if _positive(target := baseline.get("target")):
        rule = baseline.get("target_rule")
        lines.append((f"target {target:.1f}x" + (f" ({rule})" if rule else ""), target, "--"))
    ladder = baseline.get("ladder")
    tiers = (ladder.get("tiers") or []) if isinstance(ladder, dict) else []
    for tier in tiers:
        if isinstance(tier, dict) and _positive(tier.get("speedup")):
            lines.append((f"{tier.get('name', 'tier')} tier {tier['speedup']:.1f}x",
                          tier["speedup"], ":"))
    return lines


def _arm_lines(arms: list[Arm]) -> list[Line]:
    """The arms' target and tiers: once when every arm has the same, else each arm's,
    named for it."""
    each = [_reference_lines(baseline) for _, _, baseline in arms]
    if all(lines == each[0] for lines in each):
        return each[0] if each else []
    return [(f"{label}: {text}", value, style)
            for (label, _, _), lines in zip(arms, each, strict=True)
            for text, value, style in lines]


def _draw_lines(draw: Callable[..., Any], lines: list[Line]) -> None:
    """``lines`` through ``ax.axhline`` or ``ax.axvline``: the target black and dashed,
    each tier dotted in a colour of its own."""
    for i, (label, value, style) in enumerate(lines):
        draw(value, linestyle=style, linewidth=1.2, label=label,
             color="black" if style == "--" else TIER_COLOURS[i % len(TIER_COLOURS)])


def _threshold_curves(ax: Any, curves: list[tuple[str, str, list[RunRecord]]],
                      lines: list[Line]) -> None:
    """One pass-rate curve per (label, colour, runs), against the speedup threshold."""
    ax.set_title("pass rate against the speedup threshold\n(a run passes at a threshold "
                 f"when it passed or failed only {SPEED_CHECK}, at a speedup at or above "
                 "it)", fontsize=10)
    ax.set_xlabel("speedup threshold (×)")
    ax.set_ylabel("pass rate")
    everyone = [r for _, _, runs in curves for r in runs]
    if not lines and not any(_positive(r.speedup) for r in everyone):
        _say(ax, "no run has a measured speedup (this problem measures none, or no run "
             "was graded): no threshold to vary")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    grid = threshold_grid(everyone, lines)
    for label, colour, runs in curves:
        rates = pass_rate_at_thresholds(runs, grid)
        counted = sum(1 for r in runs if summary.counts_in_pass_rate(r))
        if rates is None:  # an entry in the legend all the same
            ax.plot([], [], color=colour, label=f"{label}: no run counted")
        else:
            ax.plot(grid, rates, drawstyle="steps-pre", color=colour, linewidth=1.8,
                    label=f"{label} (over {counted} runs)")
    _draw_lines(ax.axvline, lines)
    ax.set_xscale("log")
    ax.set_xlim(1.0, grid[-1])
    _times_axis(ax.xaxis, minor="25")  # across: 20x, 50x, not 60x70x80x90x
    _rate_axis(ax)
    ax.grid(alpha=0.3, which="both")
    _legend(ax)


def _pass_rates(ax: Any, arms: list[Arm]) -> None:
    ax.set_title("pass rate per arm (95 % Wilson interval)", fontsize=10)
    ax.set_ylabel("pass rate (over the runs it counts)")
    for i, (_, runs, _) in enumerate(arms):
        counted = [r for r in runs if summary.counts_in_pass_rate(r)]
        if not counted:
            ax.text(i, 0.5, "no run\ncounted", ha="center", va="center", fontsize=8,
                    color=GREY)
            continue
        passed = sum(1 for r in counted if r.status == "pass")
        rate = passed / len(counted)
        low, high = summary.wilson_interval(passed, len(counted))
        ax.errorbar([i], [rate], yerr=[[max(rate - low, 0.0)], [max(high - rate, 0.0)]],
                    fmt="o", color=_arm_colour(i), capsize=6, markersize=8)
        ax.annotate(f"{passed}/{len(counted)}", (i, rate), textcoords="offset points",
                    xytext=(8, 0), va="center", fontsize=8)
    _rate_axis(ax)
    _arm_axis(ax, arms)
    ax.grid(alpha=0.3, axis="y")


def _score_against(ax: Any, series: list[Series], x_name: str, annotate: bool) -> None:
    """Score against steps or cost (``x_name``) for each (label, colour, marker, runs);
    a run without a score is drawn hollow at 0, one of unknown cost is left out."""
    x_of: Callable[[RunRecord], Any] = (lambda r: r.steps) if x_name == "steps" else (
        lambda r: r.cost_usd if _finite(r.cost_usd) else None)
    runs = [r for _, _, _, mine in series for r in mine]
    shown = [r for r in runs if x_of(r) is not None]
    ax.set_title(f"score against {x_name} (the grader's normalised score)", fontsize=10)
    ax.set_xlabel("steps (model calls)" if x_name == "steps" else "cost (USD)")
    ax.set_ylabel("score")
    for label, colour, marker, mine in series:
        scored = [r for r in mine if x_of(r) is not None and _finite(r.score)]
        unscored = [r for r in mine if x_of(r) is not None and not _finite(r.score)]
        if scored:
            ax.scatter([x_of(r) for r in scored], [r.score for r in scored], color=colour,
                       marker=marker, label=label)
        if unscored:
            ax.scatter([x_of(r) for r in unscored], [0.0] * len(unscored), marker=marker,
                       facecolors="none", edgecolors=colour,
                       label=f"{label}, no score (shown at 0)" if label else None)
    if annotate:
        at: dict[tuple[float, float], list[str]] = {}  # runs at one point share a label
        for r in shown:
            at.setdefault((x_of(r), r.score if _finite(r.score) else 0.0), []).append(
                str(r.run_id))
        for point, ids in at.items():
            ax.annotate(", ".join(ids), point, textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set_ylim(-0.05, max([1.0, *(r.score for r in runs if _finite(r.score))]) + 0.1)
    if x_name == "steps":
        ax.set_xlim(0, max([1, *(r.steps for r in runs)]) + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xlim(0, max([0.0, *(x_of(r) for r in shown)]) * 1.15 or 1.0)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:g}"))
    ax.grid(alpha=0.3)
    if not runs:
        _say(ax, "no run finished")
    elif not shown:
        _say(ax, "no run's cost is known (the model's prices are unknown)")
    elif len(shown) < len(runs):
        ax.text(0.99, 0.02, f"{len(runs) - len(shown)} of {len(runs)} runs left out: cost "
                "unknown", transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                color=GREY)
    _legend(ax)


def _run_axis(ax: Any, runs: list[RunRecord]) -> None:
    ids = [r.run_id for r in runs]
    ax.set_xlim(min(ids, default=1) - 0.5, max(ids, default=1) + 0.5)
    if len(ids) <= 30:
        ax.set_xticks(ids)
    ax.grid(alpha=0.3, which="both", axis="y")


def _arm_axis(ax: Any, arms: list[Arm]) -> None:
    ax.set_xlim(-0.5, max(len(arms), 1) - 0.5)
    ax.set_xticks(range(len(arms)), [label for label, _, _ in arms],
                  rotation=20 if len(arms) > 3 else 0, fontsize=9)


def _times_axis(axis: Any, minor: str = "23456789") -> None:
    """Label a log axis 60x, 100x (not 6×10¹); minor ticks only where the leading digit is
    one of ``minor``."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    axis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}x" if f"{v:.0e}"[0] in minor else ""))


def _rate_axis(ax: Any) -> None:
    ax.set_ylim(-0.05, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))


def _say(ax: Any, text: str, y: float = 0.5) -> None:
    ax.text(0.5, y, text, transform=ax.transAxes, ha="center", va="center", fontsize=10,
            color=GREY, wrap=True)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _arm_colour(i: int) -> str:
    return ARM_COLOURS[i % len(ARM_COLOURS)]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def write_summary(directory: Path, results: BatchResults) -> list[str]:
    """Write ``summary.png`` then ``run_summary.md`` (linking it) in ``directory``, each
    atomically; the names written.  A picture that cannot be written is logged and left
    out (the summary does not link it); OSError when the summary cannot be written."""
    written = []
    try:
        write_plot(results, directory / summary.PLOT_NAME)
        written.append(summary.PLOT_NAME)
    except OSError as exc:
        log.warning("could not write %s: %s", directory / summary.PLOT_NAME,
                    exc.strerror or exc)
    except Exception as exc:  # a figure matplotlib cannot draw: the summary still is
        log.warning("could not draw %s: %s: %s", directory / summary.PLOT_NAME,
                    type(exc).__name__, exc)
    text = summary.render_markdown(results, summary.PLOT_NAME if written else None)
    safe_files.write_bytes(directory, summary.SUMMARY_NAME, text.encode())
    return [*written, summary.SUMMARY_NAME]


def not_ours(directory: Path) -> str | None:
    """Why the summary may not be redrawn in ``directory``: a batch is writing there (its
    lock is held), or a run_summary.md there is not one the harness wrote."""
    with contextlib.suppress(OSError):
        fd = os.open(directory / output_dir.LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"a batch is writing to {directory}"
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        if not safe_files.read_bytes(directory, summary.SUMMARY_NAME, 1 << 20).startswith(
                b"# Run summary\n"):
            return f"{directory / summary.SUMMARY_NAME} is not a summary hello-py wrote"
    return None
