"""Gradings on a Ray cluster: a local cluster of a head and two worker nodes, each worker
with one timing slot, its own CPU, its own calibration cache and its own timing locks
(as two machines would have), and a scripted batch on a 100-sample pipeline across it.

The batch is run by ``main.main`` with ``--cluster``; the agent loops and the records
stay in this process.  The checks: gradings land on both nodes, each verdict names its
node and its node's calibration, and no two timed executions ever overlapped on one node
(from the intervals each verdict records).  Skipped when the ray extra is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REFERENCE, ROOT, SLOW_PIPELINE, scaled_copy

import cluster
import main
import reward
from problems import registry
from problems.math_calculation import MathCalculationProblem

N = 100
TARGET = 2.0
MIB = 1024**2
NODE = {"num_cpus": 1, "object_store_memory": 100 * MIB}


def small_problem(baseline: Path, reference: Path, settings: registry.Settings):
    """The complex problem at ``N`` samples, with a target a 100-sample pipeline can
    reach (a registry entry: the nodes build it from this function, sent by value)."""
    from problems.ml_training.declarations.complex_pipeline import complex_spec
    from problems.ml_training.spec import GradingOptions
    from problems.ml_training.task import MLTrainingTask

    options = replace(GradingOptions.of(settings.grading), repeats=2, baseline_repeats=1,
                      target=TARGET, accuracy_tolerance=0.5, min_timed_seconds=0)
    return MLTrainingTask(complex_spec(baseline, N, reference=reference), options,
                          include_profiler=settings.include_profiler,
                          include_intermediate_answer=settings.include_intermediate_answer,
                          progress=settings.progress)


class DyingProblem(MathCalculationProblem):
    """The warm-up, whose grading kills the worker that runs it."""

    async def grade(self, candidate, *, progress=None, options=None):
        os._exit(1)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head (no timing slot) and two worker nodes with one timing slot each; each node
    on a CPU of its own where there are two, with its own cache and timing locks."""
    try:
        ray = cluster.import_ray()
    except cluster.ClusterError:
        pytest.skip("the ray extra is not installed (uv sync --extra ray)")
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on the nodes
    root = tmp_path_factory.mktemp("nodes")
    cpus = sorted(os.sched_getaffinity(0))
    made = Cluster(initialize_head=True,
                   head_node_args={**NODE, "include_dashboard": False})
    nodes = []
    try:
        for i in range(2):
            own = {cpus[i % len(cpus)]}
            (root / f"node{i}").mkdir()
            env = {"HELLO_PY_CACHE_DIR": str(root / f"node{i}" / "cache"),
                   "HELLO_PY_TIMING_DIR": str(root / f"node{i}" / "timing")}
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, own)  # the node's processes inherit its CPU
            try:
                nodes.append(made.add_node(**NODE, resources={cluster.RESOURCE: 1},
                                           env_vars=env))
            finally:
                os.sched_setaffinity(0, before)
        made.wait_for_nodes()
        yield made
    finally:
        ray.shutdown()
        made.shutdown()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cluster_pipelines")
    # lexically under the checkout: the prompt names the baseline relative to it
    baseline = ROOT / os.path.relpath(scaled_copy(SLOW_PIPELINE, d / "slow.py", N), ROOT)
    return {"baseline": baseline, "reference": scaled_copy(REFERENCE, d / "ref.py", N)}


@pytest.fixture
def registered(monkeypatch, small):
    """The small problem (and a dying one) in the registry, as ``--problem`` takes it."""
    import functools

    monkeypatch.setitem(registry.BUILDERS, "small", functools.partial(
        small_problem, small["baseline"], small["reference"]))
    monkeypatch.setitem(registry.BUILDERS, "dying", lambda settings: DyingProblem())


def overlaps(intervals: list[dict]) -> list[tuple[dict, dict]]:
    ordered = sorted(intervals, key=lambda i: i["start"])
    return [(a, b) for a, b in zip(ordered, ordered[1:], strict=False) if b["start"] < a["end"]]


def test_overlaps_finds_two_intervals_that_share_time():
    a, b, c = {"start": 0, "end": 2}, {"start": 1, "end": 3}, {"start": 3, "end": 4}
    assert overlaps([c, b, a]) == [(a, b)]
    assert overlaps([a, c]) == []


