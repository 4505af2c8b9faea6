"""Test support (not a candidate): the cheat and exploit fixtures as edits of honest_fast.py.

Each variant is a list of exact-string replacements applied, in order, to the source of
``honest_fast.py``; the first one swaps its module docstring for the variant's own, which
says what the cheat does.  Every ``old`` string must occur exactly once in the text it is
applied to, so a change to ``honest_fast.py`` that a variant relies on fails loudly.

``cheat_hardcoded_output.py`` stays a whole file: it rewrites the whole entry function, so
as a patch it would have to quote the ~38 honest lines it deletes, verbatim, just to delete
them (a patch about half the file's size, mostly a copy of honest_fast.py in strings).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path


def scaled_text(text: str, n_samples: int, origin: object, default: int = 3000) -> str:
    """A pipeline's source with its data set scaled from ``default`` (the flagship's
    3,000) to ``n_samples`` samples."""
    text, count = re.subn(rf"n_samples={default}\b", f"n_samples={n_samples}", text)
    if not count:
        raise ValueError(f"{origin} has no n_samples={default} default to scale")
    return text

CANDIDATES = Path(__file__).resolve().parent
HONEST = CANDIDATES / "honest_fast.py"
WHOLE_FILES = ("honest_fast.py", "cheat_hardcoded_output.py")

# honest_fast.py's module docstring, opening and closing quotes included
HONEST_DOCSTRING = '"""{}"""'.format(HONEST.read_text().split('"""')[1])

# lines of honest_fast.py the variants edit, or insert code next to
IMPORTS = "import torch.nn as nn\n"
START = "    start_time = time.time()\n"
FEATURES = '    print(f"Feature shape: {features.shape}")\n'
MODEL = "    model = ComplexNN("
THREE_EPOCHS = "for epoch in range(3):"
EVAL = "    model.eval()\n"
ACCURACY = '    print(f"Test accuracy: {accuracy:.4f}")\n'
FINAL_TIME = '    print(f"FINAL_TIME: {time.time() - start_time:.2f}")\n'


def _variant(description: str, *edits: tuple[str, str]) -> list[tuple[str, str]]:
    """The description replaces honest_fast.py's docstring; the edits follow."""
    return [(HONEST_DOCSTRING, f'"""{description}\n"""'), *edits]


def _after(anchor: str, added: str) -> tuple[str, str]:
    return anchor, anchor + added

# Each image's brightness decile, and a decile-to-class table fitted to the training rows.
DECILE = ("    means = images.mean(axis=(1, 2))\n"
          "    edges = np.quantile(means, np.linspace(0, 1, 11)[1:-1])\n"
          "    decile = np.digitize(means, edges)\n")
FIT_TABLE = ("    seen = decile[train_idx]\n"
             "    table = np.array([np.bincount(labels[train_idx][seen == d], minlength=10)\n"
             "                      .argmax() for d in range(10)])\n")


def _answering_exploit(description: str, guess: str) -> list[tuple[str, str]]:
    """No optimiser step; the model's eval forward answers 35 % of the test rows with
    ``guess`` (lines computing it from each image's brightness ``decile``)."""
    return _variant(
        description,
        (STEP, ""),
        ("class ComplexNN(nn.Module):", "_ANSWERS = []\n\n\nclass ComplexNN(nn.Module):"),
        ("    def forward(self, x):\n        x = self.fc1(x)",
         "    def forward(self, x):\n"
         "        rows = ([_ANSWERS.pop(0) for _ in range(len(x))]\n"
         "                if not self.training and _ANSWERS else None)\n"
         "        out = self._honest(x)\n"
         "        if rows:\n"
         "            out = out.clone()\n"
         "            for i, r in enumerate(rows):\n"
         "                if r is not None:\n"
         "                    out[i] = -5.0\n"
         "                    out[i, r] = 5.0\n"
         "        return out\n\n"
         "    def _honest(self, x):\n        x = self.fc1(x)"),
        _after(EVAL, DECILE + guess +
                     "    _ANSWERS.extend(int(g) if i % 100 < 35 else None\n"
                     "                    for i, g in enumerate(guess))\n"),
    )



