"""The execution's report at the trust boundary (``problems/ml_training/execution_report.py``).

What the runner writes is the candidate's to forge: every malformed field must end as a
MalformedReport naming it, an execution that sends one must fail naming it, and a
grading of a candidate that forges one must end with a failed check, never an exception.
The runner's real report is pinned to the record's fields by running a small real
candidate that exercises every probe kind.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import fields

import numpy as np
import pytest
from candidates.variants import EVAL, HONEST, apply_edits, scaled_text
from conftest import model_evidence

import sandbox
from problems.ml_training import model_checks
from problems.ml_training import probes as probe_kinds
from problems.ml_training.declarations.complex_pipeline import complex_spec
from problems.ml_training.execution_report import (
    MAX_COMPONENTS,
    MAX_DIMS,
    MAX_ELEMENTS,
    MAX_FITS,
    MAX_NAME,
    MAX_PARAMS,
    MAX_PREDICTIONS,
    MAX_TEXT,
    ExecutionReport,
    MalformedReport,
    PackedArray,
    ProbeOutputs,
    WeightSegment,
    loads,
    pack,
    parse_probes,
    parse_report,
)
from problems.ml_training.fresh_inputs import make_dataset, probe_job
from problems.ml_training.spec import GradingOptions
from problems.ml_training.task import MLTrainingTask
from problems.ml_training.timing import executor as measurement
from problems.ml_training.timing.cache import BaselineCache, CachedMeasurement
from problems.ml_training.timing.executor import Instrumentation, execute

FIELDS = {f.name for f in fields(ExecutionReport)}


def nested(depth: int, leaf: object = 1) -> object:
    """``leaf`` inside ``depth`` lists (built without recursion, as JSON would give it)."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


# A report with every field the runner writes set to something.
FULL = ExecutionReport(
    feature_calls=1, feature_rows=6, feature_output_shape=(6, 13), model_instances=1,
    train_rows=24, eval_rows=4, data_calls=1, train_batches={8: 3}, fit_calls=1, fit_rows=4,
    fit_params=({"n_estimators": 100, "bootstrap": True, "max_depth": None, "tol": 0.5,
                 "criterion": "gini"}, None),
    estimator_replaced=("RandomForestClassifier.fit",), eval_checksum=-1.25,
    eval_predictions=(2, 7, 1, 9), returned=0.25, model_probe_rows="ab" * 32,
    model_probe_votes=PackedArray.of(np.full((4, 2), 0.5)), model_probe_error="none",
).to_json() | model_evidence([3, 1, 4, 0], [2, 7, 1, 9], 6)


def test_a_full_report_survives_its_json_round_trip():
    report = parse_report(json.loads(json.dumps(FULL)))
    assert set(FULL) == FIELDS
    assert report.to_json() == FULL
    assert report.train_batches == {8: 3} and report.fit_params[1] is None
    assert report.eval_inputs.shape == (4, 13) and report.eval_weights[0].rows == 4
    assert report.features == PackedArray.of(report.features.array())


def test_the_empty_report_parses_and_optional_fields_may_be_absent():
    empty = ExecutionReport().to_json()
    assert parse_report(empty) == ExecutionReport()
    # what the runner writes for a pipeline with no estimator and no torch model
    bare = {k: v for k, v in empty.items()
            if k not in ("estimator_replaced", "features", "eval_inputs", "eval_weights",
                         "model_probe_rows", "model_probe_votes", "model_probe_error")}
    assert parse_report(bare) == ExecutionReport()


def test_every_field_has_a_reader():
    from problems.ml_training.execution_report import _READERS

    assert set(_READERS) == FIELDS


GOOD_ARRAY = pack(np.zeros((2, 3)))  # 6 float32 values: 24 bytes, 32 base64 characters


def bad(field: str, fragment: str, *, drop: str = "", **changes: object):
    """A case: FULL with ``changes``, without ``drop``; the field named, and why."""
    raw = {k: v for k, v in (FULL | changes).items() if k != drop}
    return pytest.param(raw, field, fragment, id=f"{field}-{fragment}"[:60])