# ---- what needs no cluster ------------------------------------------------------------
@pytest.mark.parametrize("why, ray_module", [("extra missing", None), ("unreachable", "ok")])
def test_a_cluster_that_cannot_be_used_stops_with_one_line(why, ray_module, monkeypatch,
                                                            capsys, tmp_path):
    if ray_module is None:
        monkeypatch.setitem(sys.modules, "ray", None)  # the import fails
    else:
        pytest.importorskip("ray")
    status = main.main(["--agent", "scripted", "--problem", "math", "--cluster",
                        "127.0.0.1:1", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert ("uv sync --extra ray" if ray_module is None else "cannot reach") in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # stopped before anything ran


# ---- a batch across the cluster -------------------------------------------------------
@pytest.mark.ci_extra  # about 100 s: every node calibrates, then grades
def test_a_scripted_batch_grades_on_both_nodes_without_overlapping_timings(
        ray_cluster, registered, tmp_path, monkeypatch):
    graded = []
    real = cluster.ClusterProblem.grade

    async def spy(self, candidate, **kwargs):  # every verdict, intermediate ones too
        result = await real(self, candidate, **kwargs)
        graded.append(result)
        return result

    monkeypatch.setattr(cluster.ClusterProblem, "grade", spy)
    out = tmp_path / "out"
    status = main.main(["--agent", "scripted", "--problem", "small", "--target", "2",
                        "--runs", "2", "--concurrent", "--no-profiler",
                        "--cluster", ray_cluster.address, "--output", str(out)])
    results = json.loads((out / "results.json").read_text())
    assert status == 0, results["runs"]
    assert [r["status"] for r in results["runs"]] == ["pass", "pass"], results["runs"]
    assert results["config"]["cluster"] == ray_cluster.address

    workers = {n["id"] for n in asyncio.run(cluster.timing_nodes())}
    assert len(workers) == 2
    # the driver's baseline came from the nodes: each measured its own calibration
    assert {n["node"]["id"] for n in results["baseline"]["nodes"]} == workers
    assert len(graded) == 4  # an intermediate and a final grading per run
    assert {r.details["node"]["id"] for r in graded} == workers
    for n in (1, 2):  # the records name the node of each final verdict
        record = json.loads((out / f"run_{n}" / "grade.json").read_text())
        assert record["details"]["node"]["id"] in workers
        assert record["details"]["calibration"]["baseline_time_s"] > 0

    by_node: dict[str, list[dict]] = {}
    for result in graded:
        assert result.details["timed_intervals"], "a grading with no timed execution"
        by_node.setdefault(result.details["node"]["id"], []).extend(
            result.details["timed_intervals"])
    for node, intervals in by_node.items():
        assert overlaps(intervals) == [], node
        assert len({i["cpu"] for i in intervals}) == 1  # the node's one timing CPU
    if len(os.sched_getaffinity(0)) >= 2:  # each node timed on a CPU of its own
        assert len({i["cpu"] for v in by_node.values() for i in v}) == 2


def test_a_worker_that_dies_is_the_runs_error_not_the_batchs(ray_cluster, registered,
                                                              tmp_path):
    out = tmp_path / "out"
    status = main.main(["--agent", "scripted", "--problem", "dying", "--runs", "1",
                        "--cluster", ray_cluster.address, "--output", str(out)])
    results = json.loads((out / "results.json").read_text())
    [run] = results["runs"]
    assert status == 0
    assert (run["status"], run["error_cause"]) == ("error", "grader"), run
    assert "failed" in run["reason"] and "node" in run["reason"]


# ---- the reward function on the cluster ----------------------------------------------
@pytest.mark.ci_extra  # a node's calibration first
def test_the_reward_function_grades_on_a_node(ray_cluster, registered, small):
    workers = {n["id"] for n in asyncio.run(cluster.timing_nodes())}
    got = reward.grade_source_sync(small["reference"].read_text(), "small",
                                   cluster=ray_cluster.address)
    assert got.error is None and got.passed, got
    assert got.node in workers
    assert got.score > 0 and got.speedup >= TARGET
    assert got.checks["speedup_target"][0] is True


def test_math_on_the_cluster_is_graded_exactly(ray_cluster):
    answer = str(MathCalculationProblem().answer())
    assert reward.grade_source_sync(answer, "math", cluster=ray_cluster.address).passed
    wrong = reward.grade_source_sync("12", "math", cluster=ray_cluster.address)
    assert (wrong.passed, wrong.score, wrong.error) == (False, 0.0, None)


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_candidate_the_driver_cannot_read_safely_is_never_sent(tmp_path, kind):
    """A FIFO is not waited on and a link is not followed on the driver: the local static
    gate refuses the file, and no node is ever asked (the address is never reached)."""
    path = tmp_path / "candidate.py"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        (tmp_path / "secret").write_text("the harness's secret\n")
        path.symlink_to(tmp_path / "secret")
    problem = cluster.build("127.0.0.1:9", "complex", registry.Settings())
    result = asyncio.run(asyncio.wait_for(problem.grade(path), 60))
    assert not result.passed
    assert result.checks[0].name == "candidate_readable" and not result.checks[0].passed
    assert "secret" not in json.dumps(result.to_dict())
