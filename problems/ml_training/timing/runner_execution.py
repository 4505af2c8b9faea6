"""The runner's second program: what runs in the execution process, inside the
candidate's reach.

The harness sends it to the sandbox before the timer (``runner_timer.py``), in one
source: the timer forks for each job and calls :func:`_execute` in the child, which
imports the candidate, wraps what the task's probes watch (derived from the
declaration by ``probes``), calls the entry function and writes its report.
Everything here can be forged by the candidate: the report is parsed at the boundary
(``execution_report``) and judged against what the harness knows.  It imports nothing
of the harness.
"""


def _execute(job, report_fd, probe_fd, resume_fd):
    """Import the candidate, wrap what the task's probes watch (``job["watch"]``, made
    by ``problems.ml_training.probes``), call the entry function and report what was seen;
    the probes run once the timer says so on ``resume_fd`` (after the harness has read
    the clock at END; or, bounded, ``job["probe_timeout"]`` after the report)."""
    import base64
    import importlib
    import importlib.util
    import inspect
    import json
    import os
    import select
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

    # The runner's own pipes (report, probes, the timer's word): never a forked child's.
    # A child that held the report pipe would hold back END until it exited, and one
    # that waits for this process to exit (a DataLoader worker) would wait forever.
    own_fds = {report_fd, probe_fd, resume_fd}

    def close_own_fds():
        for fd in own_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        own_fds.clear()

    os.register_at_fork(after_in_child=close_own_fds)

    def write_all(fd, payload):
        data = json.dumps(payload).encode()
        while data:
            data = data[os.write(fd, data):]
        own_fds.discard(fd)
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
    try:  # the timer's word that the harness has read the clock (or EOF); bounded, for
        # a child forked past os.fork's hooks that holds the report pipe (and so END)
        if select.select([resume_fd], [], [], job["probe_timeout"])[0]:
            os.read(resume_fd, 1)
    except (OSError, ValueError):
        pass
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
