"""The sandbox's own rules, apart from any tool: backends, hiding, visibility, limits.

Attacks on the isolation live in ``test_escape.py``; these check the layout honest code
relies on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import sandbox

BACKENDS = [b for b in sandbox.available_backends() if b != "none"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setattr(sandbox, "_forced", request.param)
    return request.param


def test_outermost_drops_paths_inside_others():
    paths = [Path("/tmp/proj"), Path("/tmp"), Path("/root"), Path("/tmp/proj/.venv")]
    assert sandbox._outermost(paths) == [Path("/root"), Path("/tmp")]


def test_none_is_always_the_last_backend():
    assert sandbox.available_backends()[-1] == "none"


def test_forcing_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown isolation"):
        sandbox.force_isolation("chroot")


async def test_project_under_tmp_is_hidden_and_workdir_visible(tmp_path, monkeypatch, backend):
    # A fresh clone under /tmp once broke isolation: /tmp was covered first, and the
    # project root inside it could no longer be mounted over.
    project = tmp_path / "clone"
    (project / "problem_data").mkdir(parents=True)
    (project / "problem_data" / "data.txt").write_text("visible")
    (project / "secret.txt").write_text("hidden")
    workdir = project / "output" / "run_1"
    workdir.mkdir(parents=True)
    (project / "output" / "run_2").mkdir()
    monkeypatch.setattr(sandbox, "PROJECT_ROOT", project)
    code = ("import os\n"
            f"print(open({str(project / 'problem_data' / 'data.txt')!r}).read())\n"
            f"print(os.path.exists({str(project / 'secret.txt')!r}))\n"
            f"print(os.path.exists({str(project / 'output' / 'run_2')!r}))\n"
            "open('out.txt', 'w').write('x')\n")
    result = await sandbox.run_python(
        ["-c", code], visibility=sandbox.Visibility(workdir, (project / "problem_data",)),
        limits=sandbox.Limits(timeout=60))
    assert result.ok, result.stderr
    assert result.stdout.split() == ["visible", "False", "False"]
    assert (workdir / "out.txt").read_text() == "x"  # the workdir is the real one
    assert result.isolation == backend


async def test_registered_harness_paths_are_hidden(tmp_path, monkeypatch, backend):
    cache = Path("/var/lib") / f"hello-py-test-{tmp_path.name}"
    cache.mkdir()
    try:
        (cache / "baseline.json").write_text("{}")
        monkeypatch.setattr(sandbox, "_harness_paths", {cache})
        result = await sandbox.run_python(
            ["-c", f"import os; print(os.listdir({str(cache)!r}))"],
            visibility=sandbox.Visibility(tmp_path))
        assert result.ok, result.stderr
        assert result.stdout.strip() == "[]"
    finally:
        (cache / "baseline.json").unlink()
        cache.rmdir()


async def test_child_sees_no_harness_process_and_no_network(tmp_path, backend):
    # A server on the host's loopback: the child has a loopback of its own, so the
    # server is out of reach, and so is everything beyond it.
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = ("import os, socket\n"
            "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
            f"for host, port in (('127.0.0.1', {port}), ('192.0.2.1', 80)):\n"
            "    try:\n        socket.create_connection((host, port), timeout=2)\n"
            "        print('connected')\n"
            "    except OSError as e:\n        print(type(e).__name__)\n")
    async with server:
        result = await sandbox.run_python(["-c", code],
                                          visibility=sandbox.Visibility(tmp_path),
                                          limits=sandbox.Limits(timeout=60))
    assert result.ok, result.stderr
    count, *errors = result.stdout.split()
    assert int(count) <= 3  # the child, and the sandbox's own init and shell
    assert "connected" not in errors and len(errors) == 2


async def test_control_channel_lines_arrive_with_times(tmp_path, backend):
    seen: list[tuple[float, str]] = []
    code = "import os; os.write(3, b'one\\ntwo\\n'); print('stdout')"
    result = await sandbox.run_python(["-c", code], visibility=sandbox.Visibility(tmp_path),
                                      on_control=lambda t, line: seen.append((t, line)))
    assert result.ok, result.stderr
    assert [line for _, line in seen] == ["one", "two"]
    assert result.stdout.strip() == "stdout"


async def test_control_channel_is_absent_unless_asked(tmp_path, backend):
    code = "import os\ntry:\n    os.write(3, b'x')\nexcept OSError as e:\n    print(e.errno)"
    result = await sandbox.run_python(["-c", code], visibility=sandbox.Visibility(tmp_path))
    assert result.stdout.strip() == "9"  # EBADF


async def test_timeout_kills_and_reports(tmp_path):
    result = await sandbox.run_python(["-c", "while True: pass"],
                                      visibility=sandbox.Visibility(tmp_path),
                                      limits=sandbox.Limits(timeout=2))
    assert result.timed_out and not result.ok
    assert result.failure().startswith("timed out after 2 s")


async def test_fork_bomb_is_contained(tmp_path, backend):
    # pids.max in the child's cgroup (or RLIMIT-free timeout where there is none).
    code = ("import os\nn = 0\ntry:\n    for _ in range(100000):\n        if os.fork() == 0:\n"
            "            os.closerange(0, 3); import time; time.sleep(30); os._exit(0)\n"
            "        n += 1\n"
            "except OSError as e:\n    print('stopped at', n, e.errno)\n")
    result = await sandbox.run_python(["-c", code], visibility=sandbox.Visibility(tmp_path),
                                      limits=sandbox.Limits(timeout=20, max_processes=64))
    if result.cpu_limit != "cgroup":
        pytest.skip("no cgroup on this machine: only the timeout bounds a fork bomb")
    assert "stopped at" in result.stdout, result.stdout + result.stderr
    assert int(result.stdout.split()[2]) < 64
