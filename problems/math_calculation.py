"""The warm-up: an exact-answer calculation through ``python_expression``.

A user smoke-tests a key and a model with it in seconds and for a fraction of a cent:
the agent gets only the code tool and ``submit_value``; the answer is graded exactly,
against a value the harness computes itself.  The question's parameters are knobs.
"""

from __future__ import annotations

import asyncio
import errno
import stat
from pathlib import Path
from typing import Any

import safe_files
from problem import Check, GradeResult, Knob, Problem
from tools import ANSWER_FILE

MAX_ANSWER_BYTES = 10_000


def self_powers(n: int, digits: int) -> int:
    """The last ``digits`` digits of 1**1 + 2**2 + ... + n**n."""
    modulus = 10 ** digits
    return sum(pow(k, k, modulus) for k in range(1, n + 1)) % modulus


class MathCalculationProblem(Problem):
    name = "math"
    summary = "the warm-up: one exact calculation with python_expression (seconds, cents)"

    def __init__(self, n: int = 2718, digits: int = 12, max_steps: int = 5, **_: Any):
        self.n, self.digits, self.max_steps = n, digits, max_steps

    def knobs(self) -> list[Knob]:
        return [Knob("n", self.n, "the sum runs over k = 1..n"),
                Knob("digits", self.digits, "how many last digits are asked for"),
                Knob("max_steps", self.max_steps, "model calls per run"),
                Knob("tools", ", ".join(self.tool_names()), "fixed")]

    async def prepare(self) -> dict[str, Any]:
        return {"graded": "exactly, against the harness's own computation", "n": self.n,
                "digits": self.digits}

    def answer(self) -> int:
        return self_powers(self.n, self.digits)

    def tool_names(self) -> list[str]:
        return ["python_expression", "submit_value"]

    def prompt(self, workspace: Path) -> str:
        return (f"Compute the last {self.digits} digits of the sum 1**1 + 2**2 + 3**3 + ... + "
                f"{self.n}**{self.n} (k**k for k = 1 to {self.n}), as an integer without "
                f"leading zeros. You can run Python with python_expression. Submit the "
                f"integer with submit_value: this ends the task and it is graded exactly.")

    def fallback_candidates(self, workspace: Path) -> list[Path]:
        try:
            regular = stat.S_ISREG(safe_files.lstat(workspace, ANSWER_FILE).st_mode)
        except OSError:
            regular = False
        return [workspace / ANSWER_FILE] if regular else []

    async def grade(self, candidate: Path, *, progress: Any = None,
                    options: Any = None) -> GradeResult:
        """An exact comparison; bad input (missing, binary, huge, not an integer) fails
        the ``answer_format`` check with the reason."""
        expected = self.answer()
        candidate = Path(candidate)
        try:
            data = await asyncio.to_thread(safe_files.read_bytes, candidate.parent,
                                           candidate.name, MAX_ANSWER_BYTES)
        except OSError as exc:
            if exc.errno == errno.EFBIG:
                return self._failed("answer_format", f"the answer is over {MAX_ANSWER_BYTES} "
                                    "bytes")
            return self._failed("answer_format", f"cannot read {candidate}: "
                                f"{exc.strerror or exc}")
        text = data.decode("utf-8", errors="replace").strip().replace(",", "").replace("_", "")
        try:
            given = int(text)
        except ValueError:
            shown = text if len(text) <= 60 else text[:59] + "…"
            return self._failed("answer_format", f"not an integer: {shown!r}")
        checks = [Check("answer_format", True, "an integer"),
                  Check("exact_answer", given == expected,
                        "matches" if given == expected else f"{given} is not the answer")]
        passed = given == expected
        return GradeResult(passed=passed, checks=checks, score=1.0 if passed else 0.0,
                           details={"answer": given})

    @staticmethod
    def _failed(name: str, message: str) -> GradeResult:
        return GradeResult(passed=False, checks=[Check(name, False, message)], score=0.0)

    def scripted_turns(self, tool_names: set[str], draft: bool = False
                       ) -> list[list[dict[str, Any]]]:
        # The draft's mistake: range(1, n) leaves out the last term (no tool checks it).
        last = self.n if draft else self.n + 1
        code = (f"print(sum(pow(k, k, 10**{self.digits}) for k in range(1, {last}))"
                f" % 10**{self.digits})")
        value = self_powers(self.n - 1, self.digits) if draft else self.answer()
        return [[{"type": "text", "text": "Computing it with modular powers."},
                 {"type": "tool_use", "name": "python_expression", "input": {"code": code}}],
                [{"type": "text", "text": "Submitting the value."},
                 {"type": "tool_use", "name": "submit_value",
                  "input": {"answer": str(value)}}]]
