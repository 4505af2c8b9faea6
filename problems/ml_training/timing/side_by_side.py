"""Two files timed in alternation, so that a slow spell of the machine cancels out.

:class:`SideBySide` runs a subject (a candidate, the baseline, a tier) between runs of
an anchor (the strict tier) on the same data, one timed execution at a time, and gives
the subject's times in the anchor's units.  The executions are ``executor``'s; what the
ratios mean is ``calibration``'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sandbox
from problems.ml_training.calibration import in_anchor_units
from problems.ml_training.timing.executor import Execution, Executor, timing_lock


class SideBySide:
    """Executions of a subject file in alternation with an anchor file (A S A S ... A),
    each timed on its own, one at a time, on the timing CPU.

    Before each subject execution ``around`` anchor executions run on the same data, and
    :meth:`close` runs the group after the last one.  ``units()`` gives each subject time
    over the median of the anchor times around it (``calibration.in_anchor_units``), so
    a slow spell of the machine that slows both cancels out.  ``anchor_probes`` go with
    the very first anchor execution only (strict mode's untimed probes)."""

    def __init__(self, subject: Executor, anchor: Executor, *, around: int = 1,
                 anchor_probes: dict[str, Any] | None = None):
        self.subject_executor, self.anchor_executor = subject, anchor
        self.around = max(1, around)
        self.anchor_probes = anchor_probes
        self.subject: list[Execution] = []
        self.anchors: list[list[Execution]] = []  # groups: before each subject, then after
        self.closed = False

    async def _anchor_group(self, data: dict[str, Any] | None) -> None:
        group = []
        for _ in range(self.around):
            await self.anchor_executor.ready()
            first = not self.anchors and not group
            async with timing_lock():
                group.append(await self.anchor_executor.run(
                    data=data, probes=self.anchor_probes if first else None))
        self.anchors.append(group)

    async def step(self, data: dict[str, Any] | None = None,
                   probes: dict[str, Any] | None = None) -> Execution:
        """One anchor group, then one subject execution, on ``data``."""
        if self.closed:
            raise RuntimeError("the side-by-side measurement is closed")
        # the subject's sandbox starts (imports torch) on the free CPU meanwhile
        warming = asyncio.ensure_future(self.subject_executor.ready())
        try:
            await self._anchor_group(data)
        except BaseException:  # the start is not waited for, but it is ended
            await sandbox.cancel_and_wait(warming)
            raise
        await warming
        async with timing_lock():
            execution = await self.subject_executor.run(data=data, probes=probes)
        self.subject.append(execution)
        return execution

    async def close(self, data: dict[str, Any] | None = None) -> None:
        """The anchor group after the last subject execution."""
        if not self.closed and self.subject:
            await self._anchor_group(data)
        self.closed = True

    def anchor_runs(self) -> list[Execution]:
        return [e for group in self.anchors for e in group]

    def anchor_times(self) -> list[list[float]]:
        return [[e.time for e in group if e.ok and e.time is not None]
                for group in self.anchors]

    def units(self) -> list[float]:
        times = [e.time if e.ok else None for e in self.subject]
        return in_anchor_units(times, self.anchor_times())
