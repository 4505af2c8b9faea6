"""The CLI's flags: each command's parser, the bounds of every whole-number knob, and
the errors a bad flag or a bad value edited into ``main.CONFIG`` gives, and what an
experiment's ``--vary FIELD=a,b`` means (:func:`parse_vary`).

:func:`parse_args` returns the command, its flags and the config with them applied; a
flag is checked as it is parsed and the config before anything runs, so a typo such
as ``--runs 99999999999999999999`` is a usage error (status 2) instead of an
allocation.  What the config is and what each command does is ``main``'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from problem import GradingChoices, RuleError, TargetRule

# The range of each whole-number knob that sizes the harness's own work, stated once: a
# flag is checked as it is parsed, CONFIG before anything runs, so a typo such as
# `--runs 99999999999999999999` is a usage error instead of an allocation.
MIN_REPEATS = 3  # two executions on one data set (determinism), one relabelled (features)
MIN_THINKING = 1024  # the API's smallest extended-thinking budget
MAX_REPLY_TOKENS = 128_000  # above every model's reply limit (the preflight narrows it)
BOUNDS: dict[str, tuple[int, int]] = {
    "runs": (1, 1000),
    "max_steps": (1, 500),
    "max_tokens": (1, MAX_REPLY_TOKENS),
    "thinking": (MIN_THINKING, MAX_REPLY_TOKENS),  # and below max_tokens (batch_command)
    "repeats": (MIN_REPEATS, 50),  # timed executions of up to minutes each
    "baseline_repeats": (1, 50),
    "threads": (1, 64),
    "max_api_calls": (1, 64),
    "api_retries": (0, 10),
}
BOUND_NOTES = {"repeats": "the grader runs one data set twice (determinism) and its images "
                          "once more under other labels (features_from_images)"}

COMMANDS = """commands:
  main.py [flags]                 a batch of agent runs (this help)
  main.py --agent scripted        the same offline: a scripted agent, no API key
  main.py grade FILE [--json]     grade one file, no agent
  main.py calibrate [--json]      measure the baseline and the tiers on this machine
  main.py problems [--json]       every problem, its knobs and tiers
  main.py --problem a,b           a suite: a batch on each problem
  main.py experiment --vary F=x,y an A/B: a batch per value of F, runs interleaved
  main.py compare DIR_A DIR_B     two batches' records compared, with the tests
  main.py export-inspect DIR      a batch or an experiment as Inspect eval logs
each command has its own --help."""


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        text = "a number of thousands of digits"
    return text if len(text) <= 40 else text[:39] + "…"


def bound_error(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for the knob ``name`` of ``BOUNDS`` (None: it is)."""
    low, high = BOUNDS[name]
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return None
    note = f": {BOUND_NOTES[name]}" if name in BOUND_NOTES else ""
    return f"must be a whole number from {low} to {high}, got {_shown(value)}{note}"


def _bounded(name: str) -> Any:
    def parse(text: str) -> int:
        try:
            value: Any = int(text)
        except ValueError:  # not a whole number (2.5, x) or too many digits to parse
            value = text
        if why := bound_error(name, value):
            raise argparse.ArgumentTypeError(why)
        return value
    return parse


GRADING = tuple(f.name for f in dataclasses.fields(GradingChoices))


def knob_path(name: str) -> str:
    """Where the knob ``name`` is in ``main.Config``: ``grading.repeats``, ``runs``."""
    return f"grading.{name}" if name in GRADING else name


def knob(cfg: Any, name: str) -> Any:
    """The value of the knob ``name`` (a field of ``Config`` or of its ``grading``)."""
    return getattr(cfg.grading, name) if name in GRADING else getattr(cfg, name)


def config_errors(cfg: Any) -> list[str]:
    """Every bounded knob of ``cfg`` outside its range (a knob whose default is None may
    be None)."""
    if not isinstance(cfg.grading, GradingChoices):
        return [f"CONFIG.grading in main.py must be a GradingChoices(...) (problem.py), got "
                f"{type(cfg.grading).__name__}"]
    optional = {f.name for f in dataclasses.fields(cfg) if f.default is None}
    return [f"CONFIG.{knob_path(name)} in main.py {why} (its flag: --{name.replace('_', '-')})"
            for name in BOUNDS
            if not (knob(cfg, name) is None and name in optional)
            and (why := bound_error(name, knob(cfg, name)))]


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got "
                                             f"{text}")
        return value
    return parse


