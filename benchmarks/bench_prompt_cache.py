"""Prompt caching: input billed at the full price over a scripted 15-step run, on and off.

    uv run python -m benchmarks.bench_prompt_cache

The fake Messages API (``tests/fake_api.py``) bills the cache from each request's
``cache_control`` breakpoint (``PromptCache``: about four characters of JSON a token).
The run reads the slow flagship pipeline, writes a whole file (the reference), makes
twelve small experiments and submits, through the real SDK and the real tools, for a
problem whose grader answers at once; the same script is played with the conversation
cached for 1 hour and with caching off.  Costs use pricing.py's table for
claude-haiku-4-5.  Results: benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import agent
import tools
from batch import outcome_cost
from problem import Check, GradeResult, Problem
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.spec import PROBLEM_DATA
from tests.fake_api import FakeMessagesAPI, PromptCache, fifteen_steps

MODEL = "claude-haiku-4-5"
ALLOWED = ["read_file", "write_file", "python_expression", "submit_answer"]
HAIKU_MIN = 4096  # tokens: the shortest prefix Claude Haiku 4.5 caches
SLOW = "problem_data/slow_ml_training_complex.py"
OPT = "optimized_ml_training.py"
OPT_SOURCE = "import numpy as np\n\n\ndef run_complex_training_pipeline():\n    return 0.1\n"


class CannedProblem(Problem):
    """A problem whose grader answers at once with a canned verdict (the run's cost is
    the conversation's, not a grading's)."""

    name = "canned"
    data_dir = PROBLEM_DATA

    def prompt(self, workspace: Path) -> str:
        return f"Make the pipeline fast. Your working directory is `{workspace}`."

    def tool_names(self) -> list[str]:
        return list(ALLOWED)

    async def grade(self, candidate: Path, **options: Any) -> GradeResult:
        return GradeResult(passed=True, checks=[Check("canned", True, "canned verdict")],
                           speedup=40.0, baseline_time=4.0, candidate_time=0.1,
                           candidate_times=[0.1], accuracy=0.1, baseline_accuracy=0.1,
                           target=33.0)


async def one(ttl: str | None) -> agent.AgentOutcome:
    with tempfile.TemporaryDirectory() as d:
        workspace = Path(d)
        (workspace / OPT).write_text(OPT_SOURCE)
        ctx = tools.RunContext(workspace, CannedProblem())
        token = tools.RUN.set(ctx)
        try:
            cache = PromptCache(HAIKU_MIN)
            script = fifteen_steps(SLOW, COMPLEX_SPEC.reference.read_text(), OPT)
            async with FakeMessagesAPI(script, prompt_cache=cache) as server:
                client = server.client(api_key="k")
                outcome = await agent.run_agent(
                    client, ctx.problem.prompt(workspace), ALLOWED,
                    agent.AgentSettings(MODEL, 15, 8192, True, ttl),
                    agent.Transcript(workspace / "transcript.jsonl"))
                await client.close()
        finally:
            tools.RUN.reset(token)
    return outcome


def cost(o: agent.AgentOutcome) -> float | None:
    return outcome_cost(MODEL, o)


async def main() -> None:
    off, on = await one(None), await one("1h")
    for name, o in (("caching off", off), ("cached, 1 h", on)):
        print(f"{name}: {o.steps} steps, full-price input {o.input_tokens}, written "
              f"{o.cache_creation_input_tokens}, read {o.cache_read_input_tokens}, output "
              f"{o.output_tokens}, cost ${cost(o):.4f}")
    print(f"full-price input drops by {1 - on.input_tokens / off.input_tokens:.1%}; "
          f"cost by {1 - cost(on) / cost(off):.1%}")


if __name__ == "__main__":
    asyncio.run(main())