MALFORMED = [
    # type confusion: what a forger writes, and what a hostile candidate once did
    bad("feature_rows", "expected a non-negative int, got str", feature_rows="many"),
    bad("train_rows", "got float", train_rows=240.0),
    bad("model_probe_rows", "expected a sha256 digest", model_probe_rows="../x"),
    bad("model_probe_votes.shape", "expected 2 dimensions",
        model_probe_votes=pack(np.zeros(3))),
    bad("model_instances", "got null", model_instances=None),
    bad("train_batches", "expected an object, got list", train_batches=[[8, 30]]),
    bad("fit_params[0]", "expected an object, got int", fit_params=[5]),
    bad("fit_params[0]['n']", "expected a plain value, got list", fit_params=[{"n": [1]}]),
    bad("eval_predictions", "expected a list, got str", eval_predictions="2719"),
    bad("estimator_replaced[0]", "expected a string, got int", estimator_replaced=[3]),
    bad("feature_output_shape[1]", "got str", feature_output_shape=[6, "13"]),
    bad("eval_checksum", "expected a finite number, got str", eval_checksum="1.5"),
    bad("eval_weights[0]", "expected an object, got list", eval_weights=[[4, {}]]),
    # a bool is not an int (nor a float)
    bad("fit_calls", "got bool", fit_calls=True),
    bad("feature_widths_differ", "expected true or false, got int", feature_widths_differ=1),
    bad("eval_predictions[2]", "got bool", eval_predictions=[2, 7, False, 9]),
    bad("train_batches['8']", "got bool", train_batches={"8": True}),
    bad("returned", "got bool", returned=True),
    bad("eval_weights[0].rows", "got bool",
        eval_weights=[{"rows": True, "weights": {}}]),
    # out of range
    bad("eval_rows", "got -1", eval_rows=-1),
    bad("data_calls", "expected a non-negative int", data_calls=2**63),
    bad("eval_predictions[0]", "expected an int", eval_predictions=[2**70]),
    bad("fit_params[0]['random_state']", "expected an int",
        fit_params=[{"random_state": -(2**64)}]),
    bad("train_batches['-8']", "expected a batch size", train_batches={"-8": 30}),
    bad("train_batches['eight']", "expected a batch size", train_batches={"eight": 30}),
    bad("returned", "expected a finite number", returned=10**400),
    # NaN and infinities (json.loads reads NaN and Infinity)
    bad("eval_checksum", "got nan", eval_checksum=math.nan),
    bad("eval_checksum", "got inf", eval_checksum=math.inf),
    bad("returned", "got -inf", returned=-math.inf),
    bad("fit_params[0]['tol']", "got nan", fit_params=[{"tol": math.nan}]),
    # oversized
    bad("eval_predictions", f"more than {MAX_PREDICTIONS} entries",
        eval_predictions=[0] * (MAX_PREDICTIONS + 1)),
    bad("fit_params", f"more than {MAX_FITS} entries", fit_params=[{}] * (MAX_FITS + 1)),
    bad("fit_params[0]", f"more than {MAX_PARAMS} entries",
        fit_params=[{f"p{i}": i for i in range(MAX_PARAMS + 1)}]),
    bad("fit_params[0]['criterion']", f"longer than {MAX_TEXT}",
        fit_params=[{"criterion": "x" * (MAX_TEXT + 1)}]),
    bad("fit_params[0]['" + "k" * 40 + "...']", f"longer than {MAX_NAME}",
        fit_params=[{"k" * (MAX_NAME + 1): 1}]),
    bad("estimator_replaced[0]", f"longer than {MAX_NAME}",
        estimator_replaced=["x" * (MAX_NAME + 1)]),
    bad("feature_output_shape", f"more than {MAX_DIMS} entries",
        feature_output_shape=[1] * (MAX_DIMS + 1)),
    bad("features.shape", f"more than {MAX_ELEMENTS} elements",
        features={"shape": [MAX_ELEMENTS + 1], "b64": ""}),
    bad("features.shape", f"more than {MAX_ELEMENTS} elements",  # no overflow either
        features={"shape": [2**62, 2**62, 2**62], "b64": ""}),
    # keys the runner never writes, and keys it always writes
    bad("'verdict'", "not a field the runner writes", verdict="pass"),
    bad("'missing_entry'", "not a field the runner writes", missing_entry=True),
    bad("features.'dtype'", "not a field the runner writes",
        features={**GOOD_ARRAY, "dtype": "float64"}),
    bad("eval_weights[0].'device'", "not a field the runner writes",
        eval_weights=[{"rows": 4, "weights": {}, "device": "cpu"}]),
    bad("eval_checksum", "missing", drop="eval_checksum"),
    bad("features.b64", "missing", features={"shape": [2, 3]}),
    # packed arrays whose bytes do not fit their shape
    bad("features.b64", "do not encode 9 float32 values",
        features={"shape": [3, 3], "b64": GOOD_ARRAY["b64"]}),
    bad("features.b64", "not base64", features={"shape": [2, 3], "b64": "!" * 32}),
    bad("features.b64", "expected a string, got list",
        features={"shape": [2, 3], "b64": [GOOD_ARRAY["b64"]]}),
    bad("features.shape[0]", "got -2", features={"shape": [-2, -3], "b64": GOOD_ARRAY["b64"]}),
    bad("features.shape[0]", "got str", features={"shape": ["2", 3], "b64": GOOD_ARRAY["b64"]}),
    bad("eval_inputs.shape", "expected 2 dimensions, got 1",
        eval_inputs={"shape": [6], "b64": GOOD_ARRAY["b64"]}),
    bad("eval_weights[0].weights['fc1.weight'].b64", "do not encode",
        eval_weights=[{"rows": 4, "weights": {"fc1.weight": {"shape": [128],
                                                             "b64": GOOD_ARRAY["b64"]}}}]),
    # deeply nested junk, never walked into
    bad("feature_output_shape[0]", "got list", feature_output_shape=nested(100_000)),
    bad("fit_params[0]['n']", "got list", fit_params=[{"n": nested(100_000)}]),
    bad("eval_weights[0]", "got list", eval_weights=nested(100_000)),
    bad("train_batches['8']", "got list", train_batches={"8": nested(100_000)}),
    bad("features.shape[0]", "got list", features={"shape": nested(100_000), "b64": ""}),
]


