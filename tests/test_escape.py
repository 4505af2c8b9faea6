"""The escape suite: each attempt a hostile agent or candidate makes, and its goal failing.

Every attempt runs through each channel that executes agent-controlled code (the code
tool, the profiler, a graded candidate's timed execution) under each isolation backend
this machine has (bubblewrap, and the unshare fallback when root).  The attacks try
hard: they unmount ``/proc``, create a nested user namespace to get capabilities back,
unmount the covering file systems, and scan every process they can see.  A test checks
the attack's *goal* (a secret read, a byte written, a file kept, time gained), never
whether a particular call was refused.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import sandbox
import tools
from problem import DataGuard, GradeResult, Problem
from problems.measurement import Execution, Executor, Instrumentation, execute
from problems.ml_training_optimization import PROBLEM_DATA

SECRET = "sk-ant-escape-" + uuid.uuid4().hex
PREFIX = SECRET[:14]  # what an attacker knows of the key's shape
ROOT = sandbox.PROJECT_ROOT
REFERENCE = ROOT / "problems" / "reference" / "ml_training_reference.py"
BACKENDS = [b for b in sandbox.available_backends() if b != "none"]
CHANNELS = ["code_tool", "profiler", "candidate"]

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no isolation backend on this machine")

# Shared by the attacks: get capabilities back in a nested user namespace (allowed for
# unprivileged users on most kernels) and peel off the mounts that hide things.
PRELUDE = textwrap.dedent(f"""
    import codecs, ctypes, glob, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    def peel():
        libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS
        for target in ('/proc', {str(ROOT)!r}, {str(Path.home())!r}, '/tmp', '/dev/shm'):
            libc.umount2(target.encode(), 2)
    def found(label, text):
        # rot13 so that the harness's redaction cannot hide a leak from this test
        print('FOUND', label, codecs.encode(text, 'rot13'))
""")

ATTACKS = {
    "read_harness_environment": PRELUDE + textwrap.dedent(f"""
        peel()
        key = {PREFIX[:7]!r} + {PREFIX[7:]!r}  # never literally in this code's own argv
        for path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):
            try:
                data = open(path, 'rb').read().decode('latin-1')
            except OSError:
                continue
            if key in data:
                found(path, data)
        if key in str(os.environ):
            found('environ', str(os.environ))
        print('done')
    """),
    "read_reference_solution": PRELUDE + textwrap.dedent(f"""
        for attempt in ('plain', 'peeled'):
            if attempt == 'peeled':
                peel()
            try:
                found(attempt, open({str(REFERENCE)!r}).read()[:200])
            except OSError as exc:
                print(attempt, type(exc).__name__)
        print('done')
    """),
}


def write_attack(targets: list[Path]) -> str:
    return PRELUDE + textwrap.dedent(f"""
        for attempt in ('plain', 'peeled'):
            if attempt == 'peeled':
                peel()
            for target in {[str(t) for t in targets]!r}:
                try:
                    with open(target + '.' + attempt, 'w') as f:
                        f.write('escaped')
                    print('wrote', target)
                except OSError as exc:
                    print(target, type(exc).__name__)
        print('done')
    """)


PARALLEL_ATTACK = textwrap.dedent("""
    import os, time
    try:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    except OSError:
        pass
    def burn():
        x = 0
        for i in range(6_000_000):
            x += i
    def timed(workers):
        # CPU seconds the workers got per second of wall time: above 1 only if they
        # ran in parallel (other load on the machine can only lower it)
        start, before = time.perf_counter(), os.times()
        pids = []
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:
                burn()
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        after = os.times()
        cpu = (after.children_user - before.children_user
               + after.children_system - before.children_system)
        return cpu / (time.perf_counter() - start)
    print('PARALLELISM', max(timed(2) for _ in range(2)),
          'AFFINITY', sorted(os.sched_getaffinity(0)))
""")

CANDIDATE_TAIL = textwrap.dedent("""

    def run_complex_training_pipeline():
        return 0.0