def _fraction(text: str) -> float:
    value = _positive(float)(text)
    if value > 2:
        raise argparse.ArgumentTypeError(f"a fraction of the reference speedup, e.g. 0.8; "
                                         f"got {text}")
    return value


def _target_rule(text: str) -> str:
    """A target rule's grammar, checked as the flag is parsed (whether the problem has
    the tier it names is the problem's: ``Problem.target_error``)."""
    try:
        TargetRule.parse(text)
    except RuleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _output_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a directory (default output/)")
    return Path(text).expanduser()  # `--output=~/x`: the shell leaves that ~ alone


def _save_name(text: str) -> str:
    if not text or "/" in text or text.startswith(".") or "\x00" in text:
        raise argparse.ArgumentTypeError(f"a plain folder name, got {text!r}")
    return text


def _address(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text.strip()):
        raise argparse.ArgumentTypeError(f"a Ray cluster's address such as 10.0.0.5:6379, "
                                         f"got {text!r}")
    return text.strip()


def _grading_flags(p: argparse.ArgumentParser, config: Any) -> None:
    from problems import registry

    def problems(text: str) -> str:
        names = [n.strip() for n in text.split(",")]
        if unknown := [n for n in names if n not in registry.names()]:
            raise argparse.ArgumentTypeError(f"unknown problem {unknown[0]!r}; valid: "
                                             f"{', '.join(registry.names())}")
        if len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"a problem named twice in {text!r}")
        return ",".join(names)

    p.add_argument("--problem", type=problems,
                   help=f"which problem (default {config.problem}; see `main.py problems`); "
                        "a batch takes several, comma-separated: a suite")
    p.add_argument("--target", type=_target_rule,
                   help="what passes: a speedup (33), a tier (vectorized) or a fraction of one "
                        "(0.9*strict); see `main.py calibrate`")
    p.add_argument("--relative-target", type=_fraction, dest="relative_target",
                   help="pass at this fraction of the reference solution's speedup")
    p.add_argument("--semantics", choices=["seed", "strict"],
                   help="seed: model quality must hold; strict: each component computes the "
                        "original's function")
    p.add_argument("--repeats", type=_bounded("repeats"),
                   help="timed executions per candidate")
    p.add_argument("--baseline-repeats", dest="baseline_repeats",
                   type=_bounded("baseline_repeats"),
                   help="timed executions of the baseline (when not cached)")
    p.add_argument("--threads", type=_bounded("threads"),
                   help="threads for baseline and candidate")
    p.add_argument("--no-cache", dest="use_cache", action="store_false", default=None,
                   help="re-measure the baseline instead of using the cached one")
    p.add_argument("--unsafe-no-sandbox", dest="unsafe_no_sandbox", action="store_true",
                   default=None, help="grade even when no sandbox (bubblewrap) is available")
    p.add_argument("--cluster", metavar="ADDRESS", type=_address,
                   help="measure and grade on the nodes of this Ray cluster (host:port; "
                        "needs the ray extra: uv sync --extra ray); the rest runs here")


