"""The grader's side of timed executions, run inside one sandboxed process per file.

The harness passes this file's source with ``python -P -c`` (so the child needs no
access to the harness's files and never imports from its writable directory), a JSON
configuration as its argument and one JSON job per line on stdin.  Two kinds of
process take part:

- the **timer** (a warm process) imports numpy and what the task preloads (torch,
  scikit-learn) once (not timed, as in the seed's FINAL_TIME), makes itself
  non-dumpable (so a process of the same uid can neither trace it nor open its file
  descriptors) and says ``READY`` on the private control channel (fd 3, read only by
  the harness).  The harness sends a job only when the machine is free to time it.
  For each job the timer writes the candidate's file,
  writes ``START`` and forks.  It waits until the execution process has exited *and*
  every holder of the report pipe has closed it, writes ``END`` with the interval its
  own clock measured, kills whatever the candidate left running, relays the report and
  the execution's output, then wipes every place the execution could write (its
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
            os.close(go_r)
            libc.prctl(pr_set_dumpable, 1, 0, 0, 0)
            _execute(job, report_w, probe_w)
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
        started = time.perf_counter()
        try:
            os.write(go_w, b"g" if ready else b"x")
        except BrokenPipeError:
            pass
        os.close(go_w)
        pump(streams, report)
        # The timed interval ends when every holder of the report pipe has closed it: what
        # the execution reports is complete then, and nothing done later can be in it.
        elapsed = time.perf_counter() - started
        send(f"END {elapsed!r}")
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


def _execute(job, report_fd, probe_fd):
    """Import the candidate, wrap what the task's probes watch (``job["watch"]``, made
    by ``problems.ml_training.probes``), call the entry function and report what was seen."""
    import base64
    import importlib
    import importlib.util
    import inspect
    import json
    import os
    import sys

    import numpy as np

    watch = {}
    for probe in job["watch"]:
        watch.setdefault(probe["kind"], probe)
    data_probe = watch.get("data") or {}
    torch = None
    if "torch_module" in watch or data_probe.get("seeds_torch"):
        import torch

    counts = {"feature_calls": 0, "feature_rows": 0, "feature_output_shape": None,
              "feature_widths_differ": False,
              "model_instances": 0, "train_rows": 0, "eval_rows": 0, "data_calls": 0,
              "train_batches": {}, "fit_calls": 0, "fit_rows": 0, "fit_params": []}
    keep = (watch.get("eval_predictions") or {}).get("rows", 0)
    eval_predictions = []
    eval_checksum = [0.0]  # sum of eval-mode logits: differs whenever the weights differ
    eval_inputs = []  # what the model was given in eval mode, call by call
    eval_logits = []  # and what it returned (a torch model), call by call
    eval_weights = []  # [rows, state_dict] for each run of calls with the same weights
    # The feature extractor's outputs, call by call, in order: as many of the last calls
    # as hold its last ``feature_keep`` rows (the images' features, however they were
    # chunked); None for an output that is not an array.
    features_out = []
    feature_keep = (watch.get("rows") or {}).get("rows", 0)
    originals = {}
    MODEL_PROBE_ROWS = 256  # rows the grader asks a fitted estimator about (model_probe)
    MODEL_PROBE_STREAM = 0x9B0BE5  # their draws: a stream of the data set's seed

    def pack(array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}

    def as_array(value):
        if torch is not None and isinstance(value, torch.Tensor):
            return value.detach().cpu().float().numpy().copy()
        return np.array(value, dtype=np.float32)

    def write_all(fd, payload):
        data = json.dumps(payload).encode()
        while data:
            data = data[os.write(fd, data):]
        os.close(fd)

    def record_eval(module, x, out, rows):
        counts["eval_rows"] += rows
        eval_predictions.extend(out.detach().argmax(dim=-1).reshape(-1).tolist())
        eval_checksum[0] += float(out.detach().double().sum())
        # The model's inputs and weights, so the harness can compute what this model
        # predicts by itself rather than take the predictions on trust.
        try:
            eval_inputs.append(as_array(x).reshape(rows, -1))
            eval_logits.append(as_array(out).reshape(rows, -1))
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        except Exception:
            return
        last = eval_weights[-1][1] if eval_weights else None
        if last is not None and last.keys() == state.keys() and all(
                torch.equal(last[k], state[k]) for k in state):
            eval_weights[-1][0] += rows
        else:
            eval_weights.append([rows, state])

    def model_evidence():
        """The features (the extractor's last ``feature_keep`` rows, over all its calls)
        and the last ``keep`` eval rows: inputs, and the weights they met (a torch model)."""
        out = {}
        readable = features_out and all(a is not None for a in features_out)
        if readable and not counts["feature_widths_differ"]:
            try:  # every call's output, in call order: the last feature_keep rows
                out["features"] = pack(np.concatenate(features_out)[-feature_keep:])
            except ValueError:
                counts["feature_widths_differ"] = True
        if not eval_inputs:
            return out
        try:
            inputs = np.concatenate(eval_inputs)[-keep:]
        except ValueError:
            return out
        out["eval_inputs"] = pack(inputs)
        if len(eval_logits) == len(eval_inputs):
            try:
                logits = np.concatenate(eval_logits)[-keep:]
                if len(logits) == len(inputs):
                    out["eval_logits"] = pack(logits)
            except ValueError:
                pass
        if not eval_weights:
            return out
        segments, skip = [], sum(rows for rows, _ in eval_weights) - len(inputs)
        for rows, state in eval_weights:
            used = rows - min(rows, max(skip, 0))
            skip -= rows
            if used > 0:
                segments.append({"rows": used,
                                 "weights": {k: pack(v.float().numpy()) for k, v in
                                             state.items() if v.is_floating_point()}})
        out["eval_weights"] = segments
        return out

    def wrap_method(cls, name, make):
        """Wrap a method however it is defined (plain, static or class method)."""
        raw = inspect.getattr_static(cls, name, None)
        if isinstance(raw, staticmethod):
            originals[name] = ("static", raw.__func__)
            setattr(cls, name, staticmethod(make(raw.__func__, bound=False)))
        elif isinstance(raw, classmethod):
            originals[name] = ("class", getattr(cls, name))
            setattr(cls, name, classmethod(make(raw.__func__, bound=True)))
        elif callable(raw):
            originals[name] = ("plain", raw)
            setattr(cls, name, make(raw, bound=True))

    def first_argument(args, kwargs, bound, keyword):
        rest = args[1:] if bound else args
        return rest[0] if rest else kwargs.get(keyword, ())

    def rows_of(value):
        try:
            return len(value)
        except TypeError:
            return 0

    def watch_data(module, probe):
        data = job.get("data")
        if data is None or not callable(getattr(module, probe["function"], None)):
            return
        labels = np.asarray(data["labels"], dtype=np.int64)
        shape = tuple(probe["image_shape"])

        def fresh_data(*args, **kwargs):
            # The original's draws for the grader's seed; its label draw (if it makes one)
            # is made too, so everything drawn afterwards follows the original's stream.
            counts["data_calls"] += 1
            np.random.seed(data["seed"])
            if probe["seeds_torch"]:
                torch.manual_seed(data["seed"])
            images = np.random.rand(data["n_samples"], *shape).astype(np.float32)
            if probe["label_draw"]:
                np.random.randint(0, probe["label_draw"], size=data["n_samples"])
            return images, labels.copy()

        setattr(module, probe["function"], fresh_data)

    def record_features(out):
        """One call's output: its shape added to the union's (rows of one width), the
        output kept while it holds some of the last ``feature_keep`` rows."""
        shape = list(getattr(out, "shape", ()))
        union = counts["feature_output_shape"]
        if counts["feature_calls"] == 1:
            counts["feature_output_shape"] = shape
        elif union and shape and union[1:] == shape[1:]:
            union[0] += shape[0]
        else:  # rows of different widths (or no rows): the outputs have no union
            counts["feature_output_shape"] = None
            counts["feature_widths_differ"] = True
        try:
            array = as_array(out)
            array = array if array.ndim else None
        except Exception:
            array = None
        features_out.append(array)
        held = sum(len(a) for a in features_out[1:] if a is not None)
        while len(features_out) > 1 and held >= feature_keep:
            features_out.pop(0)
            held -= len(features_out[0]) if features_out[0] is not None else 0

    def watch_rows(module, probe):
        feature_cls = getattr(module, probe["class"], None)
        if not isinstance(feature_cls, type):
            return

        def make_counted(method, bound):
            replacement = (job.get("data") or {}).get("features")

            def counted_features(*args, **kwargs):
                out = method(*args, **kwargs)
                if replacement is not None:
                    # A replay of the original's training on another pipeline's
                    # features: the harness hands them in, in place of these.
                    given = np.frombuffer(base64.b64decode(replacement["b64"]),
                                          dtype=np.float32).reshape(replacement["shape"])
                    out = (torch.tensor(given, dtype=out.dtype)
                           if torch is not None and isinstance(out, torch.Tensor)
                           else np.array(given, dtype=getattr(out, "dtype", np.float32)))
                images = args[1] if bound and len(args) > 1 else (args[0] if args else ())
                counts["feature_calls"] += 1
                counts["feature_rows"] += rows_of(images)
                record_features(out)
                return out
            return counted_features
        wrap_method(feature_cls, probe["method"], make_counted)
        originals["features"] = originals.get(probe["method"])

    def watch_torch_module(module, probe):
        model_cls = getattr(module, probe["class"], None)
        if not (isinstance(model_cls, type) and issubclass(model_cls, torch.nn.Module)):
            return
        forward, init = model_cls.forward, model_cls.__init__
        originals["forward"] = forward

        def counted_init(self, *args, **kwargs):
            counts["model_instances"] += 1
            init(self, *args, **kwargs)

        # The harness's own shortcut replay (never a candidate's job): training stops
        # having any effect after this many rows, the rest of the run (its draws) as it is.
        stop_after = (job.get("data") or {}).get("train_rows_limit")
        forward_rows = [0]
        # The harness's perturbed replays: each training output moved by up to ``ulps``
        # units in its last place, as another order of sums would move it, from a
        # generator of its own (the run's draws are untouched).
        jitter = (job.get("data") or {}).get("output_jitter")
        if jitter:
            jitter_draws = torch.Generator().manual_seed(int(jitter["seed"]))
            jitter_ulps = float(jitter["ulps"])

        def counted_forward(self, x, *args, **kwargs):
            out = forward(self, x, *args, **kwargs)
            rows = int(x.shape[0]) if getattr(x, "ndim", 0) else 0
            if self.training:
                forward_rows[0] += rows
                if (jitter and isinstance(out, torch.Tensor)
                        and out.is_floating_point()):
                    moved = torch.rand(out.shape, generator=jitter_draws) * 2 - 1
                    out = out * (1 + moved.to(out.device, out.dtype)
                                 * (jitter_ulps * torch.finfo(out.dtype).eps))
                if (stop_after is not None and forward_rows[0] > stop_after
                        and isinstance(out, torch.Tensor) and out.requires_grad):
                    # cut from the parameters: no gradient reaches them, no step moves them
                    out = out.detach().requires_grad_()
                if isinstance(out, torch.Tensor) and out.requires_grad:
                    # Counted when the gradient reaches the output: rows trained on,
                    # one optimisation step per batch.
                    def backpropagated(grad, rows=rows):
                        counts["train_rows"] += rows
                        batches = counts["train_batches"]
                        batches[rows] = batches.get(rows, 0) + 1
                    out.register_hook(backpropagated)
            elif isinstance(out, torch.Tensor):
                record_eval(self, x, out, rows)
            return out

        model_cls.__init__ = counted_init
        model_cls.forward = counted_forward

        # A traced or scripted copy of the model no longer calls forward: record
        # its eval-mode outputs as well.
        class Recorded(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x, *args, **kwargs):
                out = self.inner(x, *args, **kwargs)
                if not self.inner.training and isinstance(out, torch.Tensor):
                    record_eval(self.inner, x, out,
                                int(x.shape[0]) if getattr(x, "ndim", 0) else 0)
                return out

        for name in ("trace", "script"):
            compile_fn = getattr(torch.jit, name)

            def compiled(obj, *args, _compile=compile_fn, **kwargs):
                result = _compile(obj, *args, **kwargs)
                return Recorded(result) if isinstance(obj, model_cls) else result
            setattr(torch.jit, name, compiled)

    def training_rows(X, y):
        """A fit's rows as float32 (what the library's trees see) and their labels, kept
        for the model probe (None when they are not a plain table of numbers)."""
        try:
            if hasattr(X, "toarray"):  # a sparse matrix
                X = X.toarray()
            rows = np.array(X, dtype=np.float32)
            labels = np.asarray(y).reshape(-1)
        except Exception:
            return None
        if rows.ndim != 2 or not 0 < rows.size <= 10**7 or len(labels) != len(rows):
            return None
        return rows, labels

    def probe_rows(rows, labels, seed):
        """The grader's probe rows, drawn from a fit's own rows: points on segments
        between rows of different labels (across the class boundary), points anywhere in
        the rows' range, rows with one feature moved across its range (past the trees'
        thresholds) and rows nudged off the data."""
        rng = np.random.RandomState(seed)
        x = rows.astype(np.float64)
        n, width = x.shape
        low, high = x.min(axis=0), x.max(axis=0)
        spread = x.std(axis=0) + 1e-12
        count = MODEL_PROBE_ROWS // 4
        i = rng.randint(0, n, size=4 * count)
        j = rng.randint(0, n, size=4 * count)
        other = labels[i] != labels[j]
        i, j = (i[other], j[other]) if other.sum() >= count else (i, j)
        t = rng.rand(count, 1)
        across = (1 - t) * x[i[:count]] + t * x[j[:count]]
        anywhere = low + rng.rand(count, width) * (high - low)
        moved = x[rng.randint(0, n, size=count)].copy()
        column = rng.randint(0, width, size=count)
        moved[np.arange(count), column] = (low[column] + rng.rand(count)
                                           * (high[column] - low[column]))
        nudged = (x[rng.randint(0, n, size=count)]
                  + 0.05 * spread * rng.standard_normal((count, width)))
        return np.concatenate([across, anywhere, moved, nudged]).astype(np.float32)

    def model_probe(est):
        """Inside the pipeline's first prediction of each fitted estimator (so in the
        timed run, and before it returns; a copy of a fitted estimator is asked about
        the latest fit's rows): the estimator's class probabilities on the grader's probe
        rows.  Whatever model is in place answers them; to answer as the original's
        fitted model does, it must be that model, fitted by now."""
        if id(est) in probed or len(model_probes) >= 3 or not fit_data or (
                job.get("data") or {}).get("seed") is None:
            return
        probed.add(id(est))
        # its own fit's rows, or (a copy of a fitted estimator) the latest fit's
        data = fit_data.get(id(est), fit_data.get("latest"))
        if data is None:
            return
        import hashlib
        seed = (int(job["data"]["seed"]) * 2654435761 + MODEL_PROBE_STREAM) % 2**32
        found = {}
        try:
            rows = probe_rows(*data, seed)
            found["model_probe_rows"] = hashlib.sha256(rows.tobytes()).hexdigest()
            votes = np.asarray(est.predict_proba(rows), dtype=np.float64)
            if votes.ndim != 2 or len(votes) != len(rows):
                raise ValueError(f"predict_proba gave shape {list(votes.shape)}")
            found["model_probe_votes"] = pack(votes)
        except Exception as exc:
            found["model_probe_error"] = f"{type(exc).__name__}: {exc}"[:300]
        model_probes.append(found)

    def watch_estimator(probe):
        """The estimator's class where it is defined: every name it goes by is watched."""
        try:
            est_cls = getattr(importlib.import_module(probe["module"]), probe["class"])
        except (ImportError, AttributeError):
            return

        def plain(value):
            return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)

        def make_fit(method, bound):
            def counted_fit(self, *args, **kwargs):
                X = first_argument((self, *args), kwargs, True, "X")
                fitted.append(self)
                fit_data[id(self)] = fit_data["latest"] = training_rows(
                    X, (args[1:2] or [kwargs.get("y")])[0])
                probed.discard(id(self))
                counts["fit_calls"] += 1
                counts["fit_rows"] += rows_of(X)
                try:
                    counts["fit_params"].append({k: plain(v) for k, v in
                                                 self.get_params(deep=False).items()})
                except Exception:
                    counts["fit_params"].append(None)
                return method(self, *args, **kwargs)
            return counted_fit

        def make_predict(method, bound):
            def counted_predict(self, *args, **kwargs):
                out = method(self, *args, **kwargs)
                X = first_argument((self, *args), kwargs, True, "X")
                try:
                    predicted = np.asarray(out).reshape(-1)
                    rows = len(predicted)
                    eval_predictions.extend(int(v) for v in predicted.tolist())
                    eval_checksum[0] += float(predicted.astype(np.float64).sum())
                    eval_inputs.append(np.asarray(X, dtype=np.float32).reshape(rows, -1))
                except (TypeError, ValueError):
                    rows = rows_of(X)
                counts["eval_rows"] += rows
                model_probe(self)
                return out
            return counted_predict

        for name, original in library_methods.get(est_cls, {}).items():
            if inspect.getattr_static(est_cls, name, None) is not original:
                replaced_early.append(f"{est_cls.__name__}.{name}")
        wrap_method(est_cls, "fit", make_fit)
        wrap_method(est_cls, "predict", make_predict)
        for name in ("fit", "predict"):  # from now on, the runner's wrappers are the original
            if est_cls in library_classes:
                library_classes[est_cls][name] = vars(est_cls).get(name)

    # The estimator's classes as the library defines them, before any candidate code:
    # a method replaced later (the forest's, its trees', their bases') is reported.
    library_classes = {}
    library_methods = {}
    for probe in job["watch"]:
        if probe["kind"] == "estimator":
            try:
                root = getattr(importlib.import_module(probe["module"]), probe["class"])
                roots = [root, *(getattr(root, "estimator", None) or type(None)).__mro__]
            except (ImportError, AttributeError):
                continue
            for cls in {c for r in roots for c in getattr(r, "__mro__", ())}:
                if cls is not object and cls is not type(None):
                    library_classes[cls] = dict(vars(cls))
            library_methods[root] = {name: inspect.getattr_static(root, name, None)
                                     for name in ("fit", "predict")}

    def replaced_methods():
        found = list(replaced_early)
        for cls, before in library_classes.items():
            now = vars(cls)
            for name in set(before) | set(now):
                if name.startswith("__") and name.endswith("__") and name != "__call__":
                    continue
                if before.get(name, None) is not now.get(name, None):
                    found.append(f"{cls.__name__}.{name}")
        for est in fitted:
            found += [f"{type(est).__name__} instance .{name}" for name in
                      ("fit", "predict", "predict_proba", "apply") if name in vars(est)]
        return sorted(set(found))[:10]

    replaced_early = []
    fitted = []
    fit_data = {}  # id of a fitted estimator (and "latest") -> its fit's rows and labels
    probed = set()  # ids of the estimators asked since their fit
    model_probes = []  # each probe's outcome, in order; the last one is reported
    spec = importlib.util.spec_from_file_location("candidate", job["module_path"])
    candidate = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = candidate
    spec.loader.exec_module(candidate)
    for probe in job["watch"]:
        if probe["kind"] == "data":
            watch_data(candidate, probe)
        elif probe["kind"] == "rows":
            watch_rows(candidate, probe)
        elif probe["kind"] == "torch_module":
            watch_torch_module(candidate, probe)
        elif probe["kind"] == "estimator":
            watch_estimator(probe)
    entry = getattr(candidate, job["entry"], None)
    if not callable(entry):
        write_all(report_fd, {"missing_entry": True})
        return
    result = entry()
    sys.stdout.flush()
    if library_classes:
        counts["estimator_replaced"] = replaced_methods()
    evidence = model_evidence()  # before the counts are read: it may set a flag in them
    if model_probes:
        evidence.update(model_probes[-1])
    write_all(report_fd, dict(counts, eval_checksum=round(eval_checksum[0], 6),
                              eval_predictions=eval_predictions[-keep:] if keep else [],
                              returned=result if isinstance(result, (int, float))
                              and not isinstance(result, bool) and abs(result) < 1e300
                              else None,  # NaN and infinities are not below it
                              **evidence))
    probes = job.get("probes")
    write_all(probe_fd, _probe(candidate, watch, probes, originals) if probes else {})


