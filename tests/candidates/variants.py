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

from pathlib import Path

from conftest import scaled_text

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


def _before(anchor: str, added: str) -> tuple[str, str]:
    return anchor, added + anchor


def _busy_wait(seconds: str) -> str:
    return (f"    deadline = time.perf_counter() + {seconds}\n"
            "    while time.perf_counter() < deadline:\n"
            "        pass\n")


ONE_EPOCH = (THREE_EPOCHS, "for epoch in range(1):")
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