def batch_parser(config: Any, prog: str = "main.py") -> argparse.ArgumentParser:
    """The flags of a batch (and of an experiment, which adds ``--vary``)."""
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a batch of agent runs on a problem, grade each, and write the "
                    "records (see --output).",
        epilog=COMMANDS)
    p.add_argument("--runs", type=_bounded("runs"))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrent", dest="concurrent", action="store_true", default=None)
    mode.add_argument("--sequential", dest="concurrent", action="store_false")
    p.add_argument("--no-intermediate", dest="include_intermediate_answer",
                   action="store_false", default=None)
    p.add_argument("--no-profiler", dest="include_profiler", action="store_false",
                   default=None)
    p.add_argument("--model")
    p.add_argument("--max-steps", dest="max_steps", type=_bounded("max_steps"))
    p.add_argument("--max-tokens", dest="max_tokens", type=_bounded("max_tokens"),
                   help=f"tokens per model reply (default {config.max_tokens})")
    p.add_argument("--max-api-calls", dest="max_api_calls",
                   type=_bounded("max_api_calls"),
                   help="model calls in flight at once across the batch")
    p.add_argument("--api-retries", dest="api_retries", type=_bounded("api_retries"),
                   help="the SDK's retries of a failed request (429, 5xx, connection)")
    streaming = p.add_mutually_exclusive_group()
    streaming.add_argument("--stream", dest="stream", action="store_true", default=None)
    streaming.add_argument("--no-stream", dest="stream", action="store_false")
    p.add_argument("--thinking", type=_bounded("thinking"), metavar="TOKENS",
                   help=f"extended thinking with this budget per reply (at least "
                        f"{MIN_THINKING}, below --max-tokens)")
    p.add_argument("--max-cost", dest="max_cost", type=_positive(float), metavar="USD",
                   help="stop the runs still going once the batch has cost this much")
    p.add_argument("--max-run-cost", dest="max_run_cost", type=_positive(float),
                   metavar="USD", help="stop a run once it has cost this much")
    p.add_argument("--prompt-cache", dest="prompt_cache", choices=["1h", "5m", "off"],
                   help=f"cache the conversation with this TTL, or not (default "
                        f"{config.prompt_cache})")
    p.add_argument("--output", type=_output_path,
                   help=f"records directory (default {config.output}/); the harness "
                        "deletes only what it wrote there")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted or killed batch in --output: keep its "
                        "finished runs, retry those that ended in an API error, run the "
                        "rest (the configuration must be the same)")
    p.add_argument("--beside-foreign", dest="beside_foreign", action="store_true",
                   help="write into --output although it holds entries the harness did "
                        "not write (they are never touched)")
    p.add_argument("--agent", choices=["claude", "scripted", "scripted-draft"],
                   help="claude (needs ANTHROPIC_API_KEY), or offline with no key: "
                        "scripted (plays the reference) or scripted-draft (its first "
                        "answer falls short in about half the runs)")
    p.add_argument("--save", type=_save_name, help="copy the batch to saved_outputs/NAME")
    _grading_flags(p, config)
    return p


# ---- --vary (main.py experiment) ----------------------------------------------------
def vary_value(config: Any, name: str, text: str) -> Any:
    """``text`` as a value of the knob ``name`` for ``--vary``, checked as its own flag
    checks it (its type, range and choices); ValueError (why) when it is not one.
    ``none`` is the default for a knob whose default is None; on/off for a switch."""
    owner = config.grading if name in GRADING else config
    default = next(f.default for f in dataclasses.fields(owner) if f.name == name)
    if default is None and text.lower() in ("none", "default"):
        return None
    if isinstance(default, bool):
        if text.lower() not in ("on", "off", "true", "false", "yes", "no"):
            raise ValueError(f"expected on or off, got {text!r}")
        return text.lower() in ("on", "true", "yes")
    action = next((a for a in batch_parser(config)._actions if a.dest == name), None)
    try:
        value = action.type(text) if action is not None and action.type else text
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None
    if action is not None and action.choices and value not in action.choices:
        raise ValueError(f"expected one of {', '.join(map(str, action.choices))}, got "
                         f"{text!r}")
    return Path(value) if isinstance(default, Path) else value


MAX_ARMS = 10  # values of --vary
# Fields an experiment cannot vary: they shape the experiment itself, not an arm.
FIXED = {"output": "the experiment's directory", "save": "where its copy goes",
         "runs": "the runs per arm", "concurrent": "how its runs are taken",
         "max_cost": "each part's cost limit, the same for every arm",
         "max_api_calls": "shared by all arms",
         "api_retries": "how the API is called", "problem": "use --problem a,b for a suite",
         "unsafe_no_sandbox": "isolation is not a factor to compare",
         "allow_unsandboxed": "isolation is not a factor to compare",
         "use_cache": "the baseline's cache", "grading": "vary its fields by name",
         "cluster": "where every arm is graded"}


class VaryError(ValueError):
    """A ``--vary`` the experiment cannot run; the message is for the operator."""


