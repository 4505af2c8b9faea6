"""The strategy analysis's program: each declared component of one pipeline file, called
on the harness's inputs and timed, inside a sandbox.

The harness (``problems.ml_training.strategy``) passes this file's source with
``python -P -c``, and one JSON job on stdin: the file (base64), the components to call
(a method of the feature class, a submodule, the model's forward or a few training
steps), the inputs' seed and strict mode's probe inputs (``fresh_inputs.probe_job``).
It imports the file as a module (never calling its entry function), then calls each
component a few times on copies of the same inputs, each call under an alarm, and writes
one ``COMPONENT`` line per component on the control channel (fd 3) as soon as it is
done, so a run that is stopped still reports what it finished: the best time, the output
(float32, packed as the runner packs probes) or the error, and which scikit-learn
scalers the call used.  Everything it writes is the candidate's to forge (it runs in
the same process): the harness parses it at the boundary and uses it for advice only.
It imports nothing of the harness.
"""


def _main():
    import base64
    import importlib.util
    import inspect
    import json
    import os
    import signal
    import sys
    import time

    import numpy as np

    perf = time.perf_counter  # taken before any candidate code exists
    job = json.loads(sys.stdin.read())
    control = 3
    max_elements = 2_000_000

    def send(kind, payload):
        data = (kind + " " + json.dumps(payload) + "\n").encode()
        while data:
            data = data[os.write(control, data):]

    def pack(array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}

    def unpack(packed):
        return np.frombuffer(base64.b64decode(packed["b64"]),
                             dtype=np.float32).reshape(packed["shape"]).copy()

    torch = None
    if job["torch"]:
        import torch

        torch.set_num_threads(job["threads"])
    source = base64.b64decode(job["source"])
    used = []  # the scikit-learn scalers called during the current component
    if b"sklearn" in source:
        import sklearn.preprocessing as preprocessing

        for name in ("StandardScaler", "MinMaxScaler", "RobustScaler", "MaxAbsScaler",
                     "Normalizer"):
            scaler = getattr(preprocessing, name, None)
            for method in ("fit", "transform", "fit_transform"):
                inner = getattr(scaler, method, None)
                if inner is None:
                    continue

                def noted(self, *args, _inner=inner, _name=name, **kwargs):
                    used.append(_name)
                    return _inner(self, *args, **kwargs)
                setattr(scaler, method, noted)

    class Overtime(BaseException):
        """Raised by the alarm: not an Exception, so a bare ``except Exception`` in the
        component does not swallow it."""

    def alarm(signum, frame):
        raise Overtime()

    signal.signal(signal.SIGALRM, alarm)
    workdir = job["workdir"]
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    sys.path.insert(0, workdir)
    with open(os.path.join(workdir, "candidate.py"), "wb") as f:
        f.write(source)
    try:
        signal.setitimer(signal.ITIMER_REAL, job["call_limit"])
        spec = importlib.util.spec_from_file_location("candidate", "candidate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["candidate"] = module
        spec.loader.exec_module(module)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:  # the file itself: the whole analysis fails
        signal.setitimer(signal.ITIMER_REAL, 0)
        why = "it took too long" if isinstance(exc, Overtime) else f"{type(exc).__name__}: {exc}"
        send("LOADED", {"error": f"the file could not be imported ({why})"[:300]})
        return
    send("LOADED", {"error": ""})

    probes = job["probes"]
    images = np.random.RandomState(job["seed"]).rand(
        job["n_images"], *probes["image_shape"]).astype(np.float32)
    given = {"images": images}
    if job.get("normalisation_input") is not None:
        given["normalisation"] = unpack(job["normalisation_input"])
    if torch is not None and "model_inputs" in probes:
        given["model_inputs"] = np.asarray(probes["model_inputs"], dtype=np.float32)
        for name, rows in probes.get("submodules", {}).items():
            given["submodule:" + name] = np.asarray(rows, dtype=np.float32)

    def as_array(value):
        if torch is not None and isinstance(value, torch.Tensor):
            value = value.detach().cpu().double().numpy()
        array = np.asarray(value, dtype=np.float64)
        if array.size > max_elements:
            raise ValueError(f"an output of {array.size} values")
        return array

    def method_call(component, data):
        """The feature class's method on ``data``, however it is defined."""
        cls = getattr(module, component["class"], None)
        if not isinstance(cls, type):
            raise AttributeError(f"the file has no class {component['class']}")
        raw = inspect.getattr_static(cls, component["method"], None)
        if raw is None:
            raise AttributeError(f"{component['class']} has no {component['method']}")
        if isinstance(raw, (staticmethod, classmethod)):
            bound = getattr(cls, component["method"])
        else:
            bound = getattr(cls(), component["method"])
        return lambda: bound(data)

    def model(component, train):
        """The model class with the probe weights loaded (its seed drawn first, so
        its dropout draws are the same for every file)."""
        torch.manual_seed(job["seed"])
        cls = getattr(module, component["class"], None)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise AttributeError(f"the file has no torch module {component['class']}")
        net = cls(**probes["init"])
        weights = {k: torch.tensor(v, dtype=torch.float32)
                   for k, v in probes["weights"].items()}
        missing = net.load_state_dict(weights, strict=False).missing_keys
        if [k for k in weights if k in missing]:
            raise KeyError(f"the model has no {', '.join(k for k in weights if k in missing)}")
        net.train(train)
        return net

    def prepared(component):
        """The call to time (its set-up done) and what to return after it."""
        kind = component["kind"]
        if kind == "method":
            data = given.get(component["input"])
            if data is None:
                raise ValueError("the original gave no input for it")
            call = method_call(component, data.copy())
            return call, None
        if kind == "submodule":
            part = getattr(model(component, False), component["part"], None)
            if not callable(part):
                raise AttributeError(f"the model has no `{component['part']}` module")
            x = torch.from_numpy(given["submodule:" + component["part"]].copy())

            def run_part():
                with torch.no_grad():
                    return part(x)
            return run_part, None
        if kind == "forward":
            net = model(component, False)
            x = torch.from_numpy(given["model_inputs"].copy())

            def run_forward():
                with torch.no_grad():
                    return net(x)
            return run_forward, None
        # "train": a few optimisation steps of the original's batch size, with torch's
        # own loss and Adam; the output is the model's eval logits afterwards.
        net = model(component, True)
        x = torch.from_numpy(given["model_inputs"].copy())
        y = torch.from_numpy(np.random.RandomState(job["seed"]).randint(
            0, probes["init"]["num_classes"], size=len(x)))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss = torch.nn.CrossEntropyLoss()
        batch, steps = component["batch"], component["steps"]

        def run_steps():
            for step in range(steps):
                rows = slice((step * batch) % len(x), (step * batch) % len(x) + batch)
                optimizer.zero_grad()
                loss(net(x[rows]), y[rows]).backward()
                optimizer.step()

        def after():
            net.eval()
            with torch.no_grad():
                return net(x)
        return run_steps, after

    def capture(component):
        """For the original: wrap its normalisation to keep what it is given."""
        name = component.get("capture")
        cls = getattr(module, component["class"], None)
        if not name or "normalisation" in given or not isinstance(cls, type):
            return None
        raw = inspect.getattr_static(cls, name, None)
        if not inspect.isfunction(raw):
            return None
        kept = []

        def keeping(self, features, *args, **kwargs):
            kept.append(as_array(features))
            return raw(self, features, *args, **kwargs)
        setattr(cls, name, keeping)
        return lambda: (setattr(cls, name, raw), kept[-1] if kept else None)[1]

    for component in job["components"]:
        result = {"name": component["name"], "seconds": [], "output": None, "error": "",
                  "scalers": [], "captured": None}
        undo = capture(component)
        spent, limit = 0.0, component.get("limit") or job["call_limit"]
        try:
            for _ in range(job["repeats"]):
                call, after = prepared(component)
                del used[:]
                signal.setitimer(signal.ITIMER_REAL, limit)
                started = perf()
                out = call()
                elapsed = perf() - started
                signal.setitimer(signal.ITIMER_REAL, 0)
                result["seconds"].append(elapsed / component.get("steps", 1))
                result["scalers"] = sorted(set(used))
                if result["output"] is None:
                    result["output"] = pack(as_array(after() if after else out))
                spent += elapsed
                if spent >= job["budget"]:
                    break
        except BaseException as exc:  # a later repeat's failure spoils none of the first
            signal.setitimer(signal.ITIMER_REAL, 0)
            if result["output"] is None:
                result["seconds"] = []
                result["error"] = ("it took longer than the limit of "
                                   f"{limit:.0f} s" if isinstance(exc, Overtime)
                                   else f"{type(exc).__name__}: {exc}")[:300]
        if undo is not None:
            kept = undo()
            if kept is not None:
                result["captured"] = pack(kept)
                given.setdefault("normalisation", kept.astype(np.float32))
        send("COMPONENT", result)
    send("DONE", {})


_main()
