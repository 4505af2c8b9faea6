"""The grader's side of timed executions, run inside one sandboxed process per file.

The harness passes this file's source with ``python -P -c`` (so the child needs no
access to the harness's files and never imports from its writable directory), a JSON
configuration as its argument and one JSON job per line on stdin, each followed, in
turn, by the harness's two answers (a line each: it has read the sandbox's CPU time at
START, and at END).  Two kinds of process take part:

- the **timer** (a warm process) imports numpy and what the task preloads (torch,
  scikit-learn) once (not timed, as in the seed's FINAL_TIME), makes itself
  non-dumpable (so a process of the same uid can neither trace it nor open its file
  descriptors) and says ``READY`` on the private control channel (fd 3, read only by
  the harness).  The harness sends a job only when the machine is free to time it.
  For each job the timer writes the candidate's file, forks, writes ``START`` and
  waits for the harness's answer before it lets the execution start (its clock starts
  then).  It waits until every holder of the report pipe has closed it, writes ``END``
  with the interval its own clock measured, waits for the second answer before it lets
  the execution go on to strict mode's probes, waits for the execution to exit, kills
  whatever the candidate left running, relays the report and the execution's output,
  then wipes every place the execution could write (its
  directory, ``/tmp``, ``/dev/shm``, ...) and waits until the kernel has released every
  key the execution had charged to the sandbox's uid.
  Only when nothing of the execution is left does it say ``READY`` again; when it
  cannot make sure of that, it says ``DIRTY`` and exits, and the harness starts a new
  sandbox.  It never runs candidate code, and every job is a fresh fork of it: an
  execution never meets a process, a file or a module that an earlier one touched.
- the **execution** process enters user, IPC, network and UTS namespaces of its own
  (so its keyrings, System V and POSIX IPC objects and abstract sockets are new and die
  with it), drops every capability, closes the control channel and the job pipe before
  anything of the candidate exists, imports the candidate (work at import time is
  timed), wraps the required methods to record what passes through them, calls the
  entry function and writes its report on the pipe.

Everything in the execution process, the report included, is the candidate's to
forge: the grader treats the report as the candidate's output, to be checked against
what it knows, and the time as the timer's alone.  The timer decides nothing.
"""


