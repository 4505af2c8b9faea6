"""The grader's side of one timed execution, run inside the sandboxed child process.

The harness passes this file's source with ``python -c`` (so the child needs no access
to the harness's files) and a JSON job on stdin.  Two processes take part:

- the **timer** reads the job, imports numpy and torch (not timed, as in the seed's
  FINAL_TIME), fixes the thread count, makes itself non-dumpable (so a process of the
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

    job = json.loads(sys.stdin.readline())
    sys.stdin.close()
    control = job["control_fd"]

    def send(text):
        os.write(control, (text + "\n").encode())

    import numpy  # noqa: F401  (imported before the timed region on purpose)
    import torch
    import torch._dynamo  # noqa: F401  (optimizers import it lazily: not the candidate's cost)
    import torch.nn
    import torch.nn.functional  # noqa: F401
    import torch.optim  # noqa: F401
    import torch.utils.data  # noqa: F401

    torch.set_num_threads(job["threads"])
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_dumpable = 4
    libc.prctl(pr_set_dumpable, 0, 0, 0, 0)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    send("START")
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(control)
        os.close(read_end)
        libc.prctl(pr_set_dumpable, 1, 0, 0, 0)
        status = 1
        try:
            _execute(job, write_end)
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
    chunks = []
    while data := os.read(read_end, 1 << 20):
        chunks.append(data)
    _, wait_status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    send(f"END {elapsed!r} {os.waitstatus_to_exitcode(wait_status)}")
    if job["own_pid_namespace"]:
        try:
            os.kill(-1, signal.SIGKILL)  # all the candidate left behind (never pid 1 or us)
        except ProcessLookupError:
            pass
    send("REPORT " + b"".join(chunks).decode("utf-8", "replace").replace("\n", " "))


def _execute(job, report_fd):
    import importlib.util
    import json
    import os
    import sys

    import torch

    counts = {"feature_calls": 0, "feature_rows": 0, "feature_output_shape": None,
              "model_instances": 0, "train_rows": 0, "eval_rows": 0}
    eval_predictions = []
    eval_checksum = [0.0]  # sum of eval-mode logits: differs whenever the weights differ

    def instrument(module):
        feature_cls = getattr(module, job["feature_class"], None)
        method = getattr(feature_cls, job["feature_method"], None) if feature_cls else None
        if callable(method):
            def counted_features(self, images, *args, **kwargs):
                out = method(self, images, *args, **kwargs)
                counts["feature_calls"] += 1
                counts["feature_rows"] += len(images)
                counts["feature_output_shape"] = list(getattr(out, "shape", ()))
                return out
            setattr(feature_cls, job["feature_method"], counted_features)

        model_cls = getattr(module, job["model_class"], None)
        if isinstance(model_cls, type) and issubclass(model_cls, torch.nn.Module):
            forward, init = model_cls.forward, model_cls.__init__

            def counted_init(self, *args, **kwargs):
                counts["model_instances"] += 1
                init(self, *args, **kwargs)

            def counted_forward(self, x, *args, **kwargs):
                out = forward(self, x, *args, **kwargs)
                rows = int(x.shape[0]) if getattr(x, "ndim", 0) else 0
                if self.training:
                    if isinstance(out, torch.Tensor) and out.requires_grad:
                        # Counted when the gradient reaches the output: rows trained on.
                        def backpropagated(grad, rows=rows):
                            counts["train_rows"] += rows
                        out.register_hook(backpropagated)
                else:
                    counts["eval_rows"] += rows
                    eval_predictions.extend(out.detach().argmax(dim=-1).reshape(-1).tolist())
                    eval_checksum[0] += float(out.detach().double().sum())
                return out

            model_cls.__init__ = counted_init
            model_cls.forward = counted_forward

    spec = importlib.util.spec_from_file_location("candidate", job["module_path"])
    candidate = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = candidate
    spec.loader.exec_module(candidate)
    instrument(candidate)
    entry = getattr(candidate, job["entry"], None)
    if not callable(entry):
        report = {"missing_entry": True}
    else:
        result = entry()
        report = dict(counts, eval_checksum=round(eval_checksum[0], 6),
                      eval_predictions=eval_predictions[-job["keep_predictions"]:],
                      returned=result if isinstance(result, (int, float)) else None)
    sys.stdout.flush()
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(report_fd, data):]
    os.close(report_fd)


_run()
