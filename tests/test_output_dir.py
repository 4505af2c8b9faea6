"""The output directory's rules (output_dir.py): the harness deletes only what it wrote,
refuses places that make no sense, holds the directory alone, keeps the previous batch
until it has something to replace it with, and resumes what was interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from fake_api import Fail, FakeMessagesAPI, Reply, tool_use

import batch
import main
import output_dir
from output_dir import MANIFEST, PREVIOUS, OutputDir, OutputError

MATH = ["--agent", "scripted", "--problem", "math"]


def math_batch(out: Path, runs: int = 2, *extra: str) -> int:
    return main.main([*MATH, "--runs", str(runs), "--output", str(out), *extra])


def tree(path: Path) -> dict[str, bytes | None]:
    """Every entry below ``path`` with its bytes (None for a directory), less the lock
    (which names the last process that held it)."""
    return {str(p.relative_to(path)): None if p.is_dir() else p.read_bytes()
            for p in sorted(path.rglob("*")) if p.name != output_dir.LOCK}


def user_files(out: Path) -> dict[str, bytes | None]:
    (out / "run_important").mkdir(parents=True)
    (out / "run_important" / "data.csv").write_text("1,2,3\n")
    (out / "run_notes.txt").write_text("my notes\n")
    return tree(out)


# ---- what is the harness's --------------------------------------------------------------
def test_foreign_entries_are_refused_by_name_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    before = user_files(out)
    assert math_batch(out) == 2
    err = capsys.readouterr().err
    assert "run_important" in err and "run_notes.txt" in err and "--beside-foreign" in err
    assert "Traceback" not in err
    assert tree(out) == before and not (out / output_dir.LOCK).exists()  # nothing written


def test_beside_foreign_writes_beside_them_and_never_touches_them(tmp_path):
    out = tmp_path / "out"
    before = user_files(out)
    for runs in (3, 1):  # the second batch replaces the first's records, only them
        assert math_batch(out, runs, "--beside-foreign") == 0
        assert {k: v for k, v in tree(out).items() if k in before} == before
    names = set(os.listdir(out))
    assert {"run_1", "results.json", "run_summary.md"} <= names
    assert not {"run_2", "run_3", PREVIOUS} & names


def test_a_foreign_name_the_batch_would_write_is_refused_even_beside(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "run_2").mkdir(parents=True)
    (out / "run_2" / "mine").write_text("x")
    assert math_batch(out, 2, "--beside-foreign") == 2
    assert "run_2" in capsys.readouterr().err
    assert (out / "run_2" / "mine").read_text() == "x"


def test_the_checkout_s_placeholder_is_not_foreign(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gitkeep").write_text("")
    assert math_batch(out, 1) == 0
    assert (out / ".gitkeep").exists()


def test_a_new_batch_replaces_only_the_previous_batch_s_entries(tmp_path):
    out = tmp_path / "out"
    assert math_batch(out, 3) == 0
    assert math_batch(out, 2) == 0
    assert sorted(n for n in os.listdir(out) if not n.startswith(".")) == [
        "results.json", "run_1", "run_2", "run_summary.md", "summary.png"]
    assert json.loads((out / "results.json").read_text())["totals"]["runs"] == 2
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["previous"] is None and manifest["batch"]["state"] == "finished"


# ---- where it may be ---------------------------------------------------------------------
def _tmpfs(target: Path, options: str, what: str) -> Path:
    """A tmpfs mounted at ``target`` (made here) with ``options``; the test is skipped,
    with the reason, where root cannot mount one."""
    target.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount {what} here: {made.stderr.decode().strip()}")
    return target


def _read_only_dir(tmp_path: Path) -> Path:
    return _tmpfs(tmp_path / "ro", "ro,size=1m", "a read-only tmpfs")


@pytest.mark.parametrize("place", ["root", "checkout", "above-checkout", "file", "device",
                                   "proc", "read-only", "below-a-file"])
def test_nonsensical_places_are_usage_errors_before_anything_runs(
        tmp_path, monkeypatch, capsys, place):
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may run for a refused --output")

    monkeypatch.setattr(batch, "run_batch", never)
    (tmp_path / "a-file").write_text("keep me")
    target = {"root": "/", "checkout": str(ROOT), "above-checkout": str(ROOT.parent),
              "file": str(tmp_path / "a-file"), "device": "/dev/null",
              "proc": "/proc/self/hello", "below-a-file": str(tmp_path / "a-file" / "out"),
              "read-only": None}[place]
    mounted = None
    if place == "read-only":
        mounted = _read_only_dir(tmp_path)
        target = str(mounted / "out")
    try:
        listing = sorted(os.listdir(target if os.path.isdir(target) else tmp_path))
        assert math_batch(Path(target)) == 2
        err = capsys.readouterr().err
        assert "--output" in err and "Traceback" not in err, err
        assert sorted(os.listdir(target if os.path.isdir(target) else tmp_path)) == listing
        assert (tmp_path / "a-file").read_text() == "keep me"
    finally:
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=False)


def test_an_empty_output_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main.parse_args(["--output", ""])
    assert exited.value.code == 2
    assert "empty" in capsys.readouterr().err


# ---- one batch at a time -----------------------------------------------------------------
def test_a_second_batch_on_the_directory_is_refused_naming_the_first(tmp_path, capsys):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    before = tree(out)
    holder = OutputDir.open(out, runs=1)  # a batch in progress (this process)
    try:
        assert math_batch(out, 1) == 2
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert "another batch" in err and f"process {os.getpid()}" in err
    assert tree(out) == before
    assert math_batch(out, 1) == 0  # the lock went with the holder


def test_a_killed_holder_leaves_no_lock(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, os; sys.path.insert(0, '.'); from output_dir import OutputDir; "
            f"OutputDir.open(__import__('pathlib').Path({str(out)!r}), runs=1); "
            "print('held', flush=True); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False)
    OutputDir.open(out, runs=1).close()  # the kernel dropped the flock with the process


# ---- the previous batch is kept until something replaces it -------------------------------
class Stuck:
    """A problem whose baseline never finishes (an interrupt comes first)."""

    def __init__(self, problem: Any, where: str) -> None:
        self._problem, self._where = problem, where
        self.reached = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._problem, name)

    async def prepare(self) -> dict:
        if self._where == "baseline":
            self.reached.set()
            await asyncio.Event().wait()
        return await self._problem.prepare()


async def forever(*args: Any, **kwargs: Any) -> Any:
    await asyncio.Event().wait()


async def _interrupted(out: Path, where: str) -> OutputDir:
    """A math batch in ``out``, cancelled during its baseline, or once its first run
    has started and before it finishes."""
    problem, client, s = _math(out, 2)
    stuck = Stuck(problem, where)
    started = asyncio.Event()
    real_start = OutputDir.start_run

    def start_run(self: OutputDir, run_id: int) -> Any:
        started.set()
        return real_start(self, run_id)

    holder = OutputDir.open(out, runs=2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(OutputDir, "start_run", start_run)
            mp.setattr(batch, "run_agent", forever)  # the run's agent never ends
            task = asyncio.create_task(batch.run_batch(stuck, client, s, lambda *a: None,
                                                       out=holder))
            await (stuck.reached if where == "baseline" else started).wait()
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        holder.close()
    return holder


def _math(out: Path, runs: int) -> tuple:
    import scripted_agent
    import tools
    from agent import AgentSettings
    from problems import registry

    problem = registry.build("math")
    return problem, scripted_agent.ScriptedClient(problem), batch.BatchSettings(
        runs=runs, concurrent=False, output_dir=out,
        agent=AgentSettings("claude-haiku-4-5", 5, 1024), tools=tools.ToolSettings(),
        config={"runs": runs})


@pytest.mark.parametrize("where", ["baseline", "first-run"])
async def test_an_interrupt_before_any_run_finished_keeps_the_previous_batch(tmp_path, where):
    out = tmp_path / "out"
    assert await asyncio.to_thread(math_batch, out, 3) == 0
    before = tree(out)
    holder = await _interrupted(out, where)
    assert (holder.begun, holder.restored) == ((False, False) if where == "baseline"
                                               else (True, True))
    assert tree(out) == before


def test_a_batch_killed_before_any_run_finished_gives_the_previous_back(tmp_path):
    out = tmp_path / "out"
    assert math_batch(out, 3) == 0
    results = (out / "results.json").read_bytes()
    held = OutputDir.open(out, runs=2)
    held.begin({"runs": 2}, resume=False)
    held.start_run(1)  # then the process is killed: no end()
    held.close()
    assert not (out / "results.json").exists() and (out / PREVIOUS).is_dir()
    OutputDir.open(out, runs=2).close()  # the next start settles it
    assert (out / "results.json").read_bytes() == results
    assert sorted(n for n in os.listdir(out) if n.startswith("run_")) == [
        "run_1", "run_2", "run_3", "run_summary.md"]
    assert not (out / PREVIOUS).exists()


# ---- resume ------------------------------------------------------------------------------
MODEL = "claude-haiku-4-5"


def _math_answer() -> int:
    from problems import registry

    return registry.build("math").answer()


def api_batch(server: FakeMessagesAPI, out: Path, runs: int, *extra: str) -> int:
    os.environ.update(ANTHROPIC_BASE_URL=server.base_url, ANTHROPIC_API_KEY="test-key")
    try:
        return main.main(["--problem", "math", "--model", MODEL, "--runs", str(runs),
                          "--sequential", "--api-retries", "0", "--output", str(out),
                          *extra])
    finally:
        for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
            os.environ.pop(name, None)


def answering(fail: set[int] = frozenset()) -> tuple[Any, list[int]]:
    """A responder that submits the answer at once (one request a run, the runs one
    after another), failing the requests numbered in ``fail`` (from 0) as an overloaded
    API does (the batch runs with --api-retries 0); and the requests it answered."""
    asked: list[int] = []
    answer = _math_answer()

    def respond(body: dict, index: int) -> Any:  # index counts the preflight too
        asked.append(len(asked))
        if asked[-1] in fail:
            return Fail(529, "overloaded_error", "Overloaded")
        return Reply([tool_use("submit_value", {"answer": str(answer)})], "tool_use")
    return respond, asked


def test_resume_retries_api_errors_keeps_the_rest_and_counts_attempts(tmp_path, capsys):
    out = tmp_path / "out"
    respond, asked = answering({1})  # run 2's
    with FakeMessagesAPI(respond) as server:
        assert api_batch(server, out, 3) == 0
    first = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in first["runs"]] == ["pass", "error", "pass"]
    respond, asked = answering()
    with FakeMessagesAPI(respond) as server:
        assert api_batch(server, out, 3, "--resume") == 0
    assert len(asked) == 1  # run 2's: runs 1 and 3 were kept, not paid for again
    results = json.loads((out / "results.json").read_text())
    assert [(r["status"], r["attempts"]) for r in results["runs"]] == [
        ("pass", 1), ("pass", 2), ("pass", 1)]
    assert results["totals"]["passed"] == 3
    assert len(results["provenance"]["resumed"]) == 1
    [earlier] = results["provenance"]["earlier"]  # the first part's own provenance
    assert earlier["git"] == results["provenance"]["git"] and "earlier" not in earlier
    assert "1 retried" in capsys.readouterr().err
    assert "| 2 | pass |" in (out / "run_summary.md").read_text()


@pytest.mark.parametrize(("flags", "named"), [(["--runs", "4"], "runs: 3 then, 4 now"),
                                              (["--no-profiler"], "include_profiler")])
def test_resume_refuses_another_configuration_naming_the_differences(tmp_path, capsys,
                                                                      flags, named):
    out = tmp_path / "out"
    assert math_batch(out, 3) == 0
    before = tree(out)
    argv = [*MATH, "--runs", "3", "--output", str(out), "--resume", *flags]
    assert main.main(argv) == 2
    assert named in capsys.readouterr().err
    assert tree(out) == before


def test_resume_with_nothing_recorded_is_a_usage_error(tmp_path, capsys):
    assert math_batch(tmp_path / "empty", 1, "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_after_sigkill_mid_batch(tmp_path):
    """A real batch, killed (SIGKILL) while its second run waits on the API: resumed,
    the finished run is kept, the rest run, and the records cover the whole batch.  A
    run.json the agent's code could have forged meanwhile is not trusted."""
    out = tmp_path / "out"
    release, waiting = threading.Event(), threading.Event()
    answer = _math_answer()

    asked: list[int] = []

    def respond(body: dict, index: int) -> Any:
        asked.append(index)
        if len(asked) > 1:  # run 2's first request
            waiting.set()
            release.wait(60)  # the batch is killed meanwhile
        return Reply([tool_use("submit_value", {"answer": str(answer)})], "tool_use")

    with FakeMessagesAPI(respond) as server:
        env = dict(os.environ, ANTHROPIC_BASE_URL=server.base_url,
                   ANTHROPIC_API_KEY="test-key")
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--problem", "math", "--model", MODEL, "--runs", "3",
             "--sequential", "--api-retries", "0", "--output", str(out)], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert waiting.wait(60), "run 2 never asked the API"
            proc.kill()
            proc.wait(30)
        finally:
            release.set()
            proc.kill()
    seen = proc.stderr.read()
    assert "batch: 1/3 runs finished" in seen, seen
    assert not (out / "results.json").exists()
    forged = {"run_id": 2, "status": "pass", "speedup": 99.0}
    (out / "run_2").mkdir(exist_ok=True)
    (out / "run_2" / "run.json").write_text(json.dumps(forged))
    respond, asked = answering()
    with FakeMessagesAPI(respond) as server:
        assert api_batch(server, out, 3, "--resume") == 0
    assert len(asked) == 2  # runs 2 and 3
    results = json.loads((out / "results.json").read_text())
    assert [(r["run_id"], r["status"]) for r in results["runs"]] == [
        (1, "pass"), (2, "pass"), (3, "pass")]
    assert [r["attempts"] for r in results["runs"]] == [1, 2, 1]
    assert json.loads((out / "run_2" / "run.json").read_text())["attempts"] == 2
    summary_md = (out / "run_summary.md").read_text()
    assert all(f"| {i} | pass |" in summary_md for i in (1, 2, 3))
    assert results["interrupted"] is False