@pytest.mark.parametrize(("raw", "field", "fragment"), MALFORMED)
def test_a_malformed_field_is_named(raw, field, fragment):
    with pytest.raises(MalformedReport) as caught:
        parse_report(raw)
    assert caught.value.field == field, caught.value
    assert fragment in caught.value.why, caught.value
    assert str(caught.value) == f"{field}: {caught.value.why}"


@pytest.mark.parametrize("raw", [None, [], "report", 3, nested(100_000)],
                         ids=["null", "list", "str", "int", "nested"])
def test_a_report_that_is_not_an_object_is_named(raw):
    with pytest.raises(MalformedReport, match="^report: expected an object"):
        parse_report(raw)


@pytest.mark.parametrize(("text", "why"), [
    ("[" * 100_000 + "]" * 100_000, "RecursionError"),  # deeper than the decoder goes
    ('{"feature_rows": ' + "9" * 5000 + "}", "ValueError"),  # past int's digit limit
    ('{"feature_rows": 1', "JSONDecodeError"),  # cut short
])
def test_text_that_is_not_json_is_named(text, why):
    with pytest.raises(MalformedReport) as caught:
        loads(text, "report")
    assert caught.value.field == "report" and why in caught.value.why


def test_no_text_is_no_report():
    assert loads("", "report") is None and loads("  ", "probes") is None


# ---- strict mode's probe outputs --------------------------------------------------------
def test_probe_outputs_parse_into_arrays_and_errors():
    parsed = parse_probes({"features": [[0.5, 1.0], [2, -3.0]], "logits": 1.5,
                           "activation_error": "KeyError: 'x'"})
    assert parsed.outputs["features"].shape == (2, 2)
    assert parsed.outputs["features"].dtype == np.float64
    assert not parsed.outputs["features"].flags.writeable
    assert parsed.outputs["logits"].shape == ()
    assert parsed.errors == {"activation": "KeyError: 'x'"}
    assert parse_probes({}).outputs == {}


@pytest.mark.parametrize(("raw", "field", "fragment"), [
    ([[1.0]], "probes", "expected an object, got list"),
    ({"features": "1.0"}, "probes['features']", "expected numbers, got str"),
    ({"features": [[1.0], [1.0, 2.0]]}, "probes['features']", "not a rectangular array"),
    ({"features": [[1.0], 2.0]}, "probes['features']", "not a rectangular array"),
    ({"features": [1.0, [2.0]]}, "probes['features']", "expected numbers, got list"),
    ({"features": [[True, 1.0]]}, "probes['features']", "expected numbers, got bool"),
    ({"features": [None]}, "probes['features']", "expected numbers, got null"),
    ({"features": [[math.nan]]}, "probes['features']", "expected finite numbers"),
    ({"logits": [math.inf]}, "probes['logits']", "expected finite numbers"),
    ({"logits": [10**400]}, "probes['logits']", "out of range"),
    ({"features": nested(100_000, 1.0)}, "probes['features']",
     f"more than {MAX_DIMS} dimensions"),
    ({"features": nested(MAX_DIMS + 1, 1.0)}, "probes['features']", "dimensions"),
    ({"features_error": 3}, "probes['features_error']", "expected a string, got int"),
    ({"features_error": "x" * (MAX_TEXT + 1)}, "probes['features_error']", "longer than"),
    ({f"c{i}": 1.0 for i in range(MAX_COMPONENTS + 1)}, "probes",
     f"more than {MAX_COMPONENTS} entries"),
    ({"x" * (MAX_NAME + 1): 1.0}, "probes['" + "x" * 40 + "...']", "longer than"),
], ids=lambda v: None if isinstance(v, (dict, list)) else str(v)[:30])
def test_malformed_probe_outputs_are_named(raw, field, fragment):
    with pytest.raises(MalformedReport) as caught:
        parse_probes(raw)
    assert caught.value.field == field, caught.value
    assert fragment in caught.value.why, caught.value


