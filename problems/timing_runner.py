"""The grader's side of one timed execution, run inside the sandboxed child process.

The harness passes this file's source with ``python -c`` (so the child needs no access
to the harness's files) and a JSON job on stdin.  Two processes take part:

- the **timer** imports numpy and torch (not timed, as in the seed's FINAL_TIME), reads
  the job (the harness sends it when the machine is free to time it), fixes the thread
  count, makes itself non-dumpable (so a process of the
  same uid can neither trace it nor open its file descriptors), then writes ``START`` on
  the private control channel (fd 3, read only by the harness) and forks.  It waits
  until the execution process has exited *and* every holder of the report pipe has
  closed it, writes ``END`` with the interval its own clock measured, kills whatever
  the candidate left running, and relays the report.  It never runs candidate code.
- the **execution** process closes the control channel before anything of the
  candidate exists, imports the candidate (work at import time is timed), wraps the
  required methods to record what passes through them, calls the entry function and
  writes its report on the pipe.

Everything in the execution process, the report included, is the candidate's to
forge: the grader treats the report as the candidate's output, to be checked against
what it knows, and the time as the timer's alone.  The timer decides nothing.
"""


def _run():
    import ctypes
    import json
    import os
    import signal
    import sys
    import time

    import numpy  # noqa: F401  (imported before the timed region on purpose)
    import torch
    import torch._dynamo  # noqa: F401  (optimizers import it lazily: not the candidate's cost)
    import torch.nn
    import torch.nn.functional  # noqa: F401
    import torch.optim  # noqa: F401
    import torch.utils.data  # noqa: F401

    # The job comes once the harness is ready to time this execution (the process may
    # have been started, and torch imported, while the previous one ran).
    job = json.loads(sys.stdin.readline())
    sys.stdin.close()
    control = job["control_fd"]

    def send(text):
        os.write(control, (text + "\n").encode())

    torch.set_num_threads(job["threads"])
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_dumpable = 4
    libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
    read_end, write_end = os.pipe()
    probe_read, probe_write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    send("START")
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(control)
        os.close(read_end)
        os.close(probe_read)
        libc.prctl(pr_set_dumpable, 1, 0, 0, 0)
        status = 1
        try:
            _execute(job, write_end, probe_write)
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
    os.close(write_end)
    os.close(probe_write)
    report = _read_all(read_end)
    # The timed interval ends when every holder of the report pipe has closed it: what
    # the execution reports is complete then, and nothing done later can be in it.
    elapsed = time.perf_counter() - started
    send(f"END {elapsed!r}")
    probes = _read_all(probe_read, deadline=time.monotonic() + job["probe_timeout"])
    exit_code = _wait(pid, deadline=time.monotonic() + 5.0)
    if job["own_pid_namespace"]:
        try:
            os.kill(-1, signal.SIGKILL)  # all the candidate left behind (never pid 1 or us)
        except ProcessLookupError:
            pass
    send(f"EXIT {exit_code}")
    send("REPORT " + report.decode("utf-8", "replace").replace("\n", " "))
    send("PROBES " + probes.decode("utf-8", "replace").replace("\n", " "))


def _read_all(fd, deadline=None):
    import os
    import select
    import time

    chunks = []
    while True:
        if deadline is not None:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
        data = os.read(fd, 1 << 20)
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks)


def _wait(pid, deadline):
    import os
    import signal
    import time

    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.01)