def _serve():
    import base64
    import ctypes
    import importlib
    import json
    import os
    import platform
    import select
    import signal
    import socket
    import sys
    import time

    import numpy  # noqa: F401  (imported before the timed region on purpose)

    config = json.loads(sys.argv[1])
    # What the task's pipeline imports (torch and its parts, scikit-learn's estimators):
    # imported once, before any timed region, as the seed's FINAL_TIME left them out.
    for name in config["preload"]:
        importlib.import_module(name)
    control = config["control_fd"]
    workdir = config["workdir"]
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_dumpable = 4
    libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(config["threads"])

    def send(text):
        data = (text + "\n").encode()
        while data:
            data = data[os.write(control, data):]

    class Output:
        """The head and tail of one stream of the execution's output: the rule of
        ``sandbox._Capture``, repeated because this file runs without the harness's
        files and imports nothing of them."""

        def __init__(self, fd):
            self.fd, self.head, self.tail, self.dropped = fd, bytearray(), bytearray(), 0

        def feed(self, chunk):
            half = config["max_output"] // 2
            room = half - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            self.tail += chunk
            if len(self.tail) > half:
                self.dropped += len(self.tail) - half
                del self.tail[:len(self.tail) - half]

        def text(self):
            head, tail = (bytes(b).decode("utf-8", "replace") for b in (self.head, self.tail))
            if self.dropped:
                return f"{head}\n[... {self.dropped} bytes of output truncated ...]\n{tail}"
            return head + tail

    class Collected:
        def __init__(self, fd):
            self.fd, self.data = fd, bytearray()

        def feed(self, chunk):
            self.data += chunk

    def pump(streams, until, deadline=None):
        """Read every open stream until ``until`` (one of them) is at its end, or the
        deadline passes; a stream at its end is closed and dropped."""
        while until in streams:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([s.fd for s in streams], [], [], wait)
            if not ready:
                return
            for stream in [s for s in streams if s.fd in ready]:
                chunk = os.read(stream.fd, 1 << 20)
                if chunk:
                    stream.feed(chunk)
                else:
                    os.close(stream.fd)
                    streams.remove(stream)

    def others():
        """Processes in this PID namespace other than the timer and its init."""
        found = set()
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in (1, os.getpid(), template_pid):
                found.add(int(name))
        return found

    def end_leftovers(pid):
        if not config["own_pid_namespace"]:
            # No namespace of its own (isolation "none"): the execution's process group.
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return True
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            left = others()
            if not left:
                return True
            for other in left:  # all the candidate left (never init, us or the template)
                try:
                    os.kill(other, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            time.sleep(0.002)
        return False

    # Where an execution may have written (emptied after each one); inside them, what the
    # sandbox bound in read-only (left alone) and the directories that must stay (emptied).
    if config["own_pid_namespace"]:
        places, bound_ro, emptied = config["scratch"], config["read_only"], config["emptied"]
    else:  # isolation "none": the execution's directory and its own TMPDIR only
        places, bound_ro = [workdir, os.environ["TMPDIR"]], []
        emptied = [workdir, os.environ["HOME"]]
    scratch = [os.path.normpath(p) for p in places]
    skip = {os.path.normpath(p) for p in bound_ro}
    emptied = {os.path.normpath(p) for p in emptied}
    ancestors = set()
    for path in skip | emptied:
        while path != os.path.dirname(path):
            path = os.path.dirname(path)
            ancestors.add(path)

    def remove(path):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        for entry in os.listdir(path):
            remove(os.path.join(path, entry))
        os.rmdir(path)

    def wipe(directory, check=False):
        """Empty ``directory`` but for what the sandbox put there; with ``check``, only
        list what would go."""
        found = []
        for entry in os.listdir(directory):
            path = os.path.join(directory, entry)
            if path in skip:
                continue
            real_dir = os.path.isdir(path) and not os.path.islink(path)
            if real_dir and (path in emptied or path in ancestors):
                found += wipe(path, check)
            elif check:
                found.append(path)
            else:
                remove(path)
        return found

    keyctl = {"x86_64": 250, "aarch64": 219}.get(platform.machine())
    ioprio_get = {"x86_64": 252, "aarch64": 31}.get(platform.machine())

    def clear_kernel_objects():
        """System V IPC objects of this IPC namespace, and the uid's keyrings (they
        outlive processes).  Only inside a sandbox: outside, they are the host's."""
        if not config["own_pid_namespace"]:
            return
        for kind, remove_id in (("shm", lambda i: libc.shmctl(i, 0, None)),
                                ("sem", lambda i: libc.semctl(i, 0, 0)),
                                ("msg", lambda i: libc.msgctl(i, 0, None))):
            try:
                with open(f"/proc/sysvipc/{kind}") as table:
                    rows = table.read().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                remove_id(int(row.split()[1]))
        if keyctl is not None:
            for keyring in (-3, -4, -5):  # session, user, user session: KEYCTL_CLEAR
                libc.syscall(keyctl, 7, keyring)

    leftovers = []  # what the last clean-up could not remove

    def key_quota():
        """The keys (count, bytes) the kernel charges to this uid: an execution's keys
        die with its user namespace, and the next one must not meet their quota."""
        try:
            with open("/proc/key-users") as f:
                for line in f:
                    uid, _, rest = line.partition(":")
                    if uid.strip() == str(os.getuid()):
                        fields = rest.split()
                        return tuple(int(x.split("/")[0]) for x in fields[2:4])
        except (OSError, ValueError, IndexError):
            pass
        return (0, 0)

    quota = []

    def keys_released():
        deadline = time.monotonic() + 3.0
        while any(now > was for now, was in zip(key_quota(), quota[0], strict=True)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def clean(pid):
        """True when nothing an execution (``pid``; None before the first) made is left."""
        if pid is not None and not end_leftovers(pid):
            return False
        if pid is not None and quota and not keys_released():
            leftovers[:] = [f"keys charged to the uid ({key_quota()}, was {quota[0]})"]
            return False
        try:
            clear_kernel_objects()
            for directory in scratch:
                wipe(directory)
            for directory in emptied:  # a home replaced by a link or removed comes back
                if not os.path.isdir(directory):
                    os.makedirs(directory, 0o777)
            left = [path for d in scratch for path in wipe(d, check=True)]
        except (OSError, RecursionError) as exc:
            left = [f"{type(exc).__name__}: {exc}"]
        leftovers[:] = left[:5]
        return not left

    def template(link):
        """The pristine process every execution is forked from: it has run nothing but
        the imports, and it never sees a job, a report or an output (those pass between
        the timer and the execution only), so no execution can find an earlier one's
        data in the memory it starts with."""
        while link.recv(1):
            ends = [os.pipe() for _ in range(7)]  # job, ready, go, report, probes, out, err
            pid = os.fork()
            if pid == 0:
                link.close()
                for read, write in ends:
                    os.close(write if (read, write) in (ends[0], ends[2]) else read)
                _child(*(read if i in (0, 2) else write for i, (read, write) in
                         enumerate(ends)))
            mine = [write if i in (0, 2) else read for i, (read, write) in enumerate(ends)]
            for i, (read, write) in enumerate(ends):
                os.close(read if i in (0, 2) else write)
            socket.send_fds(link, [str(pid).encode()], mine)
            for fd in mine:
                os.close(fd)
            status = os.waitpid(pid, 0)[1]
            link.send(str(os.waitstatus_to_exitcode(status)).encode())
        os._exit(0)

    def fresh_identity():
        """New user, IPC, network and UTS namespaces for this execution alone: what the
        kernel keeps per user namespace (the user, session and persistent keyrings),
        per IPC namespace (System V objects, POSIX queues) or per network namespace
        (abstract sockets) starts empty and dies with the execution.  The namespace maps
        the sandbox's own uid and gid only, and every capability in it is dropped before
        anything of the candidate exists.  False when the kernel refuses."""
        flags = 0x10000000 | 0x08000000 | 0x40000000 | 0x04000000  # USER IPC NET UTS
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(flags) != 0:
            return False
        libc.prctl(pr_set_dumpable, 1, 0, 0, 0)  # else /proc/self is root's to write
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
        for cap in range(64):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (past the last one: EINVAL)
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
            os._exit(1)
        return True

    def _child(job_r, ready_w, go_r, report_w, probe_w, out_w, err_w):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (null, out_w, err_w):
            os.close(fd)
        if not config["own_pid_namespace"]:
            os.setpgid(0, 0)
        # At the sandbox's memory limit, the kernel ends the execution, never the timer.
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        own = config["own_pid_namespace"] and fresh_identity()
        status = 1
        try:
            chunks = []
            while chunk := os.read(job_r, 1 << 20):
                chunks.append(chunk)
            os.close(job_r)
            job = json.loads(b"".join(chunks))
            sys.path.insert(0, workdir)  # as for `python candidate.py`
            os.write(ready_w, b"r" if own else b"s")
            os.close(ready_w)
            if os.read(go_r, 1) != b"g":
                os._exit(1)
            libc.prctl(pr_set_dumpable, 1, 0, 0, 0)
            # go_r stays open: the timer says on it when the probes may start
            _execute(job, report_w, probe_w, go_r)  # noqa: F821 (runner_execution.py)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    link, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()
    sys.stderr.flush()
    template_pid = os.fork()
    if template_pid == 0:
        link.close()
        os.close(control)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # the job pipe: jobs are never an execution's to read
        os.close(null)
        template(template_end)
    template_end.close()

    def template_state():
        """What an execution could change in the template and so pass to the next
        (None once the template is gone).  The CPU is not the template's own: the harness
        moves the whole sandbox to the timing CPU, so the template must be on the one
        CPU the timer is on."""
        try:
            with open(f"/proc/{template_pid}/limits") as f:
                limits = f.read()
            cpus, own = os.sched_getaffinity(template_pid), os.sched_getaffinity(0)
            # What a process of the same uid may set on another: its nice value, its
            # scheduling policy and priority, and its I/O priority (an execution's
            # children inherit the template's).
            scheduling = [(os.getpriority(os.PRIO_PROCESS, pid), os.sched_getscheduler(pid),
                           os.sched_getparam(pid).sched_priority,
                           libc.syscall(ioprio_get, 1, pid) if ioprio_get else None)
                          for pid in (template_pid, os.getpid())]
            return limits, scheduling, len(own) == 1 and cpus == own
        except OSError:
            return None

    pristine = template_state()
    if pristine is None:
        send("DIRTY the template process did not start")
        return

    def comm(pid):
        try:
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()
        except OSError:
            return "gone"

    def run_one(job):
        """One execution; '' when nothing of it is left, else why the sandbox must end."""
        with open(os.path.join(workdir, "candidate.py"), "wb") as f:
            f.write(base64.b64decode(job.pop("source")))
        link.send(b"f")
        message, fds, _, _ = socket.recv_fds(link, 64, 8)
        pid = int(message)
        job_w, ready_r, go_w, report_r, probe_r, out_r, err_r = fds
        data = json.dumps(job).encode()
        try:
            while data:
                data = data[os.write(job_w, data):]
        except BrokenPipeError:
            pass
        os.close(job_w)
        answer = os.read(ready_r, 1)
        ready = answer in (b"r", b"s")
        os.close(ready_r)
        out, err, report, probes = (Output(out_r), Output(err_r), Collected(report_r),
                                    Collected(probe_r))
        streams = [report, probes, out, err]
        sys.stdout.flush()
        send("START")
        # The harness reads the sandbox's CPU time as START arrives and then answers: the
        # execution starts only after that read, and (below) goes on to the probes only
        # after the one at END, so that the CPU-time clock holds nothing else however
        # late the harness reads.
        resumed = sys.stdin.buffer.readline()
        started = time.perf_counter()
        try:
            os.write(go_w, b"g" if ready and resumed else b"x")
        except BrokenPipeError:
            pass
        pump(streams, report)
        # The timed interval ends when every holder of the report pipe has closed it: what
        # the execution reports is complete then, and nothing done later can be in it.
        elapsed = time.perf_counter() - started
        send(f"END {elapsed!r}")
        sys.stdin.buffer.readline()
        try:  # (never blocking: the execution can reach this pipe, and fill it)
            os.set_blocking(go_w, False)
            os.write(go_w, b"p")
        except (BrokenPipeError, BlockingIOError):
            pass
        os.close(go_w)
        pump(streams, probes, time.monotonic() + job["probe_timeout"])
        deadline = time.monotonic() + 5.0
        while not select.select([link], [], [], 0.01)[0]:
            pump(streams, streams[0] if streams else None, time.monotonic() + 0.01)
            if time.monotonic() > deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        exit_code = int(link.recv(32) or b"1")
        gone = end_leftovers(pid)
        pump(streams, out, time.monotonic() + 1.0)
        pump(streams, err, time.monotonic() + 1.0)
        for stream in streams:
            os.close(stream.fd)
        send(f"EXIT {exit_code}")
        send("REPORT " + report.data.decode("utf-8", "replace").replace("\n", " "))
        send("PROBES " + probes.data.decode("utf-8", "replace").replace("\n", " "))
        send("OUTPUT " + json.dumps({"stdout": out.text(), "stderr": err.text(),
                                     "truncated": bool(out.dropped or err.dropped)}))
        if not gone:
            return "a process it started could not be killed: " + ", ".join(
                f"{p} ({comm(p)})" for p in sorted(others())[:5])
        if not clean(pid):
            return "it left something that could not be removed: " + ", ".join(leftovers)
        if template_state() != pristine:
            return "the template process changed"
        if answer == b"s" and config["own_pid_namespace"]:
            # Without namespaces of its own, the next execution would share this one's
            # identity: it gets a new sandbox (and uid) instead.
            return "the kernel gave the execution no user namespace of its own"
        return ""

    if not clean(None):
        send("DIRTY the sandbox was not empty at the start: " + ", ".join(leftovers))
        return
    quota.append(key_quota())
    send("READY")
    for line in sys.stdin.buffer:
        try:
            left = run_one(json.loads(line))
        except OSError as exc:  # the template is gone: the execution saw to that
            send(f"DIRTY the template process failed ({type(exc).__name__})")
            return
        if left:
            send(f"DIRTY after an execution: {left}")
            return
        send("READY")


_serve()
