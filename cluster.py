"""Gradings on the nodes of a Ray cluster (``--cluster ADDRESS``; needs the ``ray`` extra).

:class:`ClusterProblem` stands in for a problem: the prompt, the tools, the fallback
files and the scripted agent's turns are the local problem's, unchanged, so the agent
loops, the records and the summary stay on the driver exactly as without a cluster.
What measures (``prepare``, ``calibrate``, ``grade``, ``strategy``) runs as a Ray task
on a node instead: the task gets the candidate's bytes (read here, never a path on the
driver), writes them into a private directory of its own, builds the problem with the
driver's registry entry and the same settings, and sends back ``GradeResult.to_dict()``
with the node that graded it and the calibration it used.  A node measures on its own
machine with its own calibration (its cache, ``problem.cache_dir``), so a speedup is
always chained through the ladder of the node that timed it.

Each task asks for one ``timing_slot``: a node advertises as many as it has timing CPUs
(``uv run cluster.py`` prints them for ``ray start --resources``), so a node never runs
more gradings than it can time at once; on the node, the timing slots
(``problems/ml_training/timing/slots.py``) keep each timed execution alone on its CPU.
Tasks go to the node with the fewest gradings in flight per slot.  Every node runs the
same checkout at the same path with the same venv (``uv sync --extra ray``), started as
``uv run ray start ...`` from the checkout: Ray's own ``uv run`` propagation, which
would rebuild the venv for every job, is turned off.

A fault of the cluster (a worker or node that died, a task that could not run) raises
:class:`ClusterError` for that grading only; the batch records it as the run's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from problem import Check, GraderError, GradeResult

log = logging.getLogger(__name__)
RESOURCE = "timing_slot"  # a node's custom resource: one per timing CPU
EXTRA_HINT = "the ray extra is not installed: uv sync --extra ray"
# More than every problem accepts (the ML problems refuse files over 1 MB): what is cut
# off beyond this changes no verdict.
MAX_SOURCE_BYTES = 4 * 1024**2
CONNECT_TIMEOUT = 5.0  # seconds to reach the head's port before ray.init is tried
METHODS = ("prepare", "calibrate", "check_calibration", "grade", "strategy")


_connected_to: str | None = None  # the address this module connected to
_connecting = threading.Lock()


class ClusterError(GraderError):
    """The cluster cannot be used, or failed one grading: the harness's fault, never the
    candidate's (a ``GraderError``); one line for the operator."""


def import_ray() -> Any:
    """The ``ray`` module, imported so that a driver under ``uv run`` does not ship its
    environment to the workers (they use the node's venv); ClusterError without it."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError(EXTRA_HINT) from None
    return ray


def _probe(address: str) -> None:
    """Refuse at once an address where nothing listens (ray.init would retry for
    minutes); ``auto`` and addresses without a port are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: "
                           f"{exc.strerror or exc}") from None


