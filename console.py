"""What the operator reads: progress on stderr, reports and listings for stdout.

The CLI layer's output, rendered here and nowhere else: the timestamped progress line
(:func:`say`, and :func:`note` for a batch's runs; ``sandbox.heartbeat`` repeats one
while a long execution runs, through any progress callback), red one-line errors (:func:`error`,
:func:`no_sandbox`), the SDK's retries as one line each (:class:`SdkRetries`), the grade
report (:func:`format_report`), the calibration table (:func:`calibration_report`) and
the problems listing (:func:`problems_listing`).  Stderr is printed here; text for
stdout is returned, and the caller prints it (or JSON instead).  What to run, and when
to stop, is ``main``'s; the figures come from the problem (its grader, ``calibrate``).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

import provenance
import sandbox

stderr = Console(stderr=True, highlight=False)


# ---- progress and errors (stderr) -----------------------------------------------------
def say(message: str, label: str = "", style: str = "") -> None:
    """A progress line: the time, an optional ``label`` in ``style``, and ``message``.
    The message is printed as text, never read as markup: progress quotes what agents
    and candidates chose (file names, a report's keys)."""
    head = f"[{style}]{escape(label)}[/{style}]: " if label and style else (
        f"{escape(label)}: " if label else "")
    stderr.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {head}{escape(str(message))}")


def note(run_id: int | None, message: str) -> None:
    """A batch's progress: a run's (``run_id``) or the batch's own."""
    say(f"run {run_id}: {message}" if run_id is not None else message)


def error(message: object, label: str = "error", soft_wrap: bool | None = None) -> None:
    """``label: message``, the label in red: why a command stops.  The message is
    printed as text, never read as markup (it may quote the user's input)."""
    stderr.print(f"[red]{label}:[/red] {escape(str(message))}", soft_wrap=soft_wrap)


def no_sandbox(allowed: bool) -> None:
    """No sandbox on this machine: a warning when the user allowed running without one
    (``--unsafe-no-sandbox``), else why the command stops."""
    if allowed:
        stderr.print(f"[yellow]warning:[/yellow] no sandbox on this machine: agent code and "
                     f"candidates run with your privileges ({sandbox.INSTALL_HINT})")
    else:
        error(sandbox.REFUSAL)


# ---- the SDK's retries (stderr) -------------------------------------------------------
class SdkRetries(logging.Handler):
    """The SDK's retries as one compact console line each (what failed, the wait), so a
    429 back-off is not an unexplained stall; the SDK's warnings and errors pass on.  Its
    other debug lines go nowhere."""

    def __init__(self, say: Callable[[str], None] = say) -> None:
        super().__init__(logging.DEBUG)
        self.say, self.why = say, "a failed request"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: say nothing rather than fail the caller
            return
        if message.startswith("Retrying due to status code"):
            self.why = f"HTTP {message.rsplit(' ', 1)[-1]}"
        elif message.startswith("Encountered httpx2.TimeoutException"):
            self.why = "a timeout"
        elif message.startswith("Encountered Exception"):
            self.why = "a connection error"
        elif message.startswith("Retrying request to") and len(record.args or ()) == 2:
            url, wait = record.args
            path = str(url).split("://", 1)[-1].partition("/")[2] or str(url)
            self.say(f"API: {self.why} on /{path}; the SDK retries in {float(wait):.1f} s")
            self.why = "a failed request"
        elif record.levelno >= logging.WARNING:
            self.say(f"{record.levelname.lower()} ({record.name}): {message}")


def show_sdk_retries() -> None:
    sdk = logging.getLogger("anthropic._base_client")
    if not any(isinstance(h, SdkRetries) for h in sdk.handlers):
        sdk.addHandler(SdkRetries())
    sdk.setLevel(logging.DEBUG)
    sdk.propagate = False


# ---- reports (stdout) -----------------------------------------------------------------
def _side_by_side_line(result: Any) -> list[str]:
    side = (result.details or {}).get("side_by_side") or {}
    mine, base = side.get("candidate_units"), side.get("baseline_units")
    if not mine or not base:
        return []
    clock = {"cpu": "CPU-time clock", "wall": "wall clock"}.get(side.get("clock"), "wall clock")
    other = [f"{name} {ratio:.1f}x" for key, name in (("cpu", "CPU-time clock"),
                                                      ("wall", "wall clock"))
             if side.get("clock") != key
             and (ratio := (result.details or {}).get(f"speedup_{key}_clock"))]
    lines = [f"  Side by side with the strict tier, on the {clock}: the candidate took "
             f"{statistics.median(mine):.3f} of its time (median of {len(mine)}), the "
             f"baseline {statistics.median(base):.1f} (calibration)"
             + (f"; on the {other[0]}" if other else "")]
    busy = side.get("contention") or {}
    shares = [x for x in busy.get("on_cpu") or [] if x is not None]
    loads = [x for x in busy.get("load") or [] if x is not None]
    if shares:
        share = statistics.median(shares) * 100
        lines.append(f"  Timing CPU: the candidate was on it {share:.0f} % "
                     f"of its wall time (median), load average {max(loads or [0]):.1f}; "
                     f"{len(busy.get('set_aside') or [])} execution(s) set aside and "
                     f"repeated because something else ran there, "
                     f"{busy.get('contended_kept', 0)} kept although it did")
    return lines


def format_report(result: Any) -> str:
    """A ``GradeResult`` as ``main.py grade`` prints it: the figures, then each check."""
    def fmt(value: float | None, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = ["=" * 50, "PERFORMANCE METRICS", "=" * 50,
             f"  Baseline:  time {fmt(result.baseline_time, '.2f')} s, accuracy on the "
             f"same fresh data {fmt(result.baseline_accuracy, '.4f')}",
             f"  Candidate: time {fmt(result.candidate_time, '.3f')} s (median of "
             f"{len(result.candidate_times)}: "
             f"{', '.join(f'{t:.3f}' for t in result.candidate_times) or '–'}), "
             f"accuracy {fmt(result.accuracy, '.4f')}",
             f"  Speedup:   {fmt(result.speedup, '.2f')}x"
             + (f" (95 % interval {result.speedup_ci95[0]:.2f}-{result.speedup_ci95[1]:.2f}x)"
                if result.speedup_ci95 else "")
             + f", target {fmt(result.target, '.2f')}x ({result.target_rule}); "
             f"score {fmt(result.score, '.3f')}",
             *_side_by_side_line(result),
             *(f"  {line}" for line in [provenance.calibration_line(
                 (result.details or {}).get("calibration"), _utc_now())] if line),
             "=" * 50, "CHECKS"]
    for c in result.checks:
        mark = "skip" if c.skipped else ("ok  " if c.passed else "FAIL")
        lines.append(f"  [{mark}] {c.name}: {c.message}")
    lines.append("=" * 50)
    lines.append("PASSED" if result.passed else f"NOT PASSED — {result.reason}")
    return "\n".join(lines)


def calibration_report(data: dict[str, Any]) -> str:
    """``Problem.calibrate``'s data as a table: the baseline, each tier, each rule."""
    shown = ", ".join(f"{t:.2f}" for t in data["baseline_times"])
    units = ""
    if data["baseline_units"]:
        clock = "CPU time" if data.get("clock") == "cpu" else "time"
        units = (f"; {statistics.median(data['baseline_units']):.1f} times the strict tier's "
                 f"{clock}, measured side by side")
    lines = [f"baseline: {data['baseline_time']:.2f} s (median of "
             f"{len(data['baseline_times'])}: {shown}){units}",
             "", f"{'tier':<12} {'time':>9} {'speedup':>9}  95 % interval   score"]
    for t in data["tiers"]:
        ci95 = t["speedup_ci95"]
        ci = f"{ci95[0]:.1f}-{ci95[1]:.1f}x" if ci95 else "–"
        lines.append(f"{t['name']:<12} {t['time']:>8.3f}s {t['speedup']:>8.1f}x  {ci:<14} "
                     f"{data['scores'][t['name']]:.2f}")
    if line := provenance.calibration_line(data.get("calibration"), _utc_now()):
        lines += ["", line]
    lines += ["", "target rules here:"]
    for rule, value in data["rules"].items():
        marks = [m for m, on in (("default", rule == data["default_target_rule"]),
                                 ("in use", rule == data["target_rule"])) if on]
        lines.append(f"  {rule:<16} -> {value:.1f}x" + (f"  ({', '.join(marks)})" if marks
                                                        else ""))
    return "\n".join(lines)


def check_report(data: dict[str, Any]) -> str:
    """``calibrate --check``: each re-measured ratio against the cached one."""
    lines = [f"cached calibration of {data['problem']}, measured {data['measured_at']}:"]
    for link in data["links"]:
        moved = link["deviation"] * 100
        lines.append(f"  {link['link']:<22} cached {link['cached']:.4g}, now {link['now']:.4g}"
                     f" ({moved:+.1f} %) {'holds' if link['holds'] else 'MOVED'}")
    speed = data["strict_tier_seconds_now_vs_then"]
    lines.append(f"  the strict tier's seconds now are {speed:.2f} times those at "
                 "calibration (side-by-side ratios cancel this)")
    if poor := (data.get("quality") or {}).get("poor"):
        lines.append(f"  the cached ladder itself is POOR: {poor}")
    lines.append(f"the ladder {'holds' if data['holds'] else 'does NOT hold'} here now "
                 f"(each ratio within ±{data['tolerance'] * 100:.0f} %, the ladder within "
                 "its width)" + ("" if data["holds"] else
                                 "; measure it again: `main.py calibrate --no-cache`"))
    return "\n".join(lines)


def _utc_now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def nothing_to_calibrate(problem: str, as_json: bool) -> str:
    """What ``calibrate`` says of a problem graded exactly (no baseline, no tiers)."""
    message = f"{problem} is graded exactly: it has no baseline or tiers to calibrate"
    return json.dumps({"problem": problem, "baseline_time": None, "tiers": [],
                       "default_target": None, "default_target_rule": None,
                       "note": message}) if as_json else message


def problems_listing(listing: list[dict[str, Any]]) -> str:
    """``main.py problems``: each problem, its summary, baseline, tiers and knobs."""
    lines = []
    for entry in listing:
        base = (f"{entry['baseline_time_cached']:.1f} s (cached)"
                if entry["baseline_time_cached"] is not None
                else "not measured yet" if entry["tiers"] else "none (graded exactly)")
        lines += [f"{entry['name']}" + ("  (default)" if entry["default"] else ""),
                  f"  {entry['summary']}",
                  f"  baseline here: {base}; tiers: {', '.join(entry['tiers']) or '–'}",
                  "  knobs: " + "; ".join(f"{k['name']}={k['default']} ({k['help']})"
                                          for k in entry["knobs"]), ""]
    return "\n".join(lines).rstrip()


def interrupted_message(out: Any, report: str = "run_summary.md") -> str:
    """What an interrupted batch (or experiment: its ``report``) left in its output
    directory ``out`` (an ``output_dir.OutputDir``), truthfully."""
    if not out.begun:
        return f"before the runs started: nothing was recorded, and {out.path} is untouched"
    if out.restored:
        return (f"before any run finished: nothing was recorded, and the previous batch's "
                f"records are back in {out.path}")
    return (f"the finished runs are recorded in {out.path / report}; continue with the "
            f"same flags and --resume")
