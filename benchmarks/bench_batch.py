"""Batch benchmark: concurrent vs sequential scripted batches, and per-step overhead.

    uv run python -m benchmarks.bench_batch [--runs 5] [--steps 15] [--skip-batch]

1. Runs the same 5-run scripted batch (full-size problem, cached baseline) concurrently
   and sequentially: wall-time ratio, and the graded speedups of the same candidate in
   both modes (timed executions are serialised, so they should agree within 5 %).
2. Harness overhead per step: a 15-step loop of cheap read_file calls, with the model
   answering instantly in-process, and through the real SDK against the loopback fake
   Messages API; the time inside tool dispatch is subtracted.
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from anthropic.types import Message

import agent
import batch
import tools
from problems.ml_training.declarations.complex_pipeline import COMPLEX_SPEC
from problems.ml_training.task import MLTrainingTask
from scripted_agent import ScriptedClient
from tests.fake_api import FakeMessagesAPI, Reply, tool_use

SETTINGS = agent.AgentSettings("claude-haiku-4-5", 15, 8192)


async def batch_modes(runs: int) -> None:
    problem = MLTrainingTask(COMPLEX_SPEC, progress=lambda m: None)
    await problem.figures()
    speedups = {}
    for concurrent in (True, False):
        with tempfile.TemporaryDirectory() as out:
            s = batch.BatchSettings(runs=runs, concurrent=concurrent, output_dir=Path(out),
                                    agent=SETTINGS, tools=tools.ToolSettings())
            started = time.monotonic()
            results = await batch.run_batch(problem, ScriptedClient(problem), s, lambda r, m: None)
            wall = time.monotonic() - started
        mode = "concurrent" if concurrent else "sequential"
        speedups[mode] = [r["speedup"] for r in results["runs"]]
        print(f"{mode}: wall {wall:.1f} s; statuses {[r['status'] for r in results['runs']]};"
              f" speedups {[round(x, 2) for x in speedups[mode]]}", flush=True)
        speedups[mode + "_wall"] = wall
    c, s_ = statistics.median(speedups["concurrent"]), statistics.median(speedups["sequential"])
    print(f"wall ratio sequential/concurrent: "
          f"{speedups['sequential_wall'] / speedups['concurrent_wall']:.2f}")
    print(f"median speedup concurrent {c:.2f}x vs sequential {s_:.2f}x: "
          f"difference {abs(c - s_) / s_:.1%} (goal <= 5 %)")


class _InstantMessages:
    ids = itertools.count(1)

    async def create(self, *, model, messages, **_):
        call = tool_use("read_file", {"path": "problem_data/slow_ml_training_complex.py"})
        return Message.model_validate({
            "id": f"msg_instant_{next(self.ids):06d}", "type": "message", "role": "assistant",
            "model": model, "content": [call], "stop_reason": "tool_use",
            "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}})

    def stream(self, **request):  # not used: SETTINGS below disable streaming
        raise NotImplementedError


class _InstantClient:
    messages = _InstantMessages()


async def step_overhead(steps: int) -> None:
    dispatch_time = 0.0
    real_dispatch = tools.dispatch

    async def timed_dispatch(*args, **kwargs):
        nonlocal dispatch_time
        started = time.monotonic()
        try:
            return await real_dispatch(*args, **kwargs)
        finally:
            dispatch_time += time.monotonic() - started

    agent.tools.dispatch = timed_dispatch
    settings = agent.AgentSettings("claude-haiku-4-5", steps, 1024, stream=False)
    reply = Reply([tool_use("read_file", {"path": "problem_data/slow_ml_training_complex.py"})],
                  stop_reason="tool_use")
    async with FakeMessagesAPI(lambda body, i: reply) as server:
        clients = {"in-process instant model": _InstantClient(),
                   "real SDK + loopback fake API": server.client(api_key="bench",
                                                                 max_retries=0)}
        for label, client in clients.items():
            for stream in (False, True) if label.startswith("real") else (False,):
                with tempfile.TemporaryDirectory() as ws:
                    ctx = tools.RunContext(Path(ws), MLTrainingTask(COMPLEX_SPEC))
                    tools.RUN.set(ctx)
                    dispatch_time = 0.0
                    s = agent.AgentSettings(settings.model, steps, 1024, stream=stream)
                    started = time.monotonic()
                    outcome = await agent.run_agent(
                        client, "bench", ["read_file"], s,
                        agent.Transcript(Path(ws) / "t.jsonl"))
                    wall = time.monotonic() - started
                per_step = (wall - dispatch_time) / outcome.steps
                print(f"{label} (stream={stream}): {outcome.steps} steps, "
                      f"{per_step * 1000:.1f} ms per step beyond tool work "
                      f"(tools {dispatch_time / outcome.steps * 1000:.1f} ms/step; goal < 50)")
    agent.tools.dispatch = real_dispatch


async def main(runs: int, steps: int, skip_batch: bool) -> None:
    await step_overhead(steps)
    if not skip_batch:
        await batch_modes(runs)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--skip-batch", action="store_true")
    a = p.parse_args()
    asyncio.run(main(a.runs, a.steps, a.skip_batch))
