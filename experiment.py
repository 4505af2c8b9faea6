"""Experiments and suites: several batches run as one, their runs interleaved, and one
report over them.

    uv run main.py experiment --vary include_intermediate_answer=on,off --runs 10
    uv run main.py --problem complex,numpy,pytorch --runs 5      # a suite
    uv run main.py compare DIR_A DIR_B                           # two saved batches

An experiment has one *arm* per value of the varied ``Config`` field; a suite one part
per problem; an experiment over a suite one part per arm and problem.  Each part is an
ordinary batch in its own directory inside ``--output`` (its records, summary, manifest
and ``--resume`` are the batch's), opened with the group's directory as its parent
(``output_dir``).  The runs of all parts are taken in one interleaved order (arm A's
run 1, arm B's run 1, A's run 2, ...): one at a time with ``--sequential``, else all
started in that order and sharing ``max_api_calls``, so a slow afternoon or a change in
API latency falls on every arm alike.  The baselines are measured first, one part after
another, before any run starts.

At the top, ``experiment.json`` holds the figures (``comparison``), ``experiment.md``
the report and ``experiment.png`` the picture (``plots``).  The figures and tests are
``comparison``'s and ``significance``'s; building a part's problem, client and settings
is ``main``'s, passed in as ``kit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import console
import flags

REPORT, FIGURES, PICTURE = "experiment.md", "experiment.json", "experiment.png"
EXPERIMENT_RECORDS = (FIGURES, REPORT, PICTURE)
@dataclass(frozen=True)
class PartSpec:
    """A batch of the group: its arm's label (None in a suite), problem, directory name
    (inside the group's) and configuration."""

    arm: str | None
    problem: str
    directory: str
    cfg: Any  # main.Config


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-.")[:40] or "x"


def parts_of(cfg: Any, vary: tuple[str, list[tuple[str, Any]]] | None) -> list[PartSpec]:
    """The group's batches: each arm (or the one configuration) on each problem."""
    problems = cfg.problem.split(",")
    arms = ([(label, flags.with_value(cfg, vary[0], v)) for label, v in vary[1]] if vary
            else [(None, cfg)])
    parts = []
    for i, (label, arm_cfg) in enumerate(arms, 1):
        for problem in problems:
            arm_dir = f"arm_{i}_{_slug(label.partition('=')[2])}" if label else ""
            name = ".".join(filter(None, [arm_dir, problem if len(problems) > 1 else ""]))
            parts.append(PartSpec(label, problem, name,
                                  dataclasses.replace(arm_cfg, problem=problem)))
    return parts


class Turns:
    """When each run of the group may start: in ``order`` (a list of (part, run_id)),
    one at a time when ``one_at_a_time``, else all at once (the order is then the order
    they are started in).  A part that stops early withdraws its runs."""

    def __init__(self, order: list[tuple[int, int]], one_at_a_time: bool):
        self.order, self.one_at_a_time = list(order), one_at_a_time
        self._gone: set[tuple[int, int]] = set()
        self._changed = asyncio.Condition()

    def _next(self) -> tuple[int, int] | None:
        return next((k for k in self.order if k not in self._gone), None)

    @contextlib.asynccontextmanager
    async def _turn(self, key: tuple[int, int]) -> AsyncIterator[None]:
        if not self.one_at_a_time:
            yield
            return
        async with self._changed:
            await self._changed.wait_for(lambda: self._next() in (key, None))
        try:
            yield
        finally:
            await self._done({key})

    async def _done(self, keys: set[tuple[int, int]]) -> None:
        async with self._changed:
            self._gone |= keys
            self._changed.notify_all()

    def of(self, part: int) -> Any:
        """The turns of the part numbered ``part``, as ``batch.BatchSettings.turns``."""
        turns = self

        class PartTurns:
            def turn(self, run_id: int) -> Any:
                return turns._turn((part, run_id))

            async def withdraw(self) -> None:
                await turns._done({k for k in turns.order if k[0] == part})
        return PartTurns()


def interleaved(to_run: list[list[int]]) -> list[tuple[int, int]]:
    """Each part's runs (``to_run[part]``) in the group's order: every part's first run,
    then every part's second, ..."""
    longest = max((len(r) for r in to_run), default=0)
    return [(p, runs[i]) for i in range(longest) for p, runs in enumerate(to_run)
            if i < len(runs)]


def group_config(cfg: Any, vary: Any, parts: list[PartSpec]) -> dict[str, Any]:
    """What a resume must find the same: the varied field and values, the parts, and the
    configuration they share."""
    shared = {k: str(v) if isinstance(v, Path) else v
              for k, v in dataclasses.asdict(cfg).items() if k != "grading"}
    return {**shared, "grading": dataclasses.asdict(cfg.grading),
            "vary": vary[0] if vary else None,
            "arms": [label for label, _ in vary[1]] if vary else None,
            "parts": [p.directory for p in parts]}


def part_note(label: str) -> Callable[[int | None, str], None]:
    """A part's progress on the console, prefixed with its directory's name."""
    def note(run_id: int | None, message: str) -> None:
        console.say(f"{label}: " + (f"run {run_id}: " if run_id is not None else "")
                    + message)
    return note


def _part_errors(specs: list[PartSpec], kit: Any) -> str | None:
    for spec in specs:
        why = (kit.invalid_target_message(spec.cfg) or kit.missing_key_message(spec.cfg)
               or kit.cost_limit_error(spec.cfg))
        if why:
            return f"{spec.arm or spec.problem}: {why}" if spec.arm else why
    return None


async def run_group(cfg: Any, args: Any, kit: Any) -> int:
    """Run the experiment or suite ``cfg`` and ``args`` ask for (status as a batch's:
    2 usage, 3 no baseline, 4 records, 130 interrupted); ``kit``: ``main``, whose
    building blocks (problems, clients, settings, checks) each part uses."""
    from output_dir import OutputDir, OutputError

    try:
        vary = flags.parse_vary(args.vary, cfg) if args.command == "experiment" else None
    except flags.VaryError as exc:
        console.error(f"--vary {exc}")
        return 2
    specs = parts_of(cfg, vary)
    if why := _part_errors(specs, kit):
        console.error(why)
        return 2
    isolation = kit.sandbox_or_refusal(cfg)
    if isolation is None:
        return 2
    resume = bool(getattr(args, "resume", False))
    config = group_config(cfg, vary, specs)
    try:
        # --beside-foreign never writes a name that is not the harness's (a link there
        # included): the parts' and the report's names are checked before anything.
        top = OutputDir.open(cfg.output, runs=0, resume=resume,
                             beside_foreign=bool(getattr(args, "beside_foreign", False)),
                             names=(*(s.directory for s in specs), *EXPERIMENT_RECORDS))
        if resume:
            top.resume_plan(config, 0)  # the same experiment, or the differences named
    except OutputError as exc:
        console.error(exc, soft_wrap=True)
        if "top" in locals():
            top.close()
        return exc.status
    clients: list[Any] = []
    try:
        return await _run_group(cfg, vary, specs, config, top, isolation, resume, kit,
                                clients)
    finally:
        for client in clients:  # closed inside this loop, not by a finaliser in another
            if (close := getattr(client, "close", None)) is not None:
                await close()
        top.close()


async def _run_group(cfg: Any, vary: Any, specs: list[PartSpec], config: dict[str, Any],
                     top: Any, isolation: str, resume: bool, kit: Any,
                     clients: list[Any]) -> int:
    import batch
    from output_dir import MANIFEST, OutputDir, OutputError
    from problem import DataGuard, GraderError

    problems, settings, limits = [], [], {}
    for spec in specs:
        problems.append(kit.build_problem(spec.cfg, console.say))
        clients.append(kit.build_client(spec.cfg, problems[-1]))
        if spec.cfg.agent == "claude" and spec.cfg.model not in limits:
            from agent import PreflightError, preflight

            try:  # before anything is measured or touched
                limits[spec.cfg.model] = await preflight(clients[-1], spec.cfg.model)
            except PreflightError as exc:
                console.error(f"{exc} (nothing was run; {top.path} is untouched)")
                return 2
        try:
            settings.append(kit.batch_settings(spec.cfg, problems[-1], isolation,
                                               top.path / spec.directory,
                                               limits.get(spec.cfg.model, {})))
        except ValueError as exc:
            console.error(exc)
            return 2
    what = (f"experiment: {vary[0]} = {', '.join(str(v) for _, v in vary[1])}" if vary
            else f"suite: {cfg.problem}")
    mode = "one at a time" if not cfg.concurrent else "concurrently"
    console.say(f"{what}; {cfg.runs} run(s) per part, {len(specs)} parts interleaved "
                f"{mode}" + (f", agent {cfg.agent}" if not vary or vary[0] != "agent" else "")
                + f", sandbox {isolation}, records in {top.path}")
    outs: list[Any] = []
    status, interrupted = 0, False
    try:
        for problem in problems:  # the baselines first, one after another
            await problem.prepare()
        top.begin(config, resume=resume)
        top.claim(*(s.directory for s in specs), *EXPERIMENT_RECORDS)
        plans = []
        for spec, s in zip(specs, settings, strict=True):
            again = resume and (top.path / spec.directory / MANIFEST).exists()
            outs.append(OutputDir.open(top.path / spec.directory, runs=spec.cfg.runs,
                                       resume=again, parent=top))
            plans.append(outs[-1].resume_plan(s.config, spec.cfg.runs) if again else None)
            if plans[-1] is not None:
                console.say(f"{spec.directory}: resuming: {plans[-1].describe()}")
        to_run = [p.to_run if p else list(range(1, s.cfg.runs + 1))
                  for p, s in zip(plans, specs, strict=True)]
        turns = Turns(interleaved(to_run), one_at_a_time=not cfg.concurrent)
        slots = asyncio.Semaphore(cfg.max_api_calls)

        async def part(i: int) -> Any:
            problem = problems[i]
            guard = DataGuard(problem.data_dir) if problem.data_dir is not None else None
            try:
                return await batch.run_batch(
                    problem, clients[i], dataclasses.replace(
                        settings[i], turns=turns.of(i), api_slots=slots),
                    part_note(specs[i].directory), guard, outs[i], plans[i])
            finally:
                await turns.of(i).withdraw()

        ended = await asyncio.gather(*(part(i) for i in range(len(specs))),
                                     return_exceptions=True)
        for spec, result in zip(specs, ended, strict=True):
            if isinstance(result, BaseException):
                console.error(f"{spec.directory}: {result}", soft_wrap=True)
                status = 4 if isinstance(result, batch.RecordsError) else 3
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()  # handled: the report below is still written
        interrupted, status = True, kit.INTERRUPTED
    except GraderError as exc:
        console.error(exc, "could not measure the baseline")
        return 3
    except OutputError as exc:
        console.error(exc, soft_wrap=True)
        status = exc.status
    except OSError as exc:
        console.error(f"cannot keep records in {top.path}: {exc.strerror or exc}")
        status = kit.RECORDS_FAILED
    finally:
        for out in outs:
            out.close()
    return await _report(cfg, vary, specs, top, status, interrupted, kit)


def read_parts(top: Path, specs: list[PartSpec]) -> list[Any]:
    """The parts' recorded results (``comparison.Part``); a part with none yet is left
    out."""
    import comparison
    from records import BatchResults

    parts = []
    for spec in specs:
        with contextlib.suppress(ValueError):
            parts.append(comparison.Part(spec.arm, spec.problem, spec.directory,
                                         BatchResults.read(top / spec.directory)))
    return parts


def within_warnings(parts: list[Any], varied: str | None) -> list[str]:
    """What makes an arm's comparison with the first arm unfair, problem by problem."""
    import comparison

    warnings = []
    for part in parts:
        first = next(p for p in parts if p.problem == part.problem)
        if part is not first:
            warnings += [f"{part.directory} against {first.directory}: {w}" for w in
                         comparison.fairness_warnings(first.results, part.results,
                                                      {varied} if varied else set())]
    return warnings


def write_report(top: Path, parts: list[Any], varied: str | None, title: str,
                 warnings: list[str], sentences: list[str], stopped: bool = False,
                 planned: int = 0) -> None:
    """experiment.json, experiment.md and experiment.png (OSError: one was refused);
    ``sentences`` gets each comparison's verdict on its pass rates, for the console."""
    import comparison
    import plots
    import safe_files

    figures = {**comparison.report_json(parts, varied, warnings), "interrupted": stopped,
               "parts": [{"arm": p.arm, "problem": p.problem, "directory": p.directory}
                         for p in parts]}
    sentences[:] = [f"{c['arm']} against {c['against']}: {c['pass_rate_sentence']}"
                    for c in figures["comparisons"]]
    safe_files.write_bytes(top, FIGURES, (json.dumps(figures, indent=2, default=str)
                                          + "\n").encode(), make_parents=False)
    plots.write_experiment_plot(top / PICTURE, [(p.directory, p.results.runs,
                                                 p.results.baseline) for p in parts])
    text = comparison.render_report(parts, title, varied, warnings, PICTURE)
    if stopped:  # under the title
        head, _, rest = text.partition("\n\n")
        text = (f"{head}\n\n**Interrupted**: only the runs that finished are included "
                f"({sum(len(p.results.runs) for p in parts)} of {planned}).\n\n{rest}")
    safe_files.write_bytes(top, REPORT, text.encode(), make_parents=False)


async def _report(cfg: Any, vary: Any, specs: list[PartSpec], top: Any, status: int,
                  interrupted: bool, kit: Any) -> int:
    import saving
    import summary

    if not top.begun:  # interrupted while the baselines were measured: nothing touched
        if interrupted:
            console.say(console.interrupted_message(top, REPORT), "interrupted", "yellow")
        return status
    parts = read_parts(top.path, specs)
    title = (f"Experiment: {vary[0]} = {', '.join(label.partition('=')[2] for label, _ in vary[1])}"
             if vary else f"Suite: {cfg.problem.replace(',', ', ')}")
    warnings = within_warnings(parts, vary[0] if vary else None)
    written, sentences = False, []
    try:
        stopped = interrupted or any(p.results.interrupted for p in parts)
        await asyncio.to_thread(write_report, top.path, parts, vary[0] if vary else None,
                                title, warnings, sentences, stopped,
                                sum(s.cfg.runs for s in specs))
        written = True
    except OSError as exc:
        console.error(f"could not write the report in {top.path}: {exc.strerror or exc}")
        status = status or kit.RECORDS_FAILED
    try:
        top.end("interrupted" if interrupted else "finished", written=written)
    except OSError as exc:
        console.error(f"the manifest of {top.path} could not be updated: "
                      f"{exc.strerror or exc}")
    if interrupted:
        console.say(console.interrupted_message(top, REPORT), "interrupted", "yellow")
    if top.restored:
        return status
    for part in parts:
        console.say(f"{part.directory}: {summary.pass_rate_line(part.results.totals)}")
    for line in sentences:
        console.say(line)
    for warning in warnings:
        console.say(warning, "warning", "yellow")
    if written:
        console.say(f"report: {top.path / REPORT}", "done", "bold")
    if cfg.save:
        try:
            dest, left = await asyncio.to_thread(
                saving.save_group, top.path, [s.directory for s in specs],
                EXPERIMENT_RECORDS, saving.saved_outputs(), cfg.save)
        except OSError as exc:
            console.error(f"could not save the experiment to {saving.saved_outputs()}: "
                          f"{exc.strerror or exc}", soft_wrap=True)
            return kit.RECORDS_FAILED
        console.say(f"saved to {dest}" + (f" ({left} entries not copied: see each part's "
                                          f"{saving.SAVE_REPORT})" if left else ""))
    return status


def compare_command(args: Any) -> int:
    """``main.py compare DIR_A DIR_B``: the two batches' figures, the differences and
    their tests, and what makes the comparison unfair, on stdout."""
    import comparison
    from records import BatchResults

    try:
        a, b = BatchResults.read(args.first), BatchResults.read(args.second)
    except ValueError as exc:
        console.error(f"compare: {exc}")
        return 2
    names = [str(args.first), str(args.second)]
    if names[0] == names[1]:
        names = ["A: " + names[0], "B: " + names[1]]
    parts = [comparison.Part(name, str(r.config.get("problem", "?")), name, r)
             for name, r in zip(names, (a, b), strict=True)]
    warnings = comparison.fairness_warnings(a, b, set())
    if args.json:
        print(json.dumps(comparison.report_json(parts, None, warnings), default=str))
    else:
        print(comparison.render_report(parts, f"Comparison: {names[1]} against {names[0]}",
                                       None, warnings, None), end="")
    return 0
