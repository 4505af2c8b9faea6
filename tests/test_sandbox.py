"""The sandbox's own rules, apart from any tool: backends, hiding, visibility, limits.

Attacks on the isolation live in ``test_escape.py``; these check the layout honest code
relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

import sandbox

BACKENDS = [b for b in sandbox.available_backends() if b != "none"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setattr(sandbox, "_forced", request.param)
    return request.param


def test_plan_binds_only_the_allow_list(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    steps = sandbox.plan(sandbox.Visibility(tmp_path / "run", (data,)))
    bound = {m.path: m.kind for m in steps if m.kind in ("ro", "rw")}
    assert bound[str((tmp_path / "run").resolve())] == "rw"
    assert bound[str(data.resolve())] == "ro"
    assert all(kind == "ro" for path, kind in bound.items()
               if path != str((tmp_path / "run").resolve()))
    allowed = (*sandbox._SYSTEM_DIRS, *sandbox._SYSTEM_FILES,
               *(str(p) for p in sandbox._python_roots()), str(data.resolve()),
               str((tmp_path / "run").resolve()))
    assert set(bound) <= set(allowed)
    assert "/" not in bound and "/etc" not in bound and str(Path.home()) not in bound


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


async def test_nothing_outside_the_allow_list_exists(tmp_path, backend):
    # Places a user's machine has and a child must not see: the host's /etc, homes,
    # /opt, /var/lib, /srv, another project beside this one, the harness's cache.
    other = Path("/var/tmp") / f"hello-py-other-{tmp_path.name}"
    other.mkdir()
    try:
        (other / "secret.txt").write_text("other project")
        probes = ["/etc/passwd", "/etc/hostname", "/opt", "/var/lib",
                  "/srv", "/mnt", "/boot", str(other), str(other / "secret.txt"),
                  str(sandbox.PROJECT_ROOT / "README.md"),
                  str(sandbox.PROJECT_ROOT / "problems"), "/var/lib/hello-py",
                  str(Path.home() / ".cache")]
        code = ("import os, json\n"
                f"print(json.dumps([p for p in {probes!r} if os.path.lexists(p)]))\n"
                "print(sorted(os.listdir('/')))\n"
                f"home = {str(Path.home())!r}\n"
                "print(json.dumps(os.listdir(home) if os.path.isdir(home) else []))\n")
        result = await sandbox.run_python(["-c", code], visibility=sandbox.Visibility(tmp_path))
        assert result.ok, result.stderr
        present, root, home = result.stdout.splitlines()
        assert present == "[]", present
        # the home exists inside only as the way to an interpreter installed there
        on_the_way = {p.relative_to(Path.home()).parts[0] for p in sandbox._python_roots()
                      if p.is_relative_to(Path.home())}
        assert set(json.loads(home)) <= on_the_way, home
        assert "etc" in root and "usr" in root  # the listing itself worked
    finally:
        (other / "secret.txt").unlink()
        other.rmdir()


async def test_the_root_and_system_are_read_only(tmp_path, backend):
    code = ("import os\n"
            "for p in ('/newfile', '/usr/newfile', '/etc/newfile', '/proc/newfile'):\n"
            "    try:\n        open(p, 'w').write('x'); print('wrote', p)\n"
            "    except OSError as e:\n        print('refused', p)\n")
    result = await sandbox.run_python(["-c", code], visibility=sandbox.Visibility(tmp_path))
    assert result.ok, result.stderr
    assert "wrote" not in result.stdout and result.stdout.count("refused") == 4


async def test_each_sandbox_runs_as_a_new_uid(tmp_path, backend):
    if not sandbox._is_root():
        pytest.skip("unprivileged: bwrap's own user namespace is the identity")
    code = "import os; print(os.getuid(), os.getgid(), os.stat('.').st_uid)"
    seen = []
    for _ in range(3):
        result = await sandbox.run_python(["-c", code], visibility=sandbox.Visibility(tmp_path))
        assert result.ok, result.stderr
        uid, gid, owner = map(int, result.stdout.split())
        assert uid == gid == owner >= sandbox.FIRST_IDENTITY
        seen.append(uid)
    assert len(set(seen)) == 3


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


def test_an_overlong_control_line_keeps_its_head():
    # Its first word says what it is (the timer's REPORT): a line past the cap is cut at
    # its end, never its start, and the line after it arrives whole.
    lines: list[str] = []
    capture = sandbox._Capture(1000, lambda t, line: lines.append(line))
    data = b"REPORT " + b"x" * (sandbox._LINE_CAP + 4096) + b"\nEND 1\n"
    for i in range(0, len(data), 65536):
        capture.feed(data[i:i + 65536], 0.0)
    assert [line[:7] for line in lines] == ["REPORT ", "END 1"]
    assert len(lines[0]) == sandbox._LINE_CAP


def _my_cgroups() -> list[Path]:
    return [p for parent in sandbox._cgroup_parents() for p in parent.glob(f"{os.getpid()}-*")]


async def test_a_run_cancelled_again_while_it_stops_still_releases_everything(tmp_path):
    # main.py cancels the batch on every SIGINT/SIGTERM: a second one arrives while the
    # first one's clean-up waits for the killed child.  The cgroup went with it, and no
    # task of the sandbox was left unfinished.
    run = asyncio.ensure_future(sandbox.run_python(
        ["-c", "print('up', flush=True); import time; time.sleep(60)"],
        visibility=sandbox.Visibility(tmp_path), limits=sandbox.Limits(timeout=60)))
    for _ in range(200):  # until it runs
        await asyncio.sleep(0.05)
        if sandbox._running:
            break
    await asyncio.sleep(0.5)
    run.cancel()
    for _ in range(3):
        await asyncio.sleep(0)
        run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert not sandbox._running
    assert _my_cgroups() == []


async def test_a_task_ended_by_cancel_and_wait_has_its_failure_raised():
    # A failure is a bug: raised where the task is ended, never left for asyncio to
    # report as "never retrieved" on the console.
    async def fails() -> None:
        raise ValueError("a bug")

    task = asyncio.ensure_future(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="a bug"):
        await sandbox.cancel_and_wait(task)
    still_running = asyncio.ensure_future(asyncio.sleep(60))
    await sandbox.cancel_and_wait(still_running)
    assert still_running.cancelled()