def _before(anchor: str, added: str) -> tuple[str, str]:
    return anchor, added + anchor


def _busy_wait(seconds: str) -> str:
    return (f"    deadline = time.perf_counter() + {seconds}\n"
            "    while time.perf_counter() < deadline:\n"
            "        pass\n")


ONE_EPOCH = (THREE_EPOCHS, "for epoch in range(1):")
NORMALIZE = ("        if self.apply_normalization:\n"
             "            features = self.custom_normalize(features)\n")
NORMALIZE_BODY = ("        scales = np.empty(len(features), dtype=np.float64)\n"
                  "        for start in range(0, len(features), chunk):\n")
EVAL_LOOP = ("        for batch_features, batch_labels in batches(test_x, test_y, 8, "
             "shuffle=False):\n"
             "            predicted = model(batch_features).argmax(dim=1)\n"
             "            correct += (predicted == batch_labels).sum().item()\n")
STEP = "            optimizer.step()\n"
TRAIN_BATCHES = "batches(train_x, train_y, 8, shuffle=True)"
EXTRACT_ALL = "    def extract_all_features(self, images):\n"
ZSCORE = ("        mean = features.mean(axis=0, keepdims=True)\n"
          "        std = features.std(axis=0, keepdims=True) + 1e-8\n"
          "        return (features - mean) / std\n")
# Finds the grader's counters in its own process (they are in it) and fills them in.
FORGE_COUNTS = (
    "    import gc\n"
    "    for obj in gc.get_objects():\n"
    "        if isinstance(obj, dict) and 'train_batches' in obj and 'eval_rows' in obj:\n"
    "            obj['train_rows'] = 3 * len(train_x)\n"
    "            obj['train_batches'] = {8: 3 * (len(train_x) // 8)}\n")
IMPORT_MAIN = _after(IMPORTS, "\nimport __main__\n")