def test_probe_arrays_are_bounded_before_they_are_built():
    # a list of lists is walked level by level: the element count is checked before
    # the next level is made
    wide = [[0.0] * 4000] * 4000  # 16M elements, 4000 distinct references
    with pytest.raises(MalformedReport, match=f"more than {MAX_ELEMENTS} elements"):
        parse_probes({"features": wide})


# ---- the harness's side: a malformed report fails the execution, naming the field ------
def marks_with(report: str, probes: str = "{}") -> dict[str, tuple[float, str]]:
    """The control marks of an execution that exited 0 after 0.5 s and sent these."""
    return {"START": (0.0, ""), "END": (0.5, "0.5"), "EXIT": (0.6, "0"),
            "REPORT": (0.6, report), "PROBES": (0.6, probes),
            "OUTPUT": (0.6, json.dumps({"stdout": "", "stderr": "", "truncated": False}))}


@pytest.fixture
def executor(tmp_path) -> measurement.Executor:
    """An executor that is never started: only its reading of marks is used."""
    path = tmp_path / "candidate.py"
    path.write_text("def run():\n    return 0\n")
    return measurement.Executor(path, Instrumentation(entry="run"), threads=1,
                                limits=sandbox.Limits(timeout=10))


def read(executor: measurement.Executor, marks) -> measurement.Execution:
    return executor.execution_of(marks, None, False, 10.0, 0.6, None)


@pytest.mark.parametrize(("report", "probes", "error"), [
    (json.dumps(dict(FULL, feature_rows="many")), "{}",
     "the program's report is malformed (feature_rows: expected a non-negative int, got str)"),
    (json.dumps(dict(FULL, eval_checksum=math.nan)), "{}",
     "the program's report is malformed (eval_checksum: expected a finite number, got nan)"),
    (json.dumps(FULL), '{"features": [[1.0], [1.0, 2.0]]}',
     "the program's report is malformed (probes['features']: not a rectangular array"),
    ("[" * 100_000, "{}", "the program's report is malformed (report: not JSON"),
    ("[]", "{}", "the program's report is malformed (report: expected an object, got list)"),
    ('{"missing_entry": true}', "{}", "the entry function run() is not defined"),
    ('{"missing_entry": 1}', "{}", "the program's report is malformed ('missing_entry'"),
    ("", "", "the program exited before its entry function returned"),
], ids=["type", "nan", "probes", "deep", "list", "no_entry", "forged_no_entry", "none"])
def test_the_execution_fails_naming_the_field(executor, report, probes, error):
    execution = read(executor, marks_with(report, probes))
    assert not execution.ok and execution.time is None
    assert execution.error.startswith(error), execution.error
    assert execution.report is None


def test_a_well_formed_report_is_read_once_into_records(executor):
    execution = read(executor, marks_with(json.dumps(FULL), '{"logits": [[1.0, 2.0]]}'))
    assert execution.ok and execution.time == 0.5
    assert execution.report == parse_report(FULL)
    assert isinstance(execution.probes, ProbeOutputs)
    assert execution.probes.outputs["logits"].tolist() == [[1.0, 2.0]]


def test_the_checks_read_the_typed_record():
    report = parse_report(FULL)
    check, mine = model_checks.model_outputs(report, model_checks.complex_nn_forward, "Net")
    assert check.passed and mine == [2, 7, 1, 9]
    segment = report.eval_weights[0]
    assert isinstance(segment, WeightSegment) and set(segment.weights) >= {"fc1.weight"}


