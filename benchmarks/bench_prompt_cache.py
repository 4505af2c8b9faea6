"""Prompt caching: input billed at the full price over a scripted 15-step run, on and off.

    uv run python benchmarks/bench_prompt_cache.py

The fake Messages API (tests/fake_api.py) bills the cache from each request's
``cache_control`` breakpoint (``PromptCache``: about four characters of JSON a token).
The run reads the slow flagship pipeline, writes a whole file (the reference), makes
twelve small experiments and
submits, through the real SDK and the real tools; the same script is played with the
conversation cached for 1 hour and with caching off.  Costs use pricing.py's table for
claude-haiku-4-5.  Results: benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_api import FakeMessagesAPI, PromptCache  # noqa: E402
from test_agent_loop import OPT, OPT_SOURCE, StubProblem, fifteen_steps  # noqa: E402

import agent  # noqa: E402
import tools  # noqa: E402
from batch import outcome_cost  # noqa: E402

MODEL = "claude-haiku-4-5"
ALLOWED = ["read_file", "write_file", "python_expression", "submit_answer"]
HAIKU_MIN = 4096  # tokens: the shortest prefix Claude Haiku 4.5 caches


async def one(ttl: str | None) -> agent.AgentOutcome:
    with tempfile.TemporaryDirectory() as d:
        workspace = Path(d)
        (workspace / OPT).write_text(OPT_SOURCE)
        ctx = tools.RunContext(workspace, StubProblem())
        token = tools.RUN.set(ctx)
        try:
            cache = PromptCache(HAIKU_MIN)
            async with FakeMessagesAPI(fifteen_steps(), prompt_cache=cache) as server:
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