def _execute(job, report_fd, probe_fd):
    import base64
    import importlib.util
    import inspect
    import json
    import os
    import sys

    import numpy as np
    import torch

    counts = {"feature_calls": 0, "feature_rows": 0, "feature_output_shape": None,
              "model_instances": 0, "train_rows": 0, "eval_rows": 0, "data_calls": 0,
              "train_batches": {}}
    eval_predictions = []
    eval_checksum = [0.0]  # sum of eval-mode logits: differs whenever the weights differ
    eval_inputs = []  # what the model was given in eval mode, call by call
    eval_weights = []  # [rows, state_dict] for each run of calls with the same weights
    features_out = [None]  # the last output of the feature extractor
    originals = {}

    def pack(array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}

    def as_array(value):
        if isinstance(value, torch.Tensor):
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
        """The last ``keep_predictions`` eval rows: inputs, and the weights they met."""
        keep = job["keep_predictions"]
        out = {}
        if features_out[0] is not None:
            out["features"] = pack(features_out[0])
        if not eval_inputs:
            return out
        try:
            inputs = np.concatenate(eval_inputs)[-keep:]
        except ValueError:
            return out
        segments, skip = [], sum(rows for rows, _ in eval_weights) - len(inputs)
        for rows, state in eval_weights:
            used = rows - min(rows, max(skip, 0))
            skip -= rows
            if used > 0:
                segments.append({"rows": used,
                                 "weights": {k: pack(v.float().numpy()) for k, v in
                                             state.items() if v.is_floating_point()}})
        out.update(eval_inputs=pack(inputs), eval_weights=segments)
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

    def instrument(module):
        data = job.get("data")
        if data is not None and callable(getattr(module, job["data_function"], None)):
            labels = np.asarray(data["labels"], dtype=np.int64)

            def fresh_data(*args, **kwargs):
                # The original's draws for the grader's seed; its label draw is made too,
                # so everything drawn afterwards follows the original's stream.
                counts["data_calls"] += 1
                np.random.seed(data["seed"])
                torch.manual_seed(data["seed"])
                images = np.random.rand(data["n_samples"], 28, 28).astype(np.float32)
                np.random.randint(0, 10, size=data["n_samples"])
                return images, labels.copy()

            setattr(module, job["data_function"], fresh_data)

        feature_cls = getattr(module, job["feature_class"], None)
        if isinstance(feature_cls, type):
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
                               if isinstance(out, torch.Tensor)
                               else np.array(given, dtype=getattr(out, "dtype", np.float32)))
                    images = args[1] if bound and len(args) > 1 else (args[0] if args else ())
                    counts["feature_calls"] += 1
                    counts["feature_rows"] += len(images)
                    counts["feature_output_shape"] = list(getattr(out, "shape", ()))
                    try:
                        features_out[0] = as_array(out)
                    except Exception:
                        features_out[0] = None
                    return out
                return counted_features
            wrap_method(feature_cls, job["feature_method"], make_counted)

        model_cls = getattr(module, job["model_class"], None)
        if isinstance(model_cls, type) and issubclass(model_cls, torch.nn.Module):
            forward, init = model_cls.forward, model_cls.__init__
            originals["forward"] = forward

            def counted_init(self, *args, **kwargs):
                counts["model_instances"] += 1
                init(self, *args, **kwargs)

            def counted_forward(self, x, *args, **kwargs):
                out = forward(self, x, *args, **kwargs)
                rows = int(x.shape[0]) if getattr(x, "ndim", 0) else 0
                if self.training:
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

    spec = importlib.util.spec_from_file_location("candidate", job["module_path"])
    candidate = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = candidate
    spec.loader.exec_module(candidate)
    instrument(candidate)
    entry = getattr(candidate, job["entry"], None)
    if not callable(entry):
        write_all(report_fd, {"missing_entry": True})
        return
    result = entry()
    sys.stdout.flush()
    write_all(report_fd, dict(counts, eval_checksum=round(eval_checksum[0], 6),
                              eval_predictions=eval_predictions[-job["keep_predictions"]:],
                              returned=result if isinstance(result, (int, float)) else None,
                              **model_evidence()))
    probes = job.get("probes")
    write_all(probe_fd, _probe(candidate, job, probes, originals) if probes else {})


def _probe(module, job, probes, originals):
    """Strict mode: each component on the grader's own inputs, through the candidate's
    unwrapped code (nothing here is counted as the pipeline's work)."""
    import numpy as np
    import torch

    out = {}

    def attempt(name, fn):
        try:
            value = fn()
            out[name] = np.asarray(value, dtype=np.float64).round(7).tolist()
        except Exception as exc:  # reported as that component's failure
            out[name + "_error"] = f"{type(exc).__name__}: {exc}"[:300]

    images = np.random.RandomState(probes["seed"]).rand(probes["rows"], 28, 28).astype(
        np.float32)
    feature_cls = getattr(module, job["feature_class"], None)
    kind, method = originals.get(job["feature_method"], (None, None))

    def features():
        if method is None:
            raise AttributeError(f"{job['feature_class']}.{job['feature_method']} is missing")
        if kind == "plain":
            return method(feature_cls(), images)
        return method(images)

    attempt("features", features)
    model_cls = getattr(module, job["model_class"], None)
    forward = originals.get("forward")
    torch.manual_seed(probes["seed"])

    def model():
        net = model_cls(input_size=probes["n_features"], hidden_size=probes["hidden"],
                        num_classes=probes["n_classes"])
        weights = {k: torch.tensor(v, dtype=torch.float32)
                   for k, v in probes["weights"].items()}
        missing = net.load_state_dict(weights, strict=False).missing_keys
        if [k for k in weights if k in missing]:
            raise KeyError(f"the model has no {', '.join(k for k in weights if k in missing)}")
        net.eval()
        with torch.no_grad():
            return forward(net, torch.tensor(probes["model_inputs"], dtype=torch.float32))

    attempt("logits", model)

    def activation():
        net = model_cls(input_size=probes["n_features"], hidden_size=probes["hidden"],
                        num_classes=probes["n_classes"])
        act = getattr(net, "activation", None)
        if not callable(act):
            raise AttributeError("the model has no `activation` module")
        with torch.no_grad():
            return act(torch.tensor(probes["activation_inputs"], dtype=torch.float32))

    attempt("activation", activation)
    return out


_run()