@pytest.mark.parametrize("results", ["none", "this batch's", "another batch's"])
def test_a_run_the_manifest_does_not_list_is_kept_only_from_this_batch_s_results(
        tmp_path, results):
    # The manifest could not record it (a full disk): the batch's own results.json, which
    # only the harness writes, still has its verdict; nothing else is trusted.
    out = tmp_path / "out"
    assert math_batch(out, 2) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["finished"]["2"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    if results == "none":
        (out / "results.json").unlink()
    elif results == "another batch's":
        data = json.loads((out / "results.json").read_text())
        data["provenance"]["started"] = "2001-01-01T00:00:00Z"
        (out / "results.json").write_text(json.dumps(data))
    held = OutputDir.open(out, runs=2, resume=True)
    try:
        plan = held.resume_plan(manifest["batch"]["config"], 2)
    finally:
        held.close()
    kept = [1, 2] if results == "this batch's" else [1]
    assert ([r.run_id for r in plan.kept], plan.retried) == (kept, [])
    assert plan.to_run == [n for n in (1, 2) if n not in kept]


def test_an_unreadable_manifest_is_a_clear_refusal(tmp_path, capsys):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    (out / MANIFEST).write_text("{not json")
    assert math_batch(out, 1) == 2
    assert MANIFEST in capsys.readouterr().err


def test_check_place_accepts_a_new_nested_directory(tmp_path):
    assert output_dir.check_place(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(OutputError):
        output_dir.check_place(Path("/"))


# ---- a full disk -------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted after the test."""
    where = _tmpfs(tmp_path / "small", "size=1m", "a small tmpfs")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where: Path, leave: int) -> None:
    """Fill ``where`` to all but ``leave`` bytes."""
    with open(where / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
        size = f.tell()
    os.truncate(where / "filler", max(0, size - leave))


@pytest.mark.parametrize("leave", [0, 16 * 1024, 64 * 1024], ids=["full", "16k", "64k"])
def test_a_full_disk_is_one_clear_line_no_run_is_cancelled_and_nothing_is_left(
        small_disk, leave):
    out = small_disk / "out"
    out.mkdir()
    _fill(small_disk, leave)
    done = subprocess.run([sys.executable, "main.py", *MATH, "--runs", "3", "--output",
                           str(out), "--beside-foreign"], cwd=ROOT, capture_output=True,
                          text=True)
    err = done.stderr
    assert "Traceback" not in err and "never retrieved" not in err, err
    assert not [p for p in small_disk.rglob("*") if p.name.endswith(".tmp")]
    if leave == 0:  # not even the manifest fits: refused before any run
        assert done.returncode == main.RECORDS_FAILED, err
    else:  # every run ends and is counted, whatever its own records met
        assert "batch: 3/3 runs finished" in err, err
        assert done.returncode in (0, main.RECORDS_FAILED), err
    if done.returncode == main.RECORDS_FAILED:
        [line] = [x for x in err.splitlines() if x.startswith("error:")]
        assert "No space left on device" in line
    else:
        results = json.loads((out / "results.json").read_text())
        assert [r["run_id"] for r in results["runs"]] == [1, 2, 3]


# ---- provenance in every record ----------------------------------------------------------
PROVENANCE_KEYS = {"started", "ended", "git", "versions", "host", "isolation",
                   "load_average", "calibration"}


def test_results_and_each_grade_json_carry_provenance(tmp_path):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    results = json.loads((out / "results.json").read_text())["provenance"]
    grade = json.loads((out / "run_1" / "grade.json").read_text())["provenance"]
    for p in (results, grade):
        assert PROVENANCE_KEYS <= set(p)
        assert set(p["versions"]) == {"python", "torch", "numpy", "scikit-learn", "anthropic"}
        assert p["started"] <= p["ended"] and p["isolation"]
        assert len(p["load_average"]["start"]) == len(p["load_average"]["end"]) == 3
    assert results["resumed"] == []
    assert "## Provenance" in (out / "run_summary.md").read_text()


def test_help_lists_the_commands_and_the_offline_agent(capsys):
    with pytest.raises(SystemExit):
        main.parse_args(["--help"])
    shown = capsys.readouterr().out
    for words in ("grade FILE", "calibrate", "problems", "--agent scripted", "--resume",
                  "--beside-foreign"):
        assert words in shown


# ---- the red team's findings, each kept found ---------------------------------------------
def _forget_run(out: Path, run_id: int) -> None:
    """The manifest as a batch killed before run ``run_id`` finished leaves it (and no
    results.json)."""
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["finished"][str(run_id)]
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "results.json").unlink()


def test_a_link_at_a_run_s_name_never_becomes_its_workspace(tmp_path):
    # Root chowned the link's target and let the agent write there: the run directory
    # is now made first, and the context takes that path.
    out, precious = tmp_path / "out", tmp_path / "precious"
    assert math_batch(out, 2) == 0
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    before = (tree(precious), os.stat(precious).st_uid)
    _forget_run(out, 2)
    subprocess.run(["rm", "-rf", str(out / "run_2")], check=True)
    (out / "run_2").symlink_to(precious)
    assert math_batch(out, 2, "--resume") == 0
    assert (tree(precious), os.stat(precious).st_uid) == before
    assert not (out / "run_2").is_symlink() and (out / "run_2" / "run.json").is_file()


def test_a_manifest_write_the_disk_refuses_changes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    held = OutputDir.open(out, runs=1, resume=True)
    try:
        before = json.loads(json.dumps(held.manifest))
        import safe_files

        def full(*args: Any, **kwargs: Any) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(safe_files, "write_bytes", full)
        for step in (lambda: held.start_run(1), lambda: held.claim("results.json"),
                     lambda: held.begin({}, resume=True)):
            with pytest.raises(OSError):
                step()
            assert held.manifest == before
    finally:
        held.close()


def test_a_batch_whose_results_could_not_be_written_keeps_the_previous_one(tmp_path):
    out = tmp_path / "out"
    assert math_batch(out, 2) == 0
    results = (out / "results.json").read_bytes()
    held = OutputDir.open(out, runs=2)
    try:
        held.begin({"runs": 2}, resume=False)
        held.start_run(1)
        from records import RunRecord

        held.finish_run(RunRecord(run_id=1, status="pass"))
        assert held.end("finished", written=False) is False  # a full disk, say
    finally:
        held.close()
    assert (out / PREVIOUS / "results.json").read_bytes() == results
    assert json.loads((out / MANIFEST).read_text())["previous"] is not None


def _killed_while_moving_aside(out: Path, moved: int, config: dict, monkeypatch) -> None:
    """A new batch in ``out`` that dies (as a kill -9 would leave it) after moving
    ``moved`` of the previous batch's entries aside."""
    real_rename, done = os.rename, []

    def rename(src: Any, dst: Any, **kwargs: Any) -> None:
        if len(done) == moved:
            raise KeyboardInterrupt  # the process dies here
        done.append(src)
        real_rename(src, dst, **kwargs)

    held = OutputDir.open(out, runs=3)
    try:
        monkeypatch.setattr(os, "rename", rename)
        with pytest.raises(KeyboardInterrupt):
            held.begin(config, resume=False)
    finally:
        monkeypatch.setattr(os, "rename", real_rename)
        held.close()


@pytest.mark.parametrize("moved", [0, 1, 2, 3])
def test_a_kill_while_the_previous_batch_is_moved_aside_loses_nothing(tmp_path, moved,
                                                                     monkeypatch):
    out = tmp_path / "out"
    assert math_batch(out, 3) == 0
    before = tree(out)
    _killed_while_moving_aside(out, moved, {"runs": 3}, monkeypatch)
    OutputDir.open(out, runs=3).close()  # the next start puts everything back
    after = tree(out)
    assert {k: v for k, v in after.items() if k != MANIFEST} == {
        k: v for k, v in before.items() if k != MANIFEST}
    assert math_batch(out, 3) == 0


def test_a_temporary_file_a_killed_write_left_is_the_harness_s(tmp_path):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    (out / ".hp-0123456789abcdef.tmp").write_text("half a record")
    assert math_batch(out, 1) == 0
    assert not (out / ".hp-0123456789abcdef.tmp").exists()


@pytest.mark.parametrize("name", [PREVIOUS, ".hp-0123456789abcdef.tmp"])
def test_harness_names_without_a_manifest_are_foreign(tmp_path, capsys, name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    (out / name / "notes.txt").write_text("mine")
    assert math_batch(out, 1) == 2
    assert name in capsys.readouterr().err
    assert (out / name / "notes.txt").read_text() == "mine"


def test_a_lock_that_is_not_a_regular_file_is_one_clear_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    (out / output_dir.LOCK).unlink()
    os.mkfifo(out / output_dir.LOCK)
    assert math_batch(out, 1) == 2
    err = capsys.readouterr().err
    assert "not a regular file" in err and "Traceback" not in err


MALFORMED = {"entries": 5, "entries-of-dicts": [{}], "batch": "x", "finished": {"1": "x"},
             "finished-without-status": {"1": {"run_id": 1}}, "previous": "x",
             "config": [1], "attempts": {"1": "x"}, "entry-path": ["../x"]}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_manifest_is_one_clear_refusal(tmp_path, capsys, case):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    key = {"entries-of-dicts": "entries", "finished-without-status": "finished",
           "entry-path": "entries"}.get(case, case)
    if key == "config":
        manifest["batch"]["config"] = MALFORMED[case]
    else:
        manifest[key] = MALFORMED[case]
    (out / MANIFEST).write_text(json.dumps(manifest))
    before = tree(out)
    for resume in ([], ["--resume"]):
        assert math_batch(out, 1, *resume) == 2
        err = capsys.readouterr().err
        assert MANIFEST in err and "Traceback" not in err
    assert tree(out) == before


def test_an_output_inside_another_batch_s_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    assert math_batch(out / "run_1", 1, "--beside-foreign") == 2
    assert "another batch's output directory" in capsys.readouterr().err


def test_the_kernel_s_file_systems_are_no_place_for_records(capsys):
    assert math_batch(Path("/sys/fs/cgroup/hello-py-records"), 1) == 2
    assert "kernel's own file system" in capsys.readouterr().err  # here, a tmpfs there
    assert not os.path.lexists("/sys/fs/cgroup/hello-py-records")


def test_a_tilde_in_output_is_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    _, _, cfg = main.parse_args(["--output=~/records"])
    assert cfg.output == tmp_path / "records"


def test_a_request_the_api_refused_is_counted_and_not_retried(tmp_path):
    # 400 "prompt is too long" is the conversation's doing, not the API's unavailability
    out = tmp_path / "out"

    def refuse(body: dict, index: int) -> Any:
        return Fail(400, "invalid_request_error", "prompt is too long")

    with FakeMessagesAPI(refuse) as server:
        assert api_batch(server, out, 1) == 0
    [run] = json.loads((out / "results.json").read_text())["runs"]
    assert (run["status"], run["error_cause"]) == ("error", "request")
    held = OutputDir.open(out, runs=1, resume=True)
    try:
        plan = held.resume_plan(held.manifest["batch"]["config"], 1)
    finally:
        held.close()
    assert (plan.retried, [r.run_id for r in plan.kept]) == ([], [1])


def test_a_resume_on_another_setup_says_what_changed(tmp_path, capsys):
    out = tmp_path / "out"
    assert math_batch(out, 2) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    [segment] = manifest["batch"]["segments"]
    segment["git"]["commit"], segment["versions"]["torch"] = "0" * 40, "0.0.1"
    del manifest["finished"]["2"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert math_batch(out, 2, "--resume") == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "resuming on another setup" in err and "torch: 0.0.1 then" in err
    assert f"commit: {'0' * 40} then" in err
    earlier = json.loads((out / "results.json").read_text())["provenance"]["earlier"]
    assert earlier[0]["versions"]["torch"] == "0.0.1"


@pytest.mark.parametrize("moved", [0, 2])
def test_a_resume_after_a_kill_while_moving_aside_mixes_nothing(tmp_path, moved,
                                                                monkeypatch):
    out = tmp_path / "out"
    assert math_batch(out, 3) == 0
    config = json.loads((out / MANIFEST).read_text())["batch"]["config"]
    _killed_while_moving_aside(out, moved, config, monkeypatch)
    assert math_batch(out, 3, "--resume") == 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["status"], r["error_cause"]) for r in results["runs"]] == [("pass", None)] * 3
    assert not (out / PREVIOUS).exists()
    assert all(json.loads((out / f"run_{n}" / "run.json").read_text())["attempts"] == 1
               for n in (1, 2, 3))


@pytest.mark.parametrize("whose", ["a batch's, running", "the user's"])
def test_a_redraw_writes_nothing_where_it_is_not_the_harness_s_to(tmp_path, whose):
    out = tmp_path / "out"
    assert math_batch(out, 1) == 0
    holder = None
    if whose == "the user's":
        (out / "run_summary.md").write_text("my own notes\n")
    else:
        holder = OutputDir.open(out, runs=1)
    before = tree(out)
    try:
        done = subprocess.run([sys.executable, "-m", "summary", str(out / "results.json")],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        if holder is not None:
            holder.close()
    assert done.returncode == 2 and "nothing was written" in done.stderr, done.stderr
    assert tree(out) == before


def test_a_retried_run_counts_what_every_try_spent():
    from dataclasses import replace

    from records import RunRecord

    earlier = RunRecord(run_id=2, status="error", error_cause="api", input_tokens=100,
                        output_tokens=10, cost_usd=0.5, stream_retries=1)
    now = RunRecord(run_id=2, status="pass", input_tokens=300, output_tokens=30,
                    cost_usd=1.25, attempts=2)
    both = batch.with_earlier_spend(now, earlier)
    assert (both.status, both.attempts, both.input_tokens, both.output_tokens,
            both.cost_usd, both.stream_retries) == ("pass", 2, 400, 40, 1.75, 1)
    assert batch.with_earlier_spend(now, replace(earlier, cost_usd=None)).cost_usd is None