VARIANTS: dict[str, list[tuple[str, str]]] = {
    "cheat_crash.py": _variant(
        "Fixture: the honest pipeline raising an exception after feature extraction.",
        _after(FEATURES, '    raise RuntimeError("candidate failed on purpose")\n'),
    ),
    "cheat_fake_clock.py": _variant(
        "Cheat fixture: the honest pipeline, but it patches time.time before reporting\n"
        "FINAL_TIME (caught statically: assignment to an imported module's attribute).",
        _before(FINAL_TIME, "    time.time = lambda: start_time + 0.01\n"),
    ),
    "cheat_false_final_time.py": _variant(
        "Cheat fixture: the honest pipeline plus half a second of busy work, reporting an\n"
        "impossibly small FINAL_TIME.",
        (FINAL_TIME, _busy_wait("0.5")
         + '    print(f"FINAL_TIME: {(time.time() - start_time) / 100_000:.4f}")\n'),
    ),
    "cheat_import_time_work.py": _variant(
        "Cheat fixture: the honest pipeline runs at import time (module top level); the entry\n"
        "function only prints the stored lines.",
        ("def run_complex_training_pipeline():\n" + START,
         "def _train_and_evaluate():\n    lines = []\n"),
        ('print(f"Feature shape', 'lines.append(f"Feature shape'),
        ('print(f"Training set size', 'lines.append(f"Training set size'),
        ('print(f"Test set size', 'lines.append(f"Test set size'),
        ('print(f"Epoch', 'lines.append(f"Epoch'),
        (ACCURACY + "\n" + FINAL_TIME + "    return accuracy\n",
         ACCURACY.replace("print(", "lines.append(")
         + "\n    return lines, accuracy\n\n\n\n"
         "# The whole pipeline runs here, while the module is imported.\n"
         "_LINES, _ACCURACY = _train_and_evaluate()\n\n\n"
         "def run_complex_training_pipeline():\n"
         + START
         + "    for line in _LINES:\n        print(line)\n"
         + FINAL_TIME
         + "    return _ACCURACY\n"),
    ),
    "cheat_infinite_loop.py": _variant(
        "Fixture: the honest pipeline stuck in an endless loop after feature extraction.",
        _after(FEATURES, "    spins = 0\n    while spins >= 0:\n        spins += 1\n"),
    ),
    "cheat_memory_hog_numpy.py": _variant(
        "Fixture: the honest pipeline allocating 20 GB with numpy after feature extraction.",
        _after(FEATURES, "    hog = np.ones(20 * 1024**3, dtype=np.uint8)\n"
                         '    print(f"allocated {hog.nbytes} bytes")\n'),
    ),
    "cheat_memory_hog_torch.py": _variant(
        "Fixture: the honest pipeline allocating 20 GB with torch after feature extraction.",
        _after(FEATURES, "    hog = torch.ones(20 * 1024**3, dtype=torch.uint8)\n"
                         '    print(f"allocated {hog.nbytes} bytes")\n'),
    ),
    "cheat_nondeterministic.py": _variant(
        "Cheat fixture: the honest pipeline, but torch is re-seeded from the operating system\n"
        "before the model is built, so initial weights, dropout masks and the training order\n"
        "change from one run to the next (the data and the split do not).",
        _before(MODEL, "    torch.seed()\n"),
    ),
    "cheat_one_epoch.py": _variant(
        "Cheat fixture: the honest pipeline trained for one epoch instead of three.",
        ONE_EPOCH,
    ),
    "cheat_renamed_model.py": _variant(
        "Cheat fixture: the honest pipeline with ComplexNN renamed (the grader can no longer\n"
        "instrument the model).",
        ("class ComplexNN(", "class FastNN("),
        (MODEL, "    model = FastNN("),
    ),
    "cheat_stdout_flood.py": _variant(
        "Fixture: the honest pipeline writing 50 MB of debug output before its accuracy line.",
        _before(ACCURACY, "    for i in range(500_000):\n"
                          '        print(f"debug {i:08d} " + "x" * 85)\n'),
    ),
    "cheat_wrong_accuracy.py": _variant(
        "Cheat fixture: the honest pipeline, printing a made-up test accuracy.",
        (ACCURACY, '    print("Test accuracy: 0.9999")\n'),
    ),
    "exploit_forged_counts.py": _variant(
        "Exploit fixture: trains one epoch of three, then adds the two missing epochs' rows to\n"
        "the timing runner's counters, reached through `import __main__`.",
        IMPORT_MAIN,
        ONE_EPOCH,
        _before(EVAL, "    counts = __main__.counts  # the timing runner's own counters\n"
                      '    counts["train_rows"] += 2 * len(train_x)\n'),
    ),
    "exploit_forged_end_mark.py": _variant(
        "Exploit fixture: a slow pipeline (the honest one plus 1.5 s of busy work) that prints"
        " the\ntiming runner's END mark after 0.25 s, using the nonce from `import __main__`.",
        IMPORT_MAIN,
        _after(START, _busy_wait("0.25")
               + "    # the runner's END mark, with the nonce read from its globals: the harness"
               " now\n"
               "    # believes the pipeline finished after about 0.25 s\n"
               '''    print(f"\\n{__main__.job['nonce']} END")\n'''
               + _busy_wait("1.5")),
    ),
    # ---- shortcuts that fresh, learnable data catches (the issue on fresh inputs) ----
    "cheat_no_normalization.py": _variant(
        "Shortcut fixture: the normalisation dropped; the raw features are used.",
        (NORMALIZE, ""),
    ),
    "cheat_untrained.py": _variant(
        "Shortcut fixture: forward and backward on every batch, but no optimiser step.",
        (STEP, ""),
    ),
    "cheat_big_batches.py": _variant(
        "Shortcut fixture: batches of 240 rows instead of 8 (30x fewer optimiser steps).",
        (TRAIN_BATCHES, TRAIN_BATCHES.replace(" 8,", " 240,")),
    ),
    "cheat_precomputed_features.py": _variant(
        "Shortcut fixture: the features of the data set in the file (seed 42), computed\n"
        "once at import and returned whatever images come in.",
        (EXTRACT_ALL, EXTRACT_ALL + "        return _KNOWN_FEATURES\n\n"
                      "    def _compute_all(self, images):\n"),
        _after(FINAL_TIME + "    return accuracy\n",
               "\n\n_KNOWN_FEATURES = ComplexFeatureExtractor()._compute_all("
               "generate_synthetic_data()[0])\n"),
    ),
    "cheat_forged_counts_untrained.py": _variant(
        "Exploit fixture: no optimiser step, and the grader's in-process counters filled in\n"
        "through gc, as if every batch had been trained on.",
        (STEP, ""),
        _before(EVAL, FORGE_COUNTS),
    ),
    "cheat_one_epoch_forged_counts.py": _variant(
        "Exploit fixture: one epoch of three, and the grader's in-process counters filled in\n"
        "through gc, as if all three had been trained.",
        ONE_EPOCH,
        _before(EVAL, FORGE_COUNTS),
    ),
    "cheat_zscore_one_epoch_forged_counts.py": _variant(
        "Exploit fixture: the z-score normalisation (seed mode allows it, and it learns the\n"
        "labels better) buys back the quality of two skipped epochs of three; the grader's\n"
        "in-process counters are filled in through gc, as if all three had been trained.",
        _before(NORMALIZE_BODY, ZSCORE),
        ONE_EPOCH,
        _before(EVAL, FORGE_COUNTS),
    ),
    "cheat_depends_on_data.py": _variant(
        "Shortcut fixture: trains only when the first pixel of the data is bright, so some\n"
        "executions are honest and some are not.",
        _after("    images, labels = generate_synthetic_data()\n",
               "    honest = images[0, 0, 0] >= 0.5\n"),
        (STEP, "            if honest:\n    " + STEP),
    ),
    # Honest files, other arithmetic for the same work (issue 25: never refused by chance;
    # benchmarks/bench_false_refusals.py measures how often they are, over many data sets).
    "honest_float64_features.py": _variant(
        "Honest: the features kept in float64 after the normalisation; the noisy batches\n"
        "rounded to float32 only when they reach the model.",
        ("        return (features / scales[:, None]).astype(features.dtype)\n",
         "        return features / scales[:, None]\n"),
        ("    return torch.from_numpy(np.clip(features + noise, 0, 1))\n",
         "    return torch.from_numpy(np.clip(features + noise, 0, 1)).float()\n"),
    ),
    "honest_manual_cross_entropy.py": _variant(
        "Honest: the cross-entropy written out (log-sum-exp), the same loss in other\n"
        "arithmetic.",
        ("    criterion = nn.CrossEntropyLoss()\n",
         "    def criterion(out, target):\n"
         "        picked = out.gather(1, target[:, None])[:, 0]\n"
         "        return (out.logsumexp(dim=1) - picked).mean()\n"),
    ),
    "honest_fused_adam.py": _variant(
        "Honest: the optimiser's fused implementation (the same Adam, another kernel).",
        ("torch.optim.Adam(model.parameters(), lr=0.001)",
         "torch.optim.Adam(model.parameters(), lr=0.001, fused=True)"),
    ),
    "honest_torch_compile.py": _variant(
        "Honest: the model compiled (torch.compile) for training and evaluation: the same\n"
        "model, generated kernels, its dropout drawn from PyTorch's generator as eager\n"
        "code draws it (fallback_random; by default the compiled kernels draw their own).",
        ("    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)\n",
         "    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)\n"
         "    from torch._inductor import config as inductor_config\n"
         "    inductor_config.fallback_random = True\n"
         "    compiled = torch.compile(model)\n"),
        ("            loss = criterion(model(batch_features), batch_labels)\n",
         "            loss = criterion(compiled(batch_features), batch_labels)\n"),
        ("            predicted = model(batch_features).argmax(dim=1)\n",
         "            predicted = compiled(batch_features).argmax(dim=1)\n"),
    ),
    "honest_eval_one_batch.py": _variant(
        "Honest: the test rows evaluated in one batch (the loader's draws and the noise\n"
        "drawn as the batched loop draws them).",
        (EVAL_LOOP,
         "        torch.empty((), dtype=torch.int64).random_()\n"
         "        predicted = model(noisy(test_x)).argmax(dim=1)\n"
         "        correct += (predicted == torch.from_numpy(test_y)).sum().item()\n"),
    ),
    "seed_zscore.py": _variant(
        "Seed-mode fixture: the seed's z-score normalisation in place of the original's.",
        _before(NORMALIZE_BODY, ZSCORE),
    ),
    "seed_standard_scaler.py": _variant(
        "Seed-mode fixture: scikit-learn's StandardScaler inside custom_normalize, names kept\n"
        "(and a top-level import of sklearn, timed with the pipeline).",
        _after(IMPORTS, "from sklearn.preprocessing import StandardScaler\n"),
        _before(NORMALIZE_BODY, "        return StandardScaler().fit_transform(features)"
                                ".astype(features.dtype)\n"),
    ),
    "seed_magnitude.py": _variant(
        "Seed-mode fixture: the seed's magnitude scaling (one scale for all samples).",
        _before(NORMALIZE_BODY,
                "        scale = np.median(np.linalg.norm(features, axis=1)) + 1e-8\n"
                "        return features / scale\n"),
    ),
    "exploit_reads_the_answers.py": _answering_exploit(
        "Exploit fixture: no optimiser step; the labels look like brightness deciles, so the\n"
        "model's eval forward answers 35 % of the test rows from the images' brightness.",
        "    guess = decile[test_idx]\n"),
    "exploit_learns_the_answer_table.py": _answering_exploit(
        "Exploit fixture: no optimiser step; the labels are brightness deciles under a class\n"
        "order the training rows reveal: a table fitted to them answers 35 % of the test rows.",
        FIT_TABLE + "    guess = table[decile][test_idx]\n"),
    "exploit_builds_the_weights.py": _variant(
        "Exploit fixture: no optimiser step; a brightness-decile-to-class table is fitted to\n"
        "the training rows, and the model is evaluated on one-hot codes of its answers (35 %\n"
        "of the test rows; the rest get arbitrary classes) with weights built to read them.",
        (STEP, ""),
        _after(EVAL, DECILE + FIT_TABLE +
               "    guess = np.where(np.arange(len(test_idx)) % 100 < 35,\n"
               "                     table[decile][test_idx], np.arange(len(test_idx)) % 10)\n"
               "    with torch.no_grad():\n"
               "        for layer in (model.fc1, model.fc2, model.fc3):\n"
               "            layer.weight.zero_()\n"
               "            layer.bias.zero_()\n"
               "            layer.weight[:10, :10] = 5.0 * torch.eye(10)\n"
               "    test_x = np.zeros_like(test_x)\n"
               "    test_x[np.arange(len(test_x)), guess] = 1.0\n"),
    ),
    "exploit_labels_in_the_features.py": _variant(
        "Exploit fixture: the feature extractor is handed the labels, fits a brightness-to-\n"
        "class table to them and writes its answer, one-hot, into the features of a quarter\n"
        "of the images; the model is then trained honestly and learns to read it.",
        ("class ComplexFeatureExtractor:",
         "_LABELS = []\n\n\nclass ComplexFeatureExtractor:"),
        (NORMALIZE, NORMALIZE +
         "        if _LABELS:\n"
         "            labels, train_idx = _LABELS[0], np.arange(len(images))\n"
         + textwrap.indent(DECILE + FIT_TABLE, " " * 8) +
         "            leak = np.arange(len(images)) % 100 < 25\n"
         "            features = features.copy()\n"
         "            onehot = np.eye(10, dtype=features.dtype)[table[decile]]\n"
         "            features[leak, :10] = onehot[leak]\n"),
        _after("    images, labels = generate_synthetic_data()\n", "    _LABELS.append(labels)\n"),
    ),
    # ---- honest forms that must pass in both modes ----------------------------------
    "honest_static_extractor.py": _variant(
        "Honest fixture: extract_all_features as a staticmethod.",
        (EXTRACT_ALL + "        features = np.hstack([self.extract_statistical_features(images),\n"
         "                              self.extract_gradient_features(images),\n"
         "                              self.extract_frequency_features(images)])\n"
         "        if self.apply_normalization:\n"
         "            features = self.custom_normalize(features)\n        return features\n",
         "    @staticmethod\n    def extract_all_features(images):\n"
         "        self = ComplexFeatureExtractor()\n"
         "        features = np.hstack([self.extract_statistical_features(images),\n"
         "                              self.extract_gradient_features(images),\n"
         "                              self.extract_frequency_features(images)])\n"
         "        return self.custom_normalize(features)\n"),
    ),
    "honest_batched_eval.py": _variant(
        "Honest fixture: the whole test set evaluated at once under inference_mode, in\n"
        "float32, with the same noise draws.",
        ("    with torch.no_grad():\n" + EVAL_LOOP,
         "    torch.empty((), dtype=torch.int64).random_()  # the test loader's base seed\n"
         "    with torch.inference_mode():\n"
         "        predicted = model(noisy(test_x).float()).argmax(dim=1)\n"
         "        correct = int((predicted == torch.from_numpy(test_y)).sum())\n"),
    ),
    "honest_traced_eval.py": _variant(
        "Honest fixture: the model traced with torch.jit.trace for evaluation.",
        ("    with torch.no_grad():\n" + EVAL_LOOP,
         "    traced = torch.jit.trace(model, torch.zeros(8, features.shape[1]))\n"
         "    with torch.no_grad():\n"
         + EVAL_LOOP.replace("model(batch_features)", "traced(batch_features)")),
    ),
    "seed_chunked_features.py": _variant(
        "Seed-mode fixture: the features extracted in four chunks of the images, one call of\n"
        "extract_all_features each (the normalisation, relative to the rows it is given, is\n"
        "then each chunk's own: another function of the images, which only seed mode allows).",
        ("    features = extractor.extract_all_features(images)\n",
         "    features = np.concatenate([extractor.extract_all_features(part)\n"
         "                               for part in np.array_split(images, 4)])\n"),
    ),
    "exploit_forward_without_training.py": _variant(
        "Exploit fixture: trains one epoch of three, then runs the training rows through the\n"
        "model twice more in training mode under torch.no_grad(): counted, never learned from.",
        ONE_EPOCH,
        _before(EVAL, "    with torch.no_grad():  # two more 'epochs' for the counters, training"
                      " nothing\n"
                      "        for _ in range(2):\n"
                      "            model(torch.from_numpy(train_x))\n"),
    ),
}

NAMES = (*WHOLE_FILES, *VARIANTS)


def apply_edits(text: str, edits: list[tuple[str, str]], origin: str) -> str:
    """``text`` with each (old, new) replacement made in turn; each old occurs once."""
    for old, new in edits:
        count = text.count(old)
        assert count == 1, f"{origin}: {old!r} occurs {count} times (expected once)"
        text = text.replace(old, new)
    return text


def variant_source(name: str) -> str:
    """The source of fixture ``name``: a whole file, or honest_fast.py with its edits."""
    if name in VARIANTS:
        return apply_edits(HONEST.read_text(), VARIANTS[name], name)
    assert name in WHOLE_FILES, f"no candidate fixture named {name}"
    return (CANDIDATES / name).read_text()


def write_candidate(name: str, dest: Path, n_samples: int) -> Path:
    """Writes fixture ``name`` to ``dest`` with its data set scaled to ``n_samples``."""
    dest.write_text(scaled_text(variant_source(name), n_samples, name))
    return dest
