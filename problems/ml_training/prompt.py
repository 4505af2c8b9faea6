"""What the agent is told: the task statement of an ML-training problem, written from
its declaration, and the scripted agent's trajectory.

The rules in the prompt are derived from the declared probes (``probes``) and the
grading options, so the prompt and the checks cannot disagree about what is watched.
Which tools are offered is the task's (``task``); judging is the grader's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from problems.ml_training import probes
from problems.ml_training.spec import PROJECT_ROOT, GradingOptions, TaskSpec

# What the prompt says of compiled training (issue 25's torch.compile variant: compiled
# kernels draw their dropout masks from a generator of their own by default).
COMPILED_DRAWS = ("Compiled code must draw as eager PyTorch does: torch.compile draws "
                  "dropout masks its own way unless `torch._inductor.config.fallback_random "
                  "= True`.")


def shown(path: Path) -> Path:
    """``path`` as the agent sees it: relative to the project where it is inside it."""
    return path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path


def prompt(spec: TaskSpec, opts: GradingOptions, workspace: Path, *, target: str,
           profiler: bool, intermediate: bool) -> str:
    """The task statement; ``target`` is how fast, in words ("at least 12.3x faster")."""
    rel, baseline = shown(workspace), shown(spec.baseline)
    steps = [
        f"1. Read `{baseline}` (read_file) to understand the pipeline.",
    ]
    if profiler:
        steps.append(f"{len(steps) + 1}. Profile it (profile_tool) to find the real "
                     "bottlenecks; the full slow pipeline takes minutes under the profiler.")
    steps.append(f"{len(steps) + 1}. Write your optimised version to `{rel}/"
                 f"{spec.optimized_name}` (write_file). You may run code with "
                 "python_expression.")
    if intermediate:
        steps.append(f"{len(steps) + 1}. Check it with submit_intermediate_answer: it is "
                     "graded exactly like a final answer and you get the figures and any "
                     "failing checks back, without ending the task.")
    steps.append(f"{len(steps) + 1}. Submit the file with submit_answer. This ends the "
                 "task.")
    watched, semantics = rules(spec, opts)
    return "\n".join([
        f"Optimise the training pipeline in `{baseline}` so that it runs {target} "
        "than the original, with the same model quality.",
        "",
        "Rules the grader enforces:",
        f"- Keep the names `{'`, `'.join(spec.required_classes)}`, `{spec.data_function}()` "
        f"and the entry function `{spec.entry}()`, defined at module top level; import "
        f"{', '.join(spec.required_imports)}.",
        f"- Fresh data: every execution gets a new data set of the same shape through "
        f"`{spec.data_function}()` (the grader replaces it), with labels that depend on "
        "the images; the model is scored on test labels your code never sees. Nothing "
        "about the data can be computed ahead of time. Call it exactly as the original "
        "does.",
        *watched,
        *semantics,
        "- Same split; keep the printed lines (feature shape, split sizes, "
        "`Test accuracy: x.xxxx`, `FINAL_TIME: s`). Results must be deterministic.",
        "- Each execution runs sandboxed in a fresh process: one CPU (extra threads or "
        "worker processes add no speed), no network, and a private scratch directory "
        "that is discarded afterwards, so nothing can be cached between executions. "
        "The grader's clock runs outside your process. Only your .py file is graded: "
        "compiled extensions and files beside it are not available to it.",
        "",
        "Suggested steps:",
        *steps,
        "",
        f"Your working directory is `{rel}`.",
    ])



def rules(spec: TaskSpec, opts: GradingOptions) -> tuple[list[str], list[str]]:
    """The prompt's rules about the watched components and the semantics mode, in
    the words of the declared probes."""
    feat, model, est = spec.features, spec.model, spec.estimator
    n_test = spec.scored.rows
    if model is not None:
        layers = sorted({k.split(".")[0] for k in model.weights})
        work = (f"`{model.cls}` must be trained on {model.train_rows} rows in total (all "
                "epochs, gradients flowing back through its output) and, in eval mode, "
                f"called on the {n_test} test rows in their original order.")
        scored = (f"- The grader computes the model's test predictions itself, from the "
                  f"weights `{model.cls}` has in eval mode and the inputs it is called on: "
                  f"keep its layers (`{'`, `'.join(layers)}`) and architecture, and call it "
                  f"in eval mode on the features `{feat.method}` computed for the test "
                  "images. Features must depend on the images alone.")
    else:
        params = ", ".join(f"{k}={v!r}" for k, v in est.params.items())
        work = (f"`{est.cls}` (scikit-learn) must be fitted on the {est.fit_rows} "
                f"training rows and predict the {n_test} test rows in their original "
                "order.")
        scored = (f"- The test predictions scored are what `{est.cls}.predict` returns "
                  f"on the features `{feat.method}` computed for the test images; keep "
                  f"the estimator as the original configures it ({params}). Features "
                  "must depend on the images alone. Inside the pipeline's first `predict` "
                  "after each fit, the grader also asks the fitted estimator about rows "
                  "of its own across the data's range: its answers must be the original "
                  "model's, fitted in full on the same rows.")
    watched = [f"- The grader times `{spec.entry}()` itself in a fresh process and watches "
               f"the work: `{feat.label}` must process all {feat.rows} images, and {work}",
               scored, probes.calls_rule(spec.probes)]
    if opts.strict:
        parts = [f"`{feat.cls}().{feat.method}` (normalisation included)"]
        if model is not None:
            parts += [f"`{model.cls}`'s `{name}`" for name in model.submodules]
            parts.append(f"its forward pass with weights it loads into "
                         f"`{'`, `'.join(sorted({k.split('.')[0] for k in model.weights}))}`")
        text = ("- Semantics: strict. Each component must compute the same function as "
                f"the original: the grader calls {', '.join(parts)} on inputs of its own, "
                "and compares the outputs with the original's (relative tolerance "
                f"{opts.strict_rtol:g}); it also compares what the pipeline itself "
                "computed in the timed run (the features of its images"
                + (", the model's eval-mode outputs" if model is not None else "")
                + ") with the original's function of the same inputs. ")
        if model is not None:
            text += ("Training must make the same random draws in the same order, so that "
                     "the trained weights match the original's on the same data (within "
                     f"{opts.weights_tolerance:g} of each tensor's scale, or as far as the "
                     "grader's own replays with the last bits perturbed land apart). "
                     + COMPILED_DRAWS + " ")
        semantics = [text + "Make the same computation fast; do not change the algorithm."]
    else:
        text = ("- Semantics: seed. You may change how a component computes (a different "
                "normalisation, say) as long as the model's quality holds: its accuracy "
                f"on fresh data must stay within {opts.accuracy_tolerance:g} of what the "
                "original reaches on the same data. ")
        if model is not None:
            text += (f"The model and its training must stay the original's: "
                     f"{spec.training}, with the same random draws in the same order. The "
                     "grader replays the original's training on your features and your "
                     f"trained weights must match it (within {opts.weights_tolerance:g} "
                     "of each tensor's scale, or as far as the grader's own replays with "
                     "the last bits perturbed land apart): make the training fast, do "
                     "not change what it computes. " + COMPILED_DRAWS)
        else:
            text += (f"The model must stay the original's: {spec.training}, with every "
                     "other parameter as the original leaves it, fitted on the same "
                     "training rows. The grader fits the original's estimator on your "
                     "features and your test predictions must be its predictions.")
        semantics = [text]
    return watched, semantics


def shortcut(spec: TaskSpec) -> str:
    """The reference training for one epoch (the scripted draft's mistake), or the
    original where its epoch loop is not found."""
    text, cut = spec.reference.read_text(), None
    if found := re.search(r"for epoch in range\((\d+)\)", text):
        cut = text[:found.start(1)] + "1" + text[found.end(1):]
    return cut if cut is not None and found.group(1) != "1" else spec.baseline.read_text()


def scripted_turns(spec: TaskSpec, tool_names: set[str], draft: bool = False
                   ) -> list[list[dict[str, Any]]]:
    """The offline scripted agent's turns: read, write the strict reference, profile and
    check it where those tools are offered, submit.  ``draft``: the first file written
    is the reference cut short (one training epoch instead of the original's, the
    classic shortcut the grader refuses; the original itself where no such loop is
    found), replaced by the reference only when the intermediate answer shows it."""
    baseline = shown(spec.baseline)
    name = spec.optimized_name

    def turn(text: str, tool: str, **arguments: Any) -> list[dict[str, Any]]:
        return [{"type": "text", "text": text},
                {"type": "tool_use", "name": tool, "input": arguments}]

    vectorised = turn("The Python loops are the obvious costs. Writing a vectorised "
                      "version that keeps the semantics.", "write_file", path=name,
                      content=spec.reference.read_text())
    turns = [turn("Let me read the pipeline first.", "read_file", path=str(baseline)),
             turn("A first draft: vectorised, and one epoch is enough.", "write_file",
                  path=name, content=shortcut(spec)) if draft else vectorised]
    if "profile_tool" in tool_names:
        turns.append(turn("Profiling the new version.", "profile_tool", path=name))
    if "submit_intermediate_answer" in tool_names:
        check = turn("Checking it against the grader.", "submit_intermediate_answer",
                     path=name)
        turns.append(check)
        if draft:  # the check shows the draft falls short: the real work, checked again
            turns += [vectorised, check]
    return turns + [turn("Submitting.", "submit_answer", path=name)]
