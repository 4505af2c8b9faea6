"""What isolation costs per child: each backend against none, side by side.

    uv run python benchmarks/bench_sandbox.py [--repeats 10]

For every backend the machine has, alternating so drift hits all alike, it times
(1) ``python -c pass`` through ``sandbox.run_python`` and (2) one timed execution of a
trivial candidate through ``problems.measurement.execute`` (interpreter, torch import,
timer, fork), and prints the medians and each backend's overhead over ``none``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sandbox  # noqa: E402
from problems.measurement import Instrumentation, execute  # noqa: E402

CANDIDATE = "def run_complex_training_pipeline():\n    return 0.0\n"
INST = Instrumentation(entry="run_complex_training_pipeline", feature_class="X",
                       feature_method="y", model_class="Z", keep_predictions=0)


async def main(repeats: int) -> None:
    backends = sandbox.available_backends()
    plain: dict[str, list[float]] = {b: [] for b in backends}
    timed: dict[str, list[float]] = {b: [] for b in backends}
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
                e = await execute(candidate, INST, threads=1, limits=sandbox.Limits())
                sandbox.force_isolation(None)
                assert e.ok, e.error
                timed[backend].append(e.wall_time)
    base_plain, base_timed = statistics.median(plain["none"]), statistics.median(timed["none"])
    print(f"{repeats} alternating repeats; medians in seconds (overhead over 'none')")
    print(f"{'backend':<9} {'python -c pass':>22} {'timed execution':>24}")
    for b in backends:
        p, t = statistics.median(plain[b]), statistics.median(timed[b])
        print(f"{b:<9} {p:>10.3f} ({p - base_plain:+.3f}) {t:>14.3f} ({t - base_timed:+.3f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    asyncio.run(main(parser.parse_args().repeats))
