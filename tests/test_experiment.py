"""Experiments and suites (``experiment``): --vary's values, the parts and their
directories, the interleaved order, and whole experiments offline (the scripted agent's
two behaviours) through ``main.main``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT
from test_batch import make_problem
from test_batch import pipelines as batch_pipelines

import experiment
import flags
import main
import scripted_agent
from records import RESULTS

CFG = main.CONFIG


# ---- --vary ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, name, values", [
    ("include_intermediate_answer=on,off", "include_intermediate_answer", [True, False]),
    ("include-profiler=yes,no", "include_profiler", [True, False]),
    ("model=claude-haiku-4-5,claude-sonnet-4-5", "model",
     ["claude-haiku-4-5", "claude-sonnet-4-5"]),
    ("max_steps=5,none", "max_steps", [5, None]),
    ("target=vectorized,0.9*strict", "target", ["vectorized", "0.9*strict"]),
    ("semantics=seed,strict", "semantics", ["seed", "strict"]),
    ("agent=scripted,scripted-draft", "agent", ["scripted", "scripted-draft"]),
    ("max_run_cost=0.5,1", "max_run_cost", [0.5, 1.0]),
    ("repeats=3,5,7", "repeats", [3, 5, 7]),
])
def test_vary_reads_each_value_as_its_flag_would(text, name, values):
    field, arms = flags.parse_vary(text, CFG)
    assert field == name and [v for _, v in arms] == values
    assert [label for label, _ in arms] == [f"{name}={w.strip()}"
                                            for w in text.partition("=")[2].split(",")]


@pytest.mark.parametrize("text, why", [
    ("colour=red,blue", "FIELD one of"),
    ("runs=5,10", "runs cannot be varied"),
    ("output=a,b", "cannot be varied"),
    ("problem=math,numpy", "--problem a,b"),
    ("include_intermediate_answer=on", "from 2 to 10 values"),
    ("model=" + ",".join(map(str, range(11))), "from 2 to 10 values"),
    ("include_intermediate_answer=on,yes", "a value of its own"),
    ("include_intermediate_answer=on,maybe", "expected on or off"),
    ("max_steps=5,0", "from 1 to 500"),
    ("repeats=2,3", "from 3 to 50"),  # the bound of its own flag
    ("agent=claude,robot", "expected one of"),
    ("semantics=seed,loose", "expected one of"),
    ("max_steps=5,,6", "an empty value"),
    ("model", "expected FIELD=a,b"),
])
def test_vary_refuses_what_no_experiment_can_run(text, why):
    with pytest.raises(flags.VaryError, match=None) as caught:
        flags.parse_vary(text, CFG)
    assert why in str(caught.value), caught.value


@pytest.mark.parametrize("vary, why", [
    ("max_steps=5,0", "--vary max_steps=0"),
    ("target=vectorized,fast", "target=fast: --target"),  # a tier the problem lacks
])
def test_a_bad_vary_is_one_line_and_status_2(tmp_path, capsys, vary, why):
    status = main.main(["experiment", "--vary", vary, "--agent", "scripted",
                        "--output", str(tmp_path / "x")])
    assert status == 2
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()  # nothing was written


# ---- the parts ---------------------------------------------------------------------------
def test_an_experiment_has_a_part_per_arm_and_problem():
    cfg = dataclasses.replace(CFG, problem="math,numpy")
    parts = experiment.parts_of(cfg, flags.parse_vary(
        "include_intermediate_answer=on,off", cfg))
    assert [(p.arm, p.problem, p.directory) for p in parts] == [
        ("include_intermediate_answer=on", "math", "arm_1_on.math"),
        ("include_intermediate_answer=on", "numpy", "arm_1_on.numpy"),
        ("include_intermediate_answer=off", "math", "arm_2_off.math"),
        ("include_intermediate_answer=off", "numpy", "arm_2_off.numpy")]
    assert [p.cfg.include_intermediate_answer for p in parts] == [True, True, False, False]
    assert {p.cfg.problem for p in parts} == {"math", "numpy"}


def test_a_suite_has_a_part_per_problem_and_a_grading_field_varies_the_grading():
    suite = experiment.parts_of(dataclasses.replace(CFG, problem="complex,math"), None)
    assert [(p.arm, p.directory) for p in suite] == [(None, "complex"), (None, "math")]
    [a, b] = experiment.parts_of(CFG, flags.parse_vary("target=strict,33", CFG))
    assert (a.cfg.grading.target, b.cfg.grading.target) == ("strict", "33")
    assert a.directory == "arm_1_strict" and b.directory == "arm_2_33"


def test_arm_directories_are_plain_names_whatever_the_value():
    [a, b] = experiment.parts_of(CFG, flags.parse_vary("model=../x/y,a b", CFG))
    assert (a.directory, b.directory) == ("arm_1_x-y", "arm_2_a-b")


# ---- the order ---------------------------------------------------------------------------
def test_runs_are_interleaved_across_parts():
    assert experiment.interleaved([[1, 2, 3], [1, 2], [4]]) == [
        (0, 1), (1, 1), (2, 4), (0, 2), (1, 2), (0, 3)]


async def test_one_at_a_time_the_runs_start_in_the_interleaved_order():
    order = experiment.interleaved([[1, 2, 3], [1, 2, 3]])
    turns = experiment.Turns(order, one_at_a_time=True)
    started, running = [], []

    async def run(part: int, run_id: int) -> None:
        async with turns.of(part).turn(run_id):
            started.append((part, run_id))
            running.append(1)
            assert len(running) == 1  # never two at once
            await asyncio.sleep(0.001 * (3 - run_id))
            running.pop()

    # started in the worst order: part 1's runs first, last run first
    await asyncio.gather(*(run(p, r) for p in (1, 0) for r in (3, 2, 1)))
    assert started == order


async def test_a_part_that_stops_early_does_not_hold_the_others():
    turns = experiment.Turns(experiment.interleaved([[1, 2], [1, 2]]), one_at_a_time=True)
    started = []

    async def run(run_id: int) -> None:
        async with turns.of(1).turn(run_id):
            started.append(run_id)

    await turns.of(0).withdraw()  # part 0 ended before its runs (a failed baseline)
    await asyncio.wait_for(asyncio.gather(run(1), run(2)), 5)
    assert started == [1, 2]


# ---- whole experiments, offline ----------------------------------------------------------
def test_the_draft_behaviour_falls_short_in_about_half_the_runs():
    draws = [scripted_agent.falls_short(f"/tmp/out/arm_1/run_{i}") for i in range(400)]
    assert 0.4 < sum(draws) / len(draws) < 0.6
    assert draws == [scripted_agent.falls_short(f"/tmp/out/arm_1/run_{i}")
                     for i in range(400)]  # the same run drafts the same way every time


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_an_experiment_with_the_two_scripted_behaviours(tmp_path, capsys):
    # Arm 1 plays the reference (always right); arm 2 drafts a mistake in about half its
    # runs, which nothing on the math problem shows it.  Each arm's verdicts are known
    # run by run from the draw, so the report's figures can be checked exactly.
    out = tmp_path / "exp"
    status = main.main(["experiment", "--vary", "agent=scripted,scripted-draft",
                        "--problem", "math", "--runs", "6", "--sequential",
                        "--output", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    first, second = out / "arm_1_scripted", out / "arm_2_scripted-draft"
    wrong = [scripted_agent.falls_short(str((second / f"run_{i}").resolve()))
             for i in range(1, 7)]
    a, b = load(first / RESULTS), load(second / RESULTS)
    assert [r["status"] for r in a["runs"]] == ["pass"] * 6
    assert [r["status"] for r in b["runs"]] == ["fail" if w else "pass" for w in wrong]
    assert a["config"]["agent"] == "scripted" and b["config"]["agent"] == "scripted-draft"
    # Interleaved, one at a time: arm 1's run 1, arm 2's run 1, arm 1's run 2, ...
    steps = re.findall(r"(arm_\S+): (run \d+): step 1/", printed.err)
    assert steps == [(arm, f"run {i}") for i in range(1, 7)
                     for arm in ("arm_1_scripted", "arm_2_scripted-draft")], steps
    figures = load(out / experiment.FIGURES)
    report = (out / experiment.REPORT).read_text()
    assert (out / experiment.PICTURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Fisher" in report and "power" in report
    assert figures and "agent" in json.dumps(figures)
    manifest = load(out / ".hello-py-manifest.json")
    assert {"arm_1_scripted", "arm_2_scripted-draft", *experiment.EXPERIMENT_RECORDS} <= set(
        manifest["entries"])


def test_a_second_experiment_in_the_same_directory_replaces_the_first(tmp_path):
    out = tmp_path / "exp"
    argv = ["experiment", "--vary", "agent=scripted,scripted-draft", "--problem", "math",
            "--runs", "2", "--output", str(out)]
    assert main.main(argv) == 0
    (out / "arm_1_scripted" / "run_1" / "marker").write_text("old")
    assert main.main(argv) == 0
    assert not (out / "arm_1_scripted" / "run_1" / "marker").exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "arm_1_scripted", "arm_2_scripted-draft", *sorted(experiment.EXPERIMENT_RECORDS)]


def test_an_experiment_resumes_only_with_the_same_arms(tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["experiment", "--problem", "math", "--runs", "2", "--output", str(out)]
    assert main.main([*argv, "--vary", "agent=scripted,scripted-draft"]) == 0
    capsys.readouterr()
    assert main.main([*argv, "--vary", "agent=scripted-draft,scripted", "--resume"]) == 2
    assert "configuration differs" in capsys.readouterr().err
    assert main.main([*argv, "--vary", "agent=scripted,scripted-draft", "--resume"]) == 0
    assert "arm_2_scripted-draft: resuming: 2 finished run(s) kept" in " ".join(
        capsys.readouterr().err.split())


def test_a_problem_named_twice_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main.main(["--agent", "scripted", "--problem", "math,math", "--output",
                   str(tmp_path / "suite")])
    assert stopped.value.code == 2 and "named twice" in capsys.readouterr().err
    assert not (tmp_path / "suite").exists()


@pytest.fixture(scope="session")
def pipelines(tmp_path_factory):  # test_batch's: the flagship at N samples
    return batch_pipelines.__wrapped__(tmp_path_factory)


def small_problems(monkeypatch, pipelines):
    """main's problems, the flagship's at N samples (test_batch's): seconds a grading."""
    real = main.build_problem

    def build(cfg, progress=None, name=None):
        if (name or cfg.problem) != "complex":
            return real(cfg, progress, name)
        return make_problem(pipelines,
                            include_intermediate_answer=cfg.include_intermediate_answer,
                            include_profiler=cfg.include_profiler)
    monkeypatch.setattr(main, "build_problem", build)


def test_a_suite_runs_a_batch_per_problem(tmp_path, monkeypatch, pipelines, capsys):
    small_problems(monkeypatch, pipelines)
    out = tmp_path / "suite"
    assert main.main(["--agent", "scripted", "--problem", "math,complex", "--runs", "2",
                      "--no-profiler", "--no-intermediate", "--sequential", "--output",
                      str(out)]) == 0
    for part in ("math", "complex"):
        assert [r["status"] for r in load(out / part / RESULTS)["runs"]] == ["pass"] * 2
    report = (out / experiment.REPORT).read_text()
    assert "math" in report and "complex" in report
    figures = load(out / experiment.FIGURES)
    assert figures["varied"] is None and len(figures["arms"]) == 1


@pytest.mark.ci_extra  # about two minutes: six runs of the flagship, twelve gradings
def test_the_intermediate_tool_experiment_offline(tmp_path, monkeypatch, pipelines, capsys):
    # The seed's headline, offline: the drafting agent corrects its draft only when the
    # intermediate answer shows it falls short, so the arm with the tool passes every run
    # and the arm without passes exactly the runs whose draft was right.
    small_problems(monkeypatch, pipelines)
    out = tmp_path / "exp"
    assert main.main(["experiment", "--vary", "include_intermediate_answer=on,off",
                      "--agent", "scripted-draft", "--problem", "complex", "--runs", "3",
                      "--no-profiler", "--sequential", "--output", str(out)]) == 0, \
        capsys.readouterr().err
    on, off = out / "arm_1_on", out / "arm_2_off"
    wrong = [scripted_agent.falls_short(str((off / f"run_{i}").resolve())) for i in (1, 2, 3)]
    assert [r["status"] for r in load(on / RESULTS)["runs"]] == ["pass"] * 3
    assert [r["status"] for r in load(off / RESULTS)["runs"]] == [
        "fail" if w else "pass" for w in wrong]
    for i in (1, 2, 3):
        calls = load(on / f"run_{i}" / "run.json")["tool_calls"]
        drafted = scripted_agent.falls_short(str((on / f"run_{i}").resolve()))
        assert calls["submit_intermediate_answer"] == (2 if drafted else 1)
    figures = load(out / experiment.FIGURES)
    [comparison] = figures["comparisons"]
    assert comparison["pass_rate_difference"] == pytest.approx(-sum(wrong) / 3)
    assert "power" in (out / experiment.REPORT).read_text()


def test_compare_reports_two_batches_and_what_differs(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main.main(["--agent", "scripted", "--problem", "math", "--runs", "3",
                      "--output", str(a)]) == 0
    assert main.main(["--agent", "scripted-draft", "--problem", "math", "--runs", "3",
                      "--output", str(b)]) == 0
    capsys.readouterr()
    assert main.main(["compare", str(a), str(b)]) == 0
    report = capsys.readouterr().out
    assert "Fisher" in report and "agent" in report  # the configurations differ in agent
    assert main.main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    assert "compare:" in capsys.readouterr().err


def test_the_root_of_the_checkout_is_never_an_experiment_directory(capsys):
    assert main.main(["experiment", "--vary", "agent=scripted,scripted-draft", "--problem",
                      "math", "--output", str(ROOT)]) == 2
    assert "checkout" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["arm_1_scripted", "experiment.md", "link"])
def test_beside_foreign_never_writes_a_name_of_the_user_s(tmp_path, capsys, name):
    out = tmp_path / "exp"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    if name == "link":  # a link planted at an arm's name, to a directory elsewhere
        name = "arm_1_scripted"
        (out / name).symlink_to(victim)
    elif name.endswith(".md"):
        (out / name).write_text("my notes")
    else:
        (out / name).mkdir()
        (out / name / "thesis.tex").write_text("precious")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    argv = ["experiment", "--vary", "agent=scripted,scripted-draft", "--problem", "math",
            "--runs", "1", "--output", str(out), "--beside-foreign"]
    for _ in range(2):  # the second time finds nothing of the first's to claim either
        assert main.main(argv) == 2
        assert "hello-py did not write" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == [name]  # not even a lock or manifest
    assert list(victim.iterdir()) == []


def test_an_empty_vary_is_a_usage_error(tmp_path, capsys):
    assert main.main(["experiment", "--vary", "", "--agent", "scripted", "--problem",
                      "math", "--output", str(tmp_path / "x")]) == 2
    assert "expected FIELD=a,b" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_experiment_exports_to_inspect_and_its_report_marks_an_interruption(tmp_path):
    inspect_log = pytest.importorskip("inspect_log")
    pytest.importorskip("inspect_ai.log")
    out = tmp_path / "exp"
    assert main.main(["experiment", "--vary", "agent=scripted,scripted-draft", "--problem",
                      "math", "--runs", "2", "--output", str(out)]) == 0
    figures = load(out / experiment.FIGURES)
    assert [p["directory"] for p in figures["parts"]] == ["arm_1_scripted",
                                                         "arm_2_scripted-draft"]
    assert figures["interrupted"] is False
    assert main.main(["export-inspect", str(out)]) == 0
    assert len(list((out / inspect_log.INSPECT_DIR).glob("*.eval"))) == 2
    specs = experiment.parts_of(dataclasses.replace(CFG, problem="math"),
                                flags.parse_vary("agent=scripted,scripted-draft", CFG))
    parts = experiment.read_parts(out, specs)
    experiment.write_report(out, parts, "agent", "Experiment", [], [], stopped=True,
                            planned=10)
    assert "**Interrupted**: only the runs that finished are included (4 of 10)" in (
        out / experiment.REPORT).read_text()
