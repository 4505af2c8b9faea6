"""The picture beside ``run_summary.md``: ``summary.png``, drawn from the records alone.

Two panels.  The first shows each run's speedup with its 95 % interval (log scale)
against the target and the calibration tiers (horizontal lines); a run without a
speedup (an error, no answer, a problem that measures none) is marked on the bottom
edge.  The second shows steps against score.  The figure is drawn with matplotlib's
Agg renderer on a ``Figure`` of its own (no pyplot: no global state, no display), with
fixed size, resolution and the bundled font, and written atomically through
``safe_files``.  :func:`write_summary` writes the picture and ``run_summary.md`` beside
it (the batch's and ``python -m summary``'s one way); :func:`not_ours` says where a redraw
may not write.  What the figures mean and the markdown around them are ``summary``'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

import output_dir
import safe_files
import summary
from records import BatchResults, RunRecord

log = logging.getLogger(__name__)

STATUS_COLOURS = {"pass": "#2a9d4a", "fail": "#d62728", "error": "#7f7f7f"}
TIER_COLOURS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SIZE_INCHES, DPI = (9.0, 8.0), 100


def write_plot(results: BatchResults, path: Path) -> Path:
    """Draw ``results`` and replace ``path`` with the PNG (atomically).  A batch with no
    run, or none with a speedup, still gets a valid picture that says so.  OSError when
    the file cannot be written."""
    safe_files.write_bytes(path.parent, path.name, render_png(results))
    return path


def render_png(results: BatchResults) -> bytes:
    """The picture's PNG bytes: the same records draw the same bytes."""
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    config = results.config
    fig.suptitle(f"{config.get('problem', 'batch')}: {len(results.runs)} runs"
                 + (f", model {config['model']}" if config.get("model") else "")
                 + (" (interrupted)" if results.interrupted else ""), fontsize=12)
    _speedups(top, results.runs, results.baseline)
    _steps_and_scores(bottom, results.runs)
    buffer = io.BytesIO()
    # no Software entry: the bytes do not change with matplotlib's version
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _speedups(ax: Any, runs: list[RunRecord], baseline: dict[str, Any]) -> None:
    ax.set_title("speedup per run (95 % interval) against the target and the tiers",
                 fontsize=10)
    ax.set_xlabel("run")
    ax.set_ylabel("speedup over the baseline (×)")
    measured = [r for r in runs if _positive(r.speedup)]
    for status, colour in STATUS_COLOURS.items():
        mine = [r for r in measured if r.status == status]
        if not mine:
            continue
        low = [r.speedup - r.speedup_ci95[0] if r.speedup_ci95 else 0.0 for r in mine]
        high = [r.speedup_ci95[1] - r.speedup if r.speedup_ci95 else 0.0 for r in mine]
        ax.errorbar([r.run_id for r in mine], [r.speedup for r in mine],
                    yerr=[[max(v, 0.0) for v in low], [max(v, 0.0) for v in high]],
                    fmt="o", color=colour, capsize=4, label=status)
    lines = _reference_lines(baseline)
    for i, (label, value, style) in enumerate(lines):
        ax.axhline(value, linestyle=style, linewidth=1.2, label=label,
                   color="black" if style == "--" else TIER_COLOURS[i % len(TIER_COLOURS)])
    if measured or lines:
        ax.set_yscale("log")
        times = FuncFormatter(lambda v, _: f"{v:g}x")  # 60x, 100x: not 6×10¹
        ax.yaxis.set_major_formatter(times)
        ax.yaxis.set_minor_formatter(times)
    unmeasured = [r for r in runs if not _positive(r.speedup)]
    if unmeasured:  # on the bottom edge, whatever the scale: x in data, y in axes units
        ax.scatter([r.run_id for r in unmeasured], [0.03] * len(unmeasured), marker="x",
                   color=[STATUS_COLOURS.get(r.status, "black") for r in unmeasured],
                   transform=ax.get_xaxis_transform(), clip_on=False,
                   label="no speedup (error, no answer, not measured)")
    if not measured:
        ax.text(0.5, 0.6, "no run has a measured speedup", transform=ax.transAxes,
                ha="center", va="center", fontsize=11, color="#555555")
        if not lines:  # no scale to show
            ax.set_yticks([])
    _run_axis(ax, runs)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _reference_lines(baseline: dict[str, Any]) -> list[tuple[str, float, str]]:
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


def _steps_and_scores(ax: Any, runs: list[RunRecord]) -> None:
    ax.set_title("steps against score (the grader's normalised score)", fontsize=10)
    ax.set_xlabel("steps (model calls)")
    ax.set_ylabel("score")
    for status, colour in STATUS_COLOURS.items():
        scored = [r for r in runs if r.status == status and _finite(r.score)]
        unscored = [r for r in runs if r.status == status and not _finite(r.score)]
        if scored:
            ax.scatter([r.steps for r in scored], [r.score for r in scored], color=colour,
                       label=status)
        if unscored:
            ax.scatter([r.steps for r in unscored], [0.0] * len(unscored), facecolors="none",
                       edgecolors=colour, label=f"{status}, no score (shown at 0)")
    at: dict[tuple[float, float], list[str]] = {}  # runs at one point share a label
    for r in runs:
        at.setdefault((r.steps, r.score if _finite(r.score) else 0.0), []).append(str(r.run_id))
    for point, ids in at.items():
        ax.annotate(", ".join(ids), point, textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    top = max([1.0, *(r.score for r in runs if _finite(r.score))])
    ax.set_ylim(-0.05, top + 0.1)
    ax.set_xlim(0, max([1, *(r.steps for r in runs)]) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if not runs:
        ax.text(0.5, 0.5, "no run finished", transform=ax.transAxes, ha="center",
                va="center", fontsize=11, color="#555555")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _run_axis(ax: Any, runs: list[RunRecord]) -> None:
    ids = [r.run_id for r in runs]
    ax.set_xlim(min(ids, default=1) - 0.5, max(ids, default=1) + 0.5)
    if len(ids) <= 30:
        ax.set_xticks(ids)
    ax.grid(alpha=0.3, which="both", axis="y")


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