def _probe(module, watch, probes, originals):
    """Strict mode: each component on the grader's own inputs, through the candidate's
    unwrapped code (nothing here is counted as the pipeline's work)."""
    import numpy as np

    out = {}

    def attempt(name, fn):
        try:
            value = fn()
            out[name] = np.asarray(value, dtype=np.float64).round(7).tolist()
        except Exception as exc:  # reported as that component's failure
            out[name + "_error"] = f"{type(exc).__name__}: {exc}"[:300]

    rows = watch.get("rows")
    if rows is not None:
        images = np.random.RandomState(probes["seed"]).rand(
            probes["rows"], *probes["image_shape"]).astype(np.float32)
        feature_cls = getattr(module, rows["class"], None)
        kind, method = originals.get("features") or (None, None)

        def features():
            if method is None:
                raise AttributeError(f"{rows['class']}.{rows['method']} is missing")
            if kind == "plain":
                return method(feature_cls(), images)
            return method(images)

        attempt("features", features)
    torch_probe = watch.get("torch_module")
    if torch_probe is None or "weights" not in probes:
        return out
    import torch

    model_cls = getattr(module, torch_probe["class"], None)
    forward = originals.get("forward")
    torch.manual_seed(probes["seed"])

    def model():
        net = model_cls(**probes["init"])
        weights = {k: torch.tensor(v, dtype=torch.float32)
                   for k, v in probes["weights"].items()}
        missing = net.load_state_dict(weights, strict=False).missing_keys
        if [k for k in weights if k in missing]:
            raise KeyError(f"the model has no {', '.join(k for k in weights if k in missing)}")
        net.eval()
        with torch.no_grad():
            return forward(net, torch.tensor(probes["model_inputs"], dtype=torch.float32))

    attempt("logits", model)
    for name, inputs in probes["submodules"].items():
        def submodule(name=name, inputs=inputs):
            net = model_cls(**probes["init"])
            part = getattr(net, name, None)
            if not callable(part):
                raise AttributeError(f"the model has no `{name}` module")
            with torch.no_grad():
                return part(torch.tensor(inputs, dtype=torch.float32))

        attempt(name, submodule)
    return out


_serve()
