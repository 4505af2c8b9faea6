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
from problems.ml_training.timing.executor import Execution, Executor
from problems.ml_training.timing.slots import timing_slot

# executions set aside (and their steps repeated) because the timing CPU was busy, at
# most, in one measurement
MAX_SET_ASIDE = 12


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
        self.set_aside: list[Execution] = []  # anchor runs repeated: their CPU was busy
        self._data: list[dict[str, Any] | None] = []  # each anchor group's data set
        self.closed = False
        self._reopened = False

    async def _anchor_group(self, data: dict[str, Any] | None) -> None:
        group = []
        for _ in range(self.around):
            await self.anchor_executor.ready()
            first = not self.anchors and not group
            async with timing_slot(_label(self.anchor_executor)):
                group.append(await self.anchor_executor.run(
                    data=data, probes=self.anchor_probes if first else None))
        self.anchors.append(group)
        self._data.append(data)

    async def step(self, data: dict[str, Any] | None = None,
                   probes: dict[str, Any] | None = None) -> Execution:
        """One anchor group, then one subject execution, on ``data``.

        An anchor group that ran beside something else on the timing CPU is set aside
        and run again (up to ``MAX_SET_ASIDE`` executions per measurement) before the
        subject runs.  Only the anchors decide, before the subject has run: how the
        subject's own execution looked (which it could shape, by running across the
        clock ticks ``/proc/stat`` samples or by leaving kernel work behind) never
        chooses whether that execution counts; its own contention is recorded."""
        if self.closed:
            raise RuntimeError("the side-by-side measurement is closed")
        # Both sandboxes start (import torch) on the untimed CPUs at once, and both are
        # up before anything is timed: a start beside a timed execution shares its caches
        # and memory bandwidth (and a subject could make its sandbox restart every time).
        warming = asyncio.ensure_future(self.subject_executor.ready())
        try:
            await asyncio.gather(self.anchor_executor.ready(), asyncio.shield(warming))
            if self._reopened:  # the closing group is this execution's group before it
                self._reopened = False
            else:
                await self._anchor_group(data)
            while (any(e.contended for e in self.anchors[-1])
                   and len(self.set_aside) < MAX_SET_ASIDE):
                # run again on the same data set: after reopen() that is the previous
                # subject execution's, whose only anchor runs on it may be these
                self.set_aside.extend(self.anchors.pop())
                await self._anchor_group(self._data.pop())
        except BaseException:  # the start is not waited for, but it is ended
            await sandbox.cancel_and_wait(warming)
            raise
        await warming
        async with timing_slot(_label(self.subject_executor)):
            execution = await self.subject_executor.run(data=data, probes=probes)
        self.subject.append(execution)
        return execution

    def contention(self) -> dict[str, Any]:
        """How often the timing CPU was found busy with something else: the anchor runs
        set aside and repeated, and the executions kept although contended (the
        subject's always; anchors' after ``MAX_SET_ASIDE`` were set aside)."""
        kept = [e for e in self.subject + self.anchor_runs() if e.contended]
        return {"set_aside": [e.timing_record() for e in self.set_aside],
                "contended_kept": len(kept),
                "on_cpu": [e.timing_record()["on_cpu"] for e in self.subject],
                "others_on_cpu": [e.others_on_cpu for e in self.subject],
                "load": [e.load for e in self.subject]}

    def reopen(self) -> None:
        """Go on after :meth:`close`: the closing anchor group becomes the group before
        the next subject execution (the groups still alternate with the subject's)."""
        if self.closed and self.subject:
            self.closed, self._reopened = False, True

    async def close(self, data: dict[str, Any] | None = None) -> None:
        """The anchor group after the last subject execution."""
        if not self.closed and self.subject:
            await self._anchor_group(data)
        self.closed = True

    def anchor_runs(self) -> list[Execution]:
        return [e for group in self.anchors for e in group]

    def anchor_times(self, clock: str = "wall") -> list[list[float]]:
        """Each group's anchor times on ``clock``: "wall" (the timer's interval) or
        "cpu" (the sandbox's CPU time over it)."""
        return [[t for e in group if (t := _time(e, clock)) is not None]
                for group in self.anchors]

    def units(self, clock: str = "wall") -> list[float]:
        """Each subject time over the median anchor time around it, on ``clock``."""
        times = [_time(e, clock) for e in self.subject]
        return in_anchor_units(times, self.anchor_times(clock))

    def complete_on(self, clock: str) -> bool:
        """Whether every execution has a time on ``clock`` (the CPU clock needs cgroups)."""
        runs = self.subject + self.anchor_runs()
        return bool(runs) and all(_time(e, clock) is not None for e in runs if e.ok)

    def clock(self) -> str:
        """The clock its ratios are judged on: the CPU clock where every execution has
        it, else the wall clock (``calibration.CLOCKS``)."""
        return "cpu" if self.complete_on("cpu") else "wall"


def _time(e: Execution, clock: str) -> float | None:
    if not e.ok or e.time is None:
        return None
    return e.cpu_time if clock == "cpu" else e.time


def _label(executor: Executor) -> str:
    """What a timing slot's holder is doing, as a waiting command shows it."""
    path = getattr(executor, "path", None)
    return f"timing {path.name}" if path is not None else "timing"