def connect(address: str) -> None:
    """Connect this process to the cluster at ``address``, unless it already is (a
    connection made elsewhere, e.g. by an RL trainer's own ``ray.init``, is kept as it
    is).  ClusterError, one line, when the extra is missing or the cluster cannot be
    reached."""
    global _connected_to
    ray = import_ray()
    with _connecting:  # gradings started at once connect once
        if ray.is_initialized():
            if _connected_to in (None, address):
                return
            ray.shutdown()  # ours, to another cluster
        _connected_to = None
        _probe(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 (Ray raises several kinds; one line each)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterError(f"cannot connect to the Ray cluster at {address}: "
                               f"{first}") from None
        _connected_to = address


def connect_error(address: str) -> str | None:
    """Why the cluster at ``address`` cannot be used (None: connected)."""
    try:
        connect(address)
    except ClusterError as exc:
        return str(exc)
    return None


def node_resources() -> dict[str, int]:
    """What this machine advertises as a node: a timing slot per timing CPU."""
    import sandbox

    return {RESOURCE: len(sandbox.timing_cpus())}


# ---- on the node ------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """What a node needs to build the driver's problem: its name, the driver's registry
    entry for it (so both build the same problem) and the registry's settings."""

    problem: str
    builder: Callable[[Any], Any]
    settings: Any  # problems.registry.Settings, without its progress callback


_loop: asyncio.AbstractEventLoop | None = None  # one per worker process, kept between tasks
_built: dict[tuple[str, Any], Any] = {}  # the problems it built: their measurements kept


def _problem(job: Job) -> Any:
    key = (job.problem, job.settings)
    if key not in _built:
        _built[key] = job.builder(job.settings)
    return _built[key]


def on_node(job: Job, method: str, filename: str | None, source: bytes | None
            ) -> dict[str, Any]:
    """Run ``method`` of the job's problem on this node (the Ray task's body): on the
    candidate ``source`` written as ``filename`` in a private directory, when given.
    Returns ``{"node", "value", "calibration"}``, or ``{"node", "error"}``: whatever
    raised here is sent back as data, never lost in a worker's log."""
    global _loop
    import ray

    node = {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "pid": os.getpid()}
    try:
        problem = _problem(job)
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
        with tempfile.TemporaryDirectory(prefix="hp-cluster-") as directory:  # mode 0700
            args = []
            if source is not None:
                path = Path(directory) / Path(filename or "candidate.py").name
                path.write_bytes(source)
                args.append(path)
            value = _loop.run_until_complete(getattr(problem, method)(*args))
        if isinstance(value, GradeResult):
            value = value.to_dict()
        return {"node": node, "value": value, "calibration": problem.calibration_used()}
    except Exception as exc:  # noqa: BLE001 (sent back: the driver raises it)
        return {"node": node, "error": {"grader": isinstance(exc, GraderError),
                                        "message": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()}}


# ---- on the driver ----------------------------------------------------------------------
_task: Any = None
_in_flight: Counter[str] = Counter()  # gradings sent to each node and not yet back
_sent: Counter[str] = Counter()  # all gradings sent to each node


def _remote() -> Any:
    global _task
    if _task is None:
        ray = import_ray()
        # One timing slot per task; never retried: a grading whose worker died is an error.
        _task = ray.remote(resources={RESOURCE: 1}, max_retries=0, num_cpus=1)(on_node)
    return _task


async def timing_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes that advertise timing slots: id, host and slots."""
    ray = import_ray()
    nodes = await asyncio.to_thread(ray.nodes)
    found = [{"id": n["NodeID"], "host": n.get("NodeManagerHostname", ""),
              "slots": int(n.get("Resources", {}).get(RESOURCE, 0))}
             for n in nodes if n.get("Alive")]
    found = sorted((n for n in found if n["slots"] >= 1), key=lambda n: (n["host"], n["id"]))
    if not found:
        raise ClusterError(f"no live node of the cluster advertises a {RESOURCE} resource: "
                           f"start each grading node with ray start --resources "
                           f"'{json.dumps(node_resources())}' (uv run cluster.py prints it)")
    return found


async def run_on_node(job: Job, method: str, *, source: bytes | None = None,
                      filename: str | None = None, node: dict[str, Any] | None = None,
                      say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``method`` of the job's problem run on ``node`` (None: the node with the fewest
    gradings in flight per slot, then the fewest sent).  GraderError when the problem
    could not grade there, ClusterError when the cluster failed; else the task's reply."""
    ray = import_ray()
    from ray import exceptions
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if node is None:
        node = min(await timing_nodes(), key=lambda n: (_in_flight[n["id"]] / n["slots"],
                                                        _sent[n["id"]], n["host"], n["id"]))
    # Soft: a node that died before the task started leaves it to another node.
    strategy = NodeAffinitySchedulingStrategy(node["id"], soft=method != "prepare")
    ref = _remote().options(scheduling_strategy=strategy).remote(job, method, filename,
                                                                 source)
    _in_flight[node["id"]] += 1
    _sent[node["id"]] += 1
    if say is not None:
        say(f"{method} on node {node['host']} ({node['id'][:8]})")
    try:
        reply = await ref
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # its sandboxes die with the worker
            ray.cancel(ref, force=True)
        raise
    except exceptions.RayError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterError(f"{method} on node {node['host']} ({node['id'][:8]}) failed: "
                           f"{type(exc).__name__}: {first}") from None
    finally:
        _in_flight[node["id"]] -= 1
    if error := reply.get("error"):
        where = f"on node {reply['node']['host']} ({reply['node']['id'][:8]})"
        failure = (GraderError if error["grader"] else ClusterError)(
            f"{error['message']} ({where})")
        failure.add_note(f"the node's traceback:\n{error['traceback']}")
        raise failure
    return reply


def _head(path: Path) -> bytes | None:
    """The candidate's bytes, read as the grader reads them (no link followed, no FIFO
    waited on, bounded); None when they cannot be (then the local static gate says why,
    and nothing is sent)."""
    import safe_files

    try:
        return safe_files.read_bytes(path.parent, path.name, MAX_SOURCE_BYTES)
    except OSError:
        return None


def grade_result(data: dict[str, Any]) -> GradeResult:
    """A ``GradeResult`` from its ``to_dict()`` (as a node sends it back)."""
    known = {f.name for f in fields(GradeResult)}
    data = {k: v for k, v in data.items() if k in known}
    data["checks"] = [Check(**c) for c in data.get("checks", [])]
    if data.get("speedup_ci95") is not None:
        data["speedup_ci95"] = tuple(data["speedup_ci95"])
    return GradeResult(**data)


class ClusterProblem:
    """A problem whose measuring and grading run on the cluster's nodes; everything
    else is the local problem's (attributes it does not define come from there)."""

    def __init__(self, local: Any, name: str, settings: Any, address: str):
        from problems import registry

        self._local, self._address = local, address
        self._job = Job(name, registry.BUILDERS[name], replace(settings, progress=None))
        self._progress = settings.progress
        self._calibration: dict[str, Any] | None = None

    def __getattr__(self, attribute: str) -> Any:  # only for what is not defined here
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self._local, attribute)

    async def _run(self, method: str, candidate: Path | None = None,
                   progress: Callable[[str], None] | None = None,
                   node: dict[str, Any] | None = None,
                   source: bytes | None = None) -> dict[str, Any]:
        await asyncio.to_thread(connect, self._address)
        # the harness's own copy of the candidate: read here (once), sent as bytes
        if source is None and candidate is not None:
            source = await asyncio.to_thread(_head, candidate)
        reply = await run_on_node(self._job, method, source=source, node=node,
                                  filename=Path(candidate).name if candidate else None,
                                  say=progress or self._progress)
        if reply.get("calibration") is not None:
            self._calibration = {**reply["calibration"], "node": reply["node"]}
        return reply

    async def prepare(self) -> dict[str, Any]:
        """Each node's calibration, measured (or loaded) before the runs start; the
        first node's baseline stands for the batch, each node's is under ``nodes``."""
        await asyncio.to_thread(connect, self._address)
        nodes = await timing_nodes()
        replies = await asyncio.gather(*(self._run("prepare", node=n) for n in nodes),
                                       return_exceptions=True)
        if failed := next((r for r in replies if isinstance(r, BaseException)), None):
            raise failed
        first = replies[0]
        self._calibration = ({**first["calibration"], "node": first["node"]}
                             if first.get("calibration") else None)
        return {**first["value"], "nodes": [
            {"node": r["node"], **{k: v for k, v in r["value"].items() if k != "ladder"}}
            for r in replies]}

    async def calibrate(self) -> dict[str, Any] | None:
        reply = await self._run("calibrate")
        return None if reply["value"] is None else {**reply["value"], "node": reply["node"]}

    async def check_calibration(self) -> dict[str, Any] | None:
        reply = await self._run("check_calibration")
        return None if reply["value"] is None else {**reply["value"], "node": reply["node"]}

    async def grade(self, candidate: Path, *, progress: Any = None, options: Any = None
                    ) -> GradeResult:
        """Grade ``candidate`` on a node (``options`` is for local problems only); one
        that cannot be read is refused here, by the local problem's static gate."""
        if (source := await asyncio.to_thread(_head, Path(candidate))) is None:
            return await self._local.grade(Path(candidate))
        reply = await self._run("grade", Path(candidate), progress, source=source)
        result = grade_result(reply["value"])
        result.details["node"] = reply["node"]
        result.details.setdefault("calibration", reply.get("calibration"))
        return result

    async def strategy(self, candidate: Path) -> dict[str, Any] | None:
        reply = await self._run("strategy", Path(candidate), progress=lambda message: None)
        return reply["value"]

    def calibration_used(self) -> dict[str, Any] | None:
        """The calibration of the node that graded last, with that node."""
        return self._calibration


def build(address: str | None, name: str, settings: Any) -> Any:
    """The problem ``name`` as ``problems.registry`` builds it with ``settings``, its
    measuring and grading on the nodes of the cluster at ``address`` (None: here)."""
    from problems import registry

    problem = registry.build(name, settings)
    return problem if address is None else ClusterProblem(problem, name, settings, address)


if __name__ == "__main__":  # `ray start --resources "$(uv run cluster.py)"`
    print(json.dumps(node_resources()))