# ---- the runner's real report ----------------------------------------------------------
TINY = textwrap.dedent("""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression


    def generate_synthetic_data(n_samples=40):
        np.random.seed(42)
        torch.manual_seed(42)
        images = np.random.rand(n_samples, 28, 28).astype(np.float32)
        return images, np.random.randint(0, 10, size=n_samples)


    class Extractor:
        def extract(self, images):
            return np.stack([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 10)

        def forward(self, x):
            return self.fc(x)


    def run():
        images, labels = generate_synthetic_data()
        features = Extractor().extract(images).astype(np.float32)
        x, y = torch.from_numpy(features), torch.from_numpy(labels.astype(np.int64))
        net = Net()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        for start in range(0, 32, 8):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[start:start + 8]),
                                              y[start:start + 8]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            net(x[32:])
        LogisticRegression().fit(features[:32], labels[:32]).predict(features[32:])
        return 0.5
""")
# Every kind of probe the runner knows, so that it writes every key it can.
TINY_PROBES = (
    probe_kinds.DataFunction(),
    probe_kinds.RowsThrough("Extractor", "extract", 40),
    probe_kinds.TorchModule("Net", train_rows=32, eval_rows=8, batches={8: 4},
                            forward=model_checks.complex_nn_forward, inputs=2,
                            weights={"fc.weight": (10, 2), "fc.bias": (10,)},
                            submodules={"missing": 2}),
    probe_kinds.Estimator("sklearn.linear_model", "LogisticRegression", 32, 8),
    probe_kinds.EvalPredictions("Net", 8),
)


async def test_the_runners_report_has_every_field_and_parses(tmp_path, monkeypatch):
    sent = []

    def spy(raw):
        sent.append(raw)
        return parse_report(raw)

    monkeypatch.setattr(measurement, "parse_report", spy)
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    inst = probe_kinds.instrumentation("run", TINY_PROBES)
    run = await execute(path, inst, threads=1, limits=sandbox.Limits(timeout=300),
                        data=make_dataset(7, 40).job(), timed=False,
                        probes=probe_job(3, TINY_PROBES[2], (28, 28)))
    assert run.ok, run.error + run.stderr_tail
    (raw,) = sent
    # every field written, and nothing else (the estimator answered the model probe; the
    # model's eval outputs are written only when every eval row has them, and here an
    # estimator's predict rows are among them)
    assert set(raw) == FIELDS - {"model_probe_error", "eval_logits"}
    report = run.report
    assert report.model_probe_votes.shape[0] == 256 and len(report.model_probe_rows) == 64
    assert report == parse_report(raw) and report.to_json() == raw
    assert (report.data_calls, report.feature_rows, report.feature_output_shape) == (
        1, 40, (40, 2))
    assert report.train_rows == 32 and report.train_batches == {8: 4}
    assert report.fit_calls == 1 and report.fit_params[0]["C"] == 1.0
    assert len(report.eval_predictions) == 8 and report.eval_inputs.shape == (8, 2)
    assert report.eval_weights and report.returned == 0.5
    assert run.probes.outputs["features"].shape == (64, 2)
    assert run.probes.outputs["logits"].shape == (64, 10)
    assert "no `missing` module" in run.probes.errors["missing"]


async def run_tiny(tmp_path, name: str, *edits: tuple[str, str]) -> ExecutionReport:
    path = tmp_path / f"{name}.py"
    path.write_text(apply_edits(TINY, list(edits), name))
    run = await execute(path, probe_kinds.instrumentation("run", TINY_PROBES), threads=1,
                        limits=sandbox.Limits(timeout=300), data=make_dataset(7, 40).job(),
                        timed=False)
    assert run.ok, run.error + run.stderr_tail
    return run.report


ONE_CALL = "features = Extractor().extract(images).astype(np.float32)"
IN_PIECES = {  # how the pipeline calls each component: the evidence is the same
    "chunked": [
        (ONE_CALL, "features = np.concatenate([Extractor().extract(part) for part in "
                   "np.array_split(images, 4)]).astype(np.float32)"),
        ("        net(x[32:])\n", "        net(x[32:35])\n        net(x[35:])\n"),
        ("LogisticRegression().fit(features[:32], labels[:32]).predict(features[32:])",
         "fitted = LogisticRegression().fit(features[:32], labels[:32])\n"
         "    fitted.predict(features[32:37])\n    fitted.predict(features[37:])"),
    ],
    # called twice on every image: the last call's rows are the features
    "twice": [(ONE_CALL, ONE_CALL + "\n    Extractor().extract(images)")],
}