def parse_vary(text: str, cfg: Any) -> tuple[str, list[tuple[str, Any]]]:
    """``FIELD=a,b`` as the field's name and each arm's (label, value); VaryError for an
    unknown or fixed field, a bad value or fewer than two distinct values."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    fields = {f.name for f in dataclasses.fields(cfg)} | set(GRADING)
    if not sep or name not in fields:
        raise VaryError(f"{text!r}: expected FIELD=a,b with FIELD one of main.Config's "
                        f"fields or its grading's ({', '.join(sorted(fields - set(FIXED)))})")
    if name in FIXED:
        raise VaryError(f"{name} cannot be varied: {FIXED[name]}")
    words = [w.strip() for w in values.split(",")]
    if any(not w for w in words):
        raise VaryError(f"{text!r}: an empty value")
    arms = []
    for word in words:
        try:
            arms.append((f"{name}={word}", vary_value(cfg, name, word)))
        except ValueError as exc:
            raise VaryError(f"{name}={word}: {exc}") from None
    if len({json.dumps(v, default=str) for _, v in arms}) != len(arms):
        raise VaryError(f"{text!r}: each arm needs a value of its own")
    if not 2 <= len(arms) <= MAX_ARMS:
        raise VaryError(f"{text!r}: an experiment compares from 2 to {MAX_ARMS} values")
    return name, arms


def with_value(cfg: Any, name: str, value: Any) -> Any:
    if name in GRADING:
        return dataclasses.replace(cfg, grading=dataclasses.replace(cfg.grading,
                                                                    **{name: value}))
    return dataclasses.replace(cfg, **{name: value})


def parse_args(argv: list[str], config: Any) -> tuple[str, argparse.Namespace, Any]:
    """The command, its flags, and ``config`` (``main.CONFIG``) with the flags applied;
    a bad flag, or a knob of ``config`` out of its range, exits with status 2."""
    if errors := config_errors(config):  # first: the help texts below show its values
        argparse.ArgumentParser(prog="main.py").error("; ".join(errors))
    if argv[:1] == ["grade"]:
        p = argparse.ArgumentParser(prog="main.py grade", description="Grade one file.")
        p.add_argument("file", type=Path)
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        _grading_flags(p, config)
        args = p.parse_args(argv[1:])
        command = "grade"
    elif argv[:1] == ["problems"]:
        p = argparse.ArgumentParser(prog="main.py problems",
                                    description="List every problem, its knobs and tiers.")
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        args = p.parse_args(argv[1:])
        command = "problems"
    elif argv[:1] == ["calibrate"]:
        p = argparse.ArgumentParser(
            prog="main.py calibrate",
            description="Measure (or show, when cached) the baseline and the calibration "
                        "tiers on this machine, and what each target rule resolves to.")
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        p.add_argument("--check", action="store_true",
                       help="re-measure the baseline (--baseline-repeats executions) and "
                            "each tier beside the strict tier and say whether the cached "
                            "ladder still holds here (status 1 when it does not)")
        _grading_flags(p, config)
        args = p.parse_args(argv[1:])
        command = "calibrate"
    elif argv[:1] == ["experiment"]:
        p = batch_parser(config, "main.py experiment")
        p.description = ("Run one batch per value of a Config field (the arms), their runs "
                         "interleaved, and report the difference with its significance.")
        p.add_argument("--vary", required=True, metavar="FIELD=A,B",
                       help="the field and its values, e.g. include_intermediate_answer="
                            "on,off or model=claude-haiku-4-5,claude-sonnet-4-5")
        args = p.parse_args(argv[1:])
        command = "experiment"
    elif argv[:1] == ["compare"]:
        p = argparse.ArgumentParser(prog="main.py compare",
                                    description="Compare two batches' records: the same "
                                    "figures and tests as an experiment's report.")
        p.add_argument("first", type=Path, metavar="DIR_A")
        p.add_argument("second", type=Path, metavar="DIR_B")
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
        args = p.parse_args(argv[1:])
        command = "compare"
    elif argv[:1] == ["export-inspect"]:
        p = argparse.ArgumentParser(prog="main.py export-inspect",
                                    description="Write an Inspect eval log of a batch or "
                                    "an experiment (needs the extra: uv sync --extra "
                                    "inspect).")
        p.add_argument("directory", type=Path, metavar="DIR")
        p.add_argument("--to", type=Path, help="where to write the log(s)")
        args = p.parse_args(argv[1:])
        command = "export-inspect"
    else:
        p = batch_parser(config)
        args = p.parse_args(argv)
        command = "batch"
    def given(names: Any) -> dict[str, Any]:
        return {name: getattr(args, name) for name in names
                if getattr(args, name, None) is not None}

    grading = dataclasses.replace(config.grading, **given(GRADING))
    overrides = given(f.name for f in dataclasses.fields(config) if f.name != "grading")
    return command, args, dataclasses.replace(config, grading=grading, **overrides)