""")
INSTRUMENTATION = Instrumentation(entry="run_complex_training_pipeline")


class StubProblem(Problem):
    """Only the code tool and the profiler are used here; nothing is graded."""

    data_dir = PROBLEM_DATA

    def prompt(self, workspace: Path) -> str:
        return ""

    def tool_names(self) -> list[str]:
        return list(tools.REGISTRY)

    async def grade(self, candidate: Path, **options: object) -> GradeResult:
        raise AssertionError("nothing is graded in the escape suite")


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setattr(sandbox, "_forced", request.param)
    return request.param


@pytest.fixture
def decoy():
    """A harness-like process whose environment and command line hold the key."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", SECRET],
                            env={"ANTHROPIC_API_KEY": SECRET, "PATH": "/usr/bin:/bin"})
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def run_ctx(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    workspace = tmp_path / "output" / "run_1"
    workspace.mkdir(parents=True)
    (tmp_path / "output" / "run_2").mkdir()
    (tmp_path / "output" / "run_2" / "optimized_ml_training.py").write_text("# other run\n")
    ctx = tools.RunContext(workspace=workspace, problem=StubProblem(),
                           guard=DataGuard(PROBLEM_DATA),
                           settings=tools.ToolSettings(python_timeout=60, profile_timeout=60),
                           secrets=(SECRET,))
    token = tools.RUN.set(ctx)
    yield ctx
    tools.RUN.reset(token)


async def run_through(channel: str, code: str, ctx: tools.RunContext) -> str:
    """Run ``code`` through one channel; everything it printed (raw, not redacted for
    the candidate; redacted as the agent would see it for the tools)."""
    if channel == "code_tool":
        outcome = await tools.dispatch("python_expression", {"code": code}, ["python_expression"])
        return outcome.content
    if channel == "profiler":
        script = ctx.workspace / f"attack_{uuid.uuid4().hex[:6]}.py"
        script.write_text(code)
        outcome = await tools.dispatch("profile_tool", {"path": script.name}, ["profile_tool"])
        return outcome.content
    execution = await run_candidate(code, ctx.workspace.parent.parent)
    return execution.stdout + execution.stderr_tail


async def run_candidate(code: str, where: Path) -> Execution:
    path = where / f"candidate_{uuid.uuid4().hex[:6]}.py"
    path.write_text(code + CANDIDATE_TAIL)
    return await execute(path, INSTRUMENTATION, threads=1, limits=sandbox.Limits(timeout=120),
                         read_only=(PROBLEM_DATA,))


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_attack_finds_nothing(attack, channel, backend, run_ctx, decoy):
    output = await run_through(channel, ATTACKS[attack], run_ctx)
    assert "done" in output, output  # the attack really ran to its end
    assert "FOUND" not in output, output


@pytest.mark.parametrize("channel", CHANNELS)
async def test_nothing_is_written_outside_the_own_directory(channel, backend, run_ctx,
                                                            tmp_path):
    tag = "escape-" + uuid.uuid4().hex[:8]
    cache = Path.home() / ".cache" / "hello-py"
    targets = [Path("/") / tag, ROOT / tag, Path(sys.prefix) / f"{tag}.pth",
               cache / tag, Path("/dev/shm") / tag, Path("/var/tmp") / tag,
               Path("/tmp") / tag, tmp_path / tag, run_ctx.workspace.parent / "run_2" / tag,
               PROBLEM_DATA / tag]
    output = await run_through(channel, write_attack(targets), run_ctx)
    assert "done" in output, output
    leaked = [p for t in targets for p in t.parent.glob(t.name + ".*")]
    for path in leaked:
        path.unlink()
    assert leaked == []


@pytest.mark.parametrize("channel", ["code_tool", "candidate"])
async def test_no_file_is_kept_between_executions(channel, backend, run_ctx):
    tag = uuid.uuid4().hex[:8]
    places = ["/tmp", "/var/tmp", "/dev/shm", "~"]
    if channel == "candidate":
        places.append(".")  # the execution's own directory is fresh too
    paths = [f"{p}/keep-{tag}" for p in places]
    write = ("import os\n" + "".join(
        f"open(os.path.expanduser({p!r}), 'w').write('kept')\n" for p in paths)
        + "print('done')\n")
    read = ("import os\n" + "".join(
        f"print('KEPT', {p!r}) if os.path.exists(os.path.expanduser({p!r})) else None\n"
        for p in paths) + "print('done')\n")
    first = await run_through(channel, write, run_ctx)
    assert "done" in first and "Error" not in first, first
    second = await run_through(channel, read, run_ctx)
    assert "done" in second, second
    assert "KEPT" not in second, second


@pytest.mark.parametrize("channel", CHANNELS)
async def test_extra_processes_buy_no_time(channel, backend, run_ctx):
    # Two busy processes get no more than one CPU-second per second between them: the
    # child has one CPU, and widening its own affinity does not give it another.  (CPU
    # time over wall time, not a ratio of wall times, which load elsewhere distorts;
    # unconfined on this 2-core machine the same code measures about 2.)
    output = await run_through(channel, PARALLEL_ATTACK, run_ctx)
    parallelism = float(output.split("PARALLELISM")[1].split()[0])
    assert 0.2 < parallelism < 1.3, output


FORGE_MARKERS = textwrap.dedent("""
    import gc, os, sys, time
    # Everything the timer might have left in this process: frames, objects, fds.
    frame = sys._getframe()
    while frame is not None:
        frame = frame.f_back
    for obj in gc.get_objects():
        if isinstance(obj, dict) and 'control_fd' in obj:
            try:
                os.write(obj['control_fd'], b'END 0.001 0\\nREPORT {}\\n')
            except OSError as exc:
                print('control fd', type(exc).__name__)
    for fd in range(3, 256):
        try:
            os.write(fd, b'\\nEND 0.001 0\\n')
        except OSError:
            pass
    for path in os.listdir(f'/proc/{os.getppid()}/fd') if os.access(
            f'/proc/{os.getppid()}/fd', os.R_OK) else []:
        print('parent fd visible', path)
    try:
        open(f'/proc/{os.getppid()}/fd/3', 'wb').write(b'END 0.001 0\\n')
        print('wrote to the timer')
    except OSError as exc:
        print('timer fd', type(exc).__name__)
    time.sleep(1.5)
    print('done')
""")


async def test_forged_markers_do_not_shorten_the_time(backend, tmp_path):
    # Writing to every descriptor also garbles the attacker's own report, so the
    # execution may fail; what must never happen is a time shorter than the sleep.
    execution = await run_candidate(FORGE_MARKERS, tmp_path)
    assert "done" in execution.stdout, execution.stderr_tail
    assert "wrote to the timer" not in execution.stdout
    assert execution.observed_time >= 1.5
    assert execution.time is None or execution.time >= 1.5


async def test_leftover_processes_are_killed_and_cannot_report(backend, tmp_path):
    # The entry returns at once and leaves a worker behind to finish "later": the time
    # ends when the execution's report pipe closes, and the worker does not survive.
    code = textwrap.dedent("""
        import os, time
        if os.fork() == 0:
            os.closerange(3, 256)
            time.sleep(3)
            print('worker still running')
            os._exit(0)
    """)
    execution = await run_candidate(code, tmp_path)
    await asyncio.sleep(3.5)
    assert execution.ok, execution.error
    assert "worker still running" not in execution.stdout
    assert execution.time < 2.5


async def test_child_runs_unprivileged(backend, tmp_path):
    code = ("print([l.split(':')[1].split() for l in open('/proc/self/status') "
            "if l.split(':')[0] in ('Uid', 'CapEff', 'CapBnd', 'NoNewPrivs')])")
    result = await sandbox.run_python(["-c", code], visibility=sandbox.Visibility(tmp_path))
    assert result.ok, result.stderr
    uid, cap_eff, cap_bnd, nnp = eval(result.stdout)
    assert cap_eff == ["0000000000000000"] and cap_bnd == ["0000000000000000"]
    assert nnp == ["1"]
    assert uid[0] != "0"
    assert result.isolation == backend


CARRY_OVER = textwrap.dedent("""
    import ctypes, os, re, sys, uuid
    import numpy
    libc = ctypes.CDLL(None, use_errno=True)
    mark = 'hp-carry'
    token = 'TOKEN-' + uuid.uuid4().hex
    print(token)  # relayed by the timer: it must not reach a later execution's memory
    # What an earlier execution could have left, looked for before leaving it again.
    for place in ('/tmp', '/var/tmp', '/dev/shm', os.path.expanduser('~'), '.'):
        if os.path.exists(os.path.join(place, mark)):
            print('KEPT file in', place)
        open(os.path.join(place, mark), 'w').write('kept')
    if hasattr(numpy, '_hp_carry'):
        print('KEPT a module attribute')
    numpy._hp_carry = True
    if libc.shmget(0x4850, 0, 0) >= 0:
        print('KEPT a shared memory segment')
    print('made shm', libc.shmget(0x4850, 4096, 0o1000 | 0o666) >= 0)
    add_key, keyctl = 248, 250  # x86_64 (the suite's machines)
    if libc.syscall(keyctl, 10, -4, b'user', b'hp-carry', 0) > 0:  # KEYCTL_SEARCH
        print('KEPT a key in the user keyring')
    print('made key', libc.syscall(add_key, b'user', b'hp-carry', b'x', 1, -4) > 0)
    for pid in os.listdir('/proc'):
        try:
            if pid.isdigit() and open(f'/proc/{pid}/comm').read().strip() == mark:
                print('KEPT a process', pid)
        except OSError:
            pass
    if os.fork() == 0:
        libc.prctl(15, mark.encode(), 0, 0, 0)  # PR_SET_NAME
        os.closerange(3, 256)
        import time
        time.sleep(60)
        os._exit(0)
    # Every writable mapping of this process, for another execution's token.
    pattern = re.compile(rb'TOKEN-[0-9a-f]{32}')
    seen = set()
    with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split('-'))
            if 'rw' not in fields[1] or end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                seen.update(pattern.findall(mem.read(end - start)))
            except (OSError, OverflowError, ValueError):
                continue
    print('own token in memory', token.encode() in seen)
    for other in seen - {token.encode()}:
        print('KEPT in memory', other.decode())
    print('done')
""")


async def test_nothing_carries_over_within_one_sandbox(backend, tmp_path):
    # Three executions in one warm sandbox, as a grading runs them: each leaves files,
    # a module attribute, a System V segment, a key in the uid's keyring, a running
    # process and its own output behind, and looks for what the one before it left.
    path = tmp_path / "carry.py"
    path.write_text(CARRY_OVER + CANDIDATE_TAIL)
    async with Executor(path, INSTRUMENTATION, threads=1, limits=sandbox.Limits(timeout=120),
                        read_only=(PROBLEM_DATA,)) as executor:
        runs = [await executor.run() for _ in range(3)]
    assert executor.sandboxes == 1  # one sandbox: the executions really shared it
    for run in runs:
        assert run.ok, run.error + run.stderr_tail
        assert "done" in run.stdout, run.stdout + run.stderr_tail
        assert "own token in memory True" in run.stdout, run.stdout  # the scan works
        assert "made shm True" in run.stdout and "made key True" in run.stdout, run.stdout
        assert "KEPT" not in run.stdout, run.stdout
