"""What a problem is: a prompt, the tools it offers, and a grader that returns data.

A :class:`Problem` says what the agent is asked to do and which tools it gets; its
``grade`` returns a :class:`GradeResult` (a verdict, the figures, and the named checks
that decided it).  Nothing here prints or does slow work at construction: the CLI
layer reports, and problems measure what they need when first asked.
:func:`cache_dir` is where the harness keeps what it measured, for problems and the
profiler alike.
"""

from __future__ import annotations

import abc
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import safe_files


@dataclass(frozen=True)
class Check:
    """One named check: did it pass, and why.  ``skipped`` when it could not be judged;
    ``advisory`` when it only informs (it never decides a verdict)."""

    name: str
    passed: bool
    message: str
    skipped: bool = False
    advisory: bool = False

    @property
    def decisive_failure(self) -> bool:
        return not (self.passed or self.skipped or self.advisory)


@dataclass
class GradeResult:
    """A grader's verdict with every figure it measured itself."""

    passed: bool
    checks: list[Check]
    speedup: float | None = None
    baseline_time: float | None = None
    candidate_time: float | None = None
    candidate_times: list[float] = field(default_factory=list)
    accuracy: float | None = None  # on hidden labels of fresh data (mean over executions)
    baseline_accuracy: float | None = None  # the original's on the same data (the oracle)
    target: float | None = None
    target_rule: str = ""  # what the target stands for: 33, vectorized, 0.9*strict
    speedup_ci95: tuple[float, float] | None = None
    score: float | None = None  # 0 at the baseline, 1 at the strict tier (log); 0 if failed
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The first failing check, as 'name: message' ('' when passed)."""
        for check in self.checks:
            if check.decisive_failure:
                return f"{check.name}: {check.message}"
        return ""

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if c.decisive_failure]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reason"] = self.reason
        return data

    def agent_summary(self) -> str:
        """The short message an agent sees: figures and failing checks, no internals."""
        lines = ["PASSED" if self.passed else "NOT PASSED"]
        if self.speedup is not None:
            ci = (f", 95 % interval {self.speedup_ci95[0]:.1f}-{self.speedup_ci95[1]:.1f}x"
                  if self.speedup_ci95 else "")
            lines.append(f"speedup: {self.speedup:.2f}x{ci} (target {self.target:.1f}x)")
        if self.candidate_time is not None:
            lines.append(f"candidate time (median): {self.candidate_time:.3f} s; "
                         f"baseline: {self.baseline_time:.2f} s")
        if self.accuracy is not None:
            lines.append(f"accuracy on fresh data: {self.accuracy:.4f} (the original on the same "
                         f"data: {self.baseline_accuracy:.4f})")
        for check in self.checks:
            if check.decisive_failure:
                lines.append(f"FAILED {check.name}: {check.message}")
            elif check.advisory and check.message != "nothing to note":
                lines.append(f"note ({check.name}): {check.message}")
        return "\n".join(lines)


def cache_dir() -> Path:
    """The harness's own cache directory (measured baselines, shared profiles):
    ``HELLO_PY_CACHE_DIR``, else ``hello-py`` under ``XDG_CACHE_HOME`` or ``~/.cache``.
    No sandbox sees it: a sandbox sees only what is bound into it (``sandbox``)."""
    if env := os.environ.get("HELLO_PY_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hello-py"


# What passes, as the user writes it: a speedup (33), a tier of the problem
# (vectorized) or a fraction of one (0.9*strict).  A problem with tiers resolves it on
# the machine that grades; the grammar is the same for every problem.
_RULE = re.compile(r"^\s*(?:(?P<factor>\d+(?:\.\d+)?)\s*\*\s*)?(?P<tier>[a-z_][a-z0-9_]*)\s*$")


class RuleError(ValueError):
    """A target rule that does not parse or names no tier of the problem."""


@dataclass(frozen=True)
class TargetRule:
    """``factor`` x the speedup of ``tier`` on this machine, or ``factor`` itself."""

    text: str
    factor: float
    tier: str | None = None

    @classmethod
    def parse(cls, text: str, tiers: Sequence[str] | None = None) -> TargetRule:
        """Parse ``33``, ``vectorized`` or ``0.9*strict``; with ``tiers``, the tier must be
        one of them."""
        raw = str(text).strip()
        try:
            value = float(raw)
        except ValueError:
            value = None
        if value is not None:
            if not math.isfinite(value) or value <= 0:
                raise RuleError(f"a speedup must be a positive number, got {raw!r}")
            return cls(raw, value)
        match = _RULE.match(raw)
        if not match:
            raise RuleError(f"not a target rule: {raw!r} (a speedup such as 33, a tier such "
                            "as vectorized, or a fraction of one such as 0.9*strict)")
        factor = float(match["factor"] or 1.0)
        if factor <= 0:
            raise RuleError(f"the factor of {raw!r} must be greater than 0")
        tier = match["tier"]
        if tiers is not None and tier not in tiers:
            raise RuleError(f"unknown tier {tier!r} in {raw!r}; tiers: {', '.join(tiers)}")
        return cls(raw, factor, tier)

    def resolve(self, ladder: Any) -> float:
        """The speedup this rule asks for on the machine ``ladder`` measured (anything
        with ``speedup(tier)``)."""
        if self.tier is None:
            return self.factor
        return self.factor * ladder.speedup(self.tier)


@dataclass(frozen=True)
class GradingChoices:
    """The user's choices of how a problem grades, held by ``main.Config`` and passed to
    the problem as they are.  ``None`` is the problem's own default (its target rule);
    a problem resolves the choices against its defaults itself, in one place.  A
    problem graded exactly ignores what does not apply to it."""

    target: str | None = None  # a rule: 33, vectorized, 0.9*strict; None: the problem's
    relative_target: float | None = None  # the rule F*strict, spelt as a fraction
    semantics: str = "seed"  # "seed": quality must hold; "strict": same functions as the original
    repeats: int = 3  # timed executions per candidate (median reported)
    baseline_repeats: int = 3
    threads: int = 1  # same for baseline and candidate
    use_cache: bool = True  # reuse the measured baseline
    allow_unsandboxed: bool = False  # grade even where no sandbox is available

    def rule_text(self) -> str | None:
        """The target rule as the user gave it (``relative_target`` is F*strict); None
        when the user gave none (the problem's own applies)."""
        if self.relative_target:
            return f"{self.relative_target:g}*strict"
        return None if self.target is None else str(self.target)


class GraderError(RuntimeError):
    """The harness could not grade (e.g. the baseline itself failed): not the candidate's
    fault, so never reported as a failed verdict."""


@dataclass(frozen=True)
class Knob:
    """One difficulty setting of a problem, stated once with its default."""

    name: str
    default: Any
    help: str


class Problem(abc.ABC):
    """A task for an agent.  Subclasses set the prompt, the toolset and the grader.

    What the batch, the tools, the CLI and the scripted agent need from a problem is
    declared here; nothing outside ``problems/`` names a specific problem or its files.
    """

    name: str = "problem"
    summary: str = ""  # one line for `main.py problems`
    data_dir: Path | None = None  # what the agent may read (read-only), if anything
    max_steps: int = 15  # model calls per run, unless the user sets --max-steps

    def knobs(self) -> list[Knob]:
        """The problem's difficulty settings and their defaults."""
        return []

    def tier_names(self) -> list[str]:
        """The calibration ladder's tiers (target rules may name them)."""
        return []

    def default_target(self) -> str | None:
        """The target rule that applies when the user gives none (None: graded without
        a speed target)."""
        return None

    def target_error(self, rule: str) -> str | None:
        """Why ``rule`` (the user's ``--target``) cannot be this problem's target, or None
        when it can (checked before anything is measured)."""
        return None

    async def calibrate(self) -> dict[str, Any] | None:
        """The baseline and the tiers measured on this machine (cached), and what each
        target rule resolves to here: ``main.py calibrate``'s data.  None for a problem
        graded exactly."""
        return None

    async def prepare(self) -> dict[str, Any]:
        """Measure what the batch needs before its runs start (the baseline, cached);
        returns the batch records' ``baseline`` section."""
        return {}

    def cached_baseline_time(self) -> float | None:
        """The baseline's median time here if already measured (no measuring)."""
        return None

    async def check_calibration(self) -> dict[str, Any] | None:
        """Whether the cached calibration still holds here now; None: nothing to check."""
        return None

    def calibration_used(self) -> dict[str, Any] | None:
        """The calibration the last ``prepare`` or ``grade`` used (its figures, whether
        they came from the cache, when they were measured), for the records'
        provenance; None before any was used, or for a problem graded exactly."""
        return None

    def scripted_turns(self, tool_names: set[str], draft: bool = False
                       ) -> list[list[dict[str, Any]]]:
        """The offline scripted agent's trajectory: content blocks of each turn, playing
        the problem's own reference solution with the tools offered.  ``draft``: its
        first answer falls short (a plausible mistake), and is corrected only where a
        tool it is offered shows the mistake (the intermediate answer)."""
        return []

    @abc.abstractmethod
    def prompt(self, workspace: Path) -> str:
        """The task statement, mentioning only the tools this problem offers."""

    @abc.abstractmethod
    def tool_names(self) -> list[str]:
        """Names of the tools (from ``tools.REGISTRY``) this problem offers."""

    @abc.abstractmethod
    async def grade(self, candidate: Path, *, progress: Any = None,
                    options: Any = None) -> GradeResult:
        """Grade a candidate file.  Never raises for anything the candidate does
        (``GraderError`` when the harness itself cannot grade)."""

    async def strategy(self, candidate: Path) -> dict[str, Any] | None:
        """Which strategy a graded candidate took, measured after its grading and outside
        its timed executions: advisory, it never changes a verdict (None: this problem
        has no components to analyse).  The shape is ``records.RunRecord.strategy``'s."""
        return None

    def fallback_candidates(self, workspace: Path) -> list[Path]:
        """Files of the run directory to grade when the agent ends without submitting,
        best first; list them without following links (``safe_files.walk``).  The batch
        reads the one it grades through ``safe_files`` too, skipping any that changed."""
        return []


class DataGuard:
    """Pins the files of a problem's data directory and puts them back if changed.

    Taken when a batch (or a grading) starts; ``restore()`` after anything the agent
    ran returns the paths that had been changed, added or removed, restoring each.
    Below the directory nothing is followed (``safe_files``): a link, FIFO or directory
    planted where a file was counts as a change and is removed, not written through.
    """

    MAX_FILE_BYTES = 64 * 1024**2  # a data file larger than this is not pinned

    def __init__(self, directory: Path):
        self.directory = directory
        self.pinned = {e.rel: (safe_files.read_bytes(directory, e.rel, self.MAX_FILE_BYTES),
                               stat.S_IMODE(e.mode))
                       for e in self._entries() if e.is_file}

    def _entries(self) -> list[safe_files.Entry]:
        entries, _ = safe_files.walk(self.directory)
        return [e for e in entries if not e.is_dir and "__pycache__" not in e.rel.parts]

    def changed(self) -> list[str]:
        current = {e.rel: e for e in self._entries()}
        changed = {rel for rel in current if rel not in self.pinned}
        for rel, (data, _) in self.pinned.items():
            entry = current.get(rel)
            if entry is None or not entry.is_file or entry.size != len(data):
                changed.add(rel)
                continue
            try:
                same = safe_files.read_bytes(self.directory, rel, len(data)) == data
            except OSError:  # it changed again while being read
                same = False
            if not same:
                changed.add(rel)
        return sorted(str(rel) for rel in changed)

    def restore(self) -> list[str]:
        changed = self.changed()
        for name in changed:
            rel = PurePosixPath(name)
            if rel in self.pinned:
                self._put_back(rel)
            else:
                safe_files.remove_tree(self.directory, rel)
        return changed

    def _put_back(self, rel: PurePosixPath) -> None:
        data, mode = self.pinned[rel]
        for depth in range(1, len(rel.parts)):  # a parent replaced by a file or a link
            parent = PurePosixPath(*rel.parts[:depth])
            try:
                if stat.S_ISDIR(safe_files.lstat(self.directory, parent).st_mode):
                    continue
            except OSError:
                break  # missing: made by the write
            safe_files.remove_tree(self.directory, parent)
            break
        try:
            safe_files.write_bytes(self.directory, rel, data, mode=mode)
        except IsADirectoryError:
            safe_files.remove_tree(self.directory, rel)
            safe_files.write_bytes(self.directory, rel, data, mode=mode)
