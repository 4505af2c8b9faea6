"""The grader's side of one timed execution, run inside the sandboxed child process.

The harness passes this file's source with ``python -c`` (so the child needs no access
to the harness's files) and a JSON job on stdin.  The runner:

1. reads the job, then closes stdin; imports numpy and torch (their import, and the
   lazy imports any optimizer triggers, are not timed, as in the seed's FINAL_TIME) and
   fixes the thread count;
2. writes ``<nonce> START`` on a private copy of stdout.  The *harness* timestamps that
   line on arrival: the clock belongs to the parent process;
3. imports the candidate module (work done at import time is timed too), wraps the
   required methods to count the rows they process (training rows only when gradients
   flow back through them) and to record the model's eval-mode predictions, and calls
   the entry function;
4. writes ``<nonce> END``, then ``<nonce> REPORT {json}``.

Everything lives in function scope, so nothing is reachable as a global of
``__main__`` (the candidate cannot import it anyway: the static checks forbid it).
The harness takes the first START and the last END before REPORT, so a forged marker
cannot shorten the interval.  It decides nothing: figures are judged by the grader.
"""


def _run():
    import importlib.util
    import json
    import os
    import sys
    import time

    job = json.loads(sys.stdin.readline())
    sys.stdin.close()
    marker_fd = os.dup(1)
    nonce = job.pop("nonce")
    clock = time.perf_counter

    def mark(text):
        os.write(marker_fd, f"\n{nonce} {text}\n".encode())

    import numpy  # noqa: F401  (imported before the timed region on purpose)
    import torch
    import torch._dynamo  # noqa: F401  (optimizers import it lazily: not the candidate's cost)
    import torch.nn
    import torch.nn.functional  # noqa: F401
    import torch.optim  # noqa: F401
    import torch.utils.data  # noqa: F401

    torch.set_num_threads(job["threads"])
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

    mark("START")
    started = clock()
    spec = importlib.util.spec_from_file_location("candidate", job["module_path"])
    candidate = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = candidate
    spec.loader.exec_module(candidate)
    instrument(candidate)
    entry = getattr(candidate, job["entry"], None)
    if not callable(entry):
        mark("MISSING_ENTRY")
        sys.exit(3)
    result = entry()
    own_time = clock() - started
    mark("END")
    report = dict(counts, own_time=own_time, eval_checksum=round(eval_checksum[0], 6),
                  eval_predictions=eval_predictions[-job["keep_predictions"]:],
                  returned=result if isinstance(result, (int, float)) else None)
    mark("REPORT " + json.dumps(report))
    sys.stdout.flush()


_run()