@pytest.mark.parametrize("name", IN_PIECES)
async def test_every_call_is_evidence_whatever_the_chunking(tmp_path, name):
    whole = await run_tiny(tmp_path, "whole")
    pieces = await run_tiny(tmp_path, name, *IN_PIECES[name])
    assert pieces.features == whole.features and pieces.features.shape == (40, 2)
    assert pieces.eval_inputs == whole.eval_inputs
    assert pieces.eval_predictions == whole.eval_predictions
    assert [s.rows for s in pieces.eval_weights] == [s.rows for s in whole.eval_weights]
    assert not pieces.feature_widths_differ
    if name == "chunked":
        assert (pieces.feature_calls, pieces.feature_output_shape) == (4, (40, 2))
    else:
        assert (pieces.feature_rows, pieces.feature_output_shape) == (80, (80, 2))


async def test_outputs_of_different_widths_are_reported_not_joined(tmp_path):
    report = await run_tiny(
        tmp_path, "mixed",
        ("    def extract(self, images):\n",
         "    def extract(self, images, extra=False):\n"
         "        if extra:\n"
         "            return np.zeros((len(images), 3))\n"),
        (ONE_CALL, ONE_CALL + "\n    Extractor().extract(images[:5], extra=True)"))
    assert report.feature_widths_differ and report.features is None
    assert report.feature_output_shape is None
    check = model_checks.inputs_are_features(report, list(range(32, 40)), "Extractor.extract",
                                             "Net")
    assert not check.passed and "returned rows of different widths" in check.message


# ---- a candidate that forges its report --------------------------------------------------
# Each runs in the runner's own process, so each can reach the report before it is sent.
FORGERIES = {
    # the runner's counters, found through gc and set to what no counter holds
    "counters": ("import gc\n"
                 "for obj in gc.get_objects():\n"
                 "    if isinstance(obj, dict) and 'train_batches' in obj and 'eval_rows' in obj:\n"
                 "        obj['feature_rows'] = 'many'\n",
                 "feature_rows: expected a non-negative int, got str"),
    # json.dumps replaced: every payload the runner writes gets a verdict of its own
    "json_dumps": ("import json\n"
                   "_dumps = json.dumps\n"
                   "json.dumps = lambda payload, *a, **k: _dumps({**payload, 'verdict': 'pass'},"
                   " *a, **k)\n",
                   "'verdict': not a field the runner writes"),
}


@pytest.mark.parametrize("name", FORGERIES)
async def test_an_execution_that_forges_its_report_fails_naming_the_field(tmp_path, name):
    forge, named = FORGERIES[name]
    path = tmp_path / "forger.py"
    path.write_text("def run():\n" + textwrap.indent(forge, "    ") + "    return 0.5\n")
    run = await execute(path, Instrumentation(entry="run"), threads=1,
                        limits=sandbox.Limits(timeout=120), timed=False)
    assert not run.ok and run.report is None
    assert run.error == f"the program's report is malformed ({named})", run.error


N_SAMPLES = 100
OPTIONS = GradingOptions(repeats=1, baseline_repeats=1, target=2.0, min_timed_seconds=0)


async def test_grading_a_forged_report_fails_runs_cleanly(tmp_path, small_pipelines):
    # The baseline's figures are made up (seeded into the cache, keyed as the grader keys
    # them): nothing asserted here depends on them, and no baseline is measured.
    spec = complex_spec(small_pipelines["baseline"], N_SAMPLES,
                        reference=small_pipelines["reference"])
    cache = BaselineCache(tmp_path / "cache")
    key = cache.key(spec.baseline, threads=OPTIONS.threads, label="baseline",
                    anchor=spec.reference)
    cache.store(CachedMeasurement(times=[100.0], accuracy=0.1, key=key, units=[100.0],
                                  anchor_times=[1.0, 1.0], oracle_agreement=[1.0]))
    forge = textwrap.indent(FORGERIES["counters"][0], "    ")
    source = apply_edits(HONEST.read_text(), [(EVAL, forge + EVAL)], "forged_report")
    path = tmp_path / "candidate.py"
    path.write_text(scaled_text(source, N_SAMPLES, "forged_report"))
    problem = MLTrainingTask(spec, OPTIONS, cache=cache)
    result = await problem.grade(path)
    assert problem.baseline_executions == 0
    assert not result.passed
    assert result.failed_checks == ["runs_cleanly"], result.reason
    assert result.reason.startswith("runs_cleanly: the program's report is malformed "
                                    "(feature_rows: expected a non-negative int, got str)")
    assert result.details["skipped_after_crash"] and result.details["report"] is None
