"""What isolation costs per child: each backend against none, side by side.

    uv run python -m benchmarks.bench_sandbox [--repeats 10]

For every backend the machine has, alternating so drift hits all alike, it times
(1) ``python -c pass`` through ``sandbox.run_python``, (2) one timed execution of a
trivial candidate in a sandbox of its own through
``problems.ml_training.timing.executor.execute`` (sandbox, interpreter, torch import,
timer, template, fork), timed around the call, and (3) in one warm ``Executor``, each
execution's wall time (job sent to output received, clean-up included) minus its timed
part: the overhead an execution costs once the sandbox is warm.  It prints the medians
and each backend's overhead over ``none``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import sandbox
from problems.ml_training.timing.executor import Executor, Instrumentation, execute

CANDIDATE = "def run_complex_training_pipeline():\n    return 0.0\n"
INST = Instrumentation(entry="run_complex_training_pipeline")


async def main(repeats: int) -> None:
    backends = sandbox.available_backends()
    plain: dict[str, list[float]] = {b: [] for b in backends}
    timed: dict[str, list[float]] = {b: [] for b in backends}
    warm: dict[str, list[float]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        candidate = work / "candidate.py"
        candidate.write_text(CANDIDATE)
        for _ in range(repeats):
            for backend in backends:
                r = await sandbox.run_python(["-c", "pass"], visibility=sandbox.Visibility(work),
                                             isolation=backend)
                assert r.ok, r.stderr
                plain[backend].append(r.wall_time)
                sandbox.force_isolation(backend)
                started = time.monotonic()
                e = await execute(candidate, INST, threads=1, limits=sandbox.Limits())
                timed[backend].append(time.monotonic() - started)
                assert e.ok, e.error
                sandbox.force_isolation(None)
        for backend in backends:
            sandbox.force_isolation(backend)
            async with Executor(candidate, INST, threads=1, limits=sandbox.Limits()) as ex:
                for _ in range(repeats):
                    e = await ex.run()
                    assert e.ok, e.error
                    warm[backend].append(e.wall_time - e.time)
            assert ex.sandboxes == 1, "the sandbox was restarted"
            sandbox.force_isolation(None)
    base_plain, base_timed = statistics.median(plain["none"]), statistics.median(timed["none"])
    print(f"{repeats} alternating repeats; medians in seconds (overhead over 'none')")
    print(f"{'backend':<9} {'python -c pass':>22} {'one-shot execution':>24} "
          f"{'warm: beyond timed part':>24} {'(max)':>7}")
    for b in backends:
        p, t, w = (statistics.median(x[b]) for x in (plain, timed, warm))
        print(f"{b:<9} {p:>10.3f} ({p - base_plain:+.3f}) {t:>14.3f} ({t - base_timed:+.3f})"
              f" {w:>24.3f} {max(warm[b]):>7.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    asyncio.run(main(parser.parse_args().repeats))
