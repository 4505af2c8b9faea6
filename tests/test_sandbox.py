"""The sandbox's own rules, apart from any tool: hiding, visibility, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

import sandbox

needs_namespaces = pytest.mark.skipif(not sandbox.namespaces_available(),
                                      reason="needs root and unshare for namespaces")


def test_outermost_drops_paths_inside_others():
    paths = [Path("/tmp/proj"), Path("/tmp"), Path("/root"), Path("/tmp/proj/.venv")]
    assert sandbox._outermost(paths) == [Path("/root"), Path("/tmp")]


@needs_namespaces
async def test_project_under_tmp_is_hidden_and_workdir_visible(tmp_path, monkeypatch):
    # A fresh clone under /tmp once broke isolation: /tmp was covered first, and the
    # project root inside it could no longer be mounted over.
    project = tmp_path / "clone"
    (project / "problem_data").mkdir(parents=True)
    (project / "problem_data" / "data.txt").write_text("visible")
    (project / "secret.txt").write_text("hidden")
    workdir = project / "output" / "run_1"
    workdir.mkdir(parents=True)
    monkeypatch.setattr(sandbox, "PROJECT_ROOT", project)
    code = ("import os\n"
            f"print(open({str(project / 'problem_data' / 'data.txt')!r}).read())\n"
            f"print(os.path.exists({str(project / 'secret.txt')!r}))\n"
            "open('out.txt', 'w').write('x')\n")
    result = await sandbox.run_python(
        ["-c", code], visibility=sandbox.Visibility(workdir, (project / "problem_data",)),
        limits=sandbox.Limits(timeout=60))
    assert result.ok, result.stderr
    assert result.stdout.split() == ["visible", "False"]
    assert (workdir / "out.txt").read_text() == "x"  # the workdir is the real one


@needs_namespaces
async def test_child_sees_no_harness_process_and_no_network():
    code = ("import os, socket\n"
            "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
            "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
            "except OSError as e:\n    print(type(e).__name__)\n")
    result = await sandbox.run_python(["-c", code],
                                      visibility=sandbox.Visibility(Path.cwd()),
                                      limits=sandbox.Limits(timeout=60))
    assert result.ok, result.stderr
    pids, error = result.stdout.split("\n")[:2]
    assert pids == "['1']"  # only the child itself, as PID 1 of its namespace
    assert error == "OSError"


async def test_timeout_kills_and_reports(tmp_path):
    result = await sandbox.run_python(["-c", "while True: pass"],
                                      visibility=sandbox.Visibility(tmp_path),
                                      limits=sandbox.Limits(timeout=2))
    assert result.timed_out and not result.ok
    assert result.failure().startswith("timed out after 2 s")
