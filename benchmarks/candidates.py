"""The files the benchmarks run, scaled to a benchmark's size: pipeline files copied with
fewer samples, and the candidate fixtures by name.

The candidate fixtures are shared with the tests and defined once, in
``tests/candidates/``: ``honest_fast.py`` and ``cheat_hardcoded_output.py`` are files
there, and every other fixture is an edit of ``honest_fast.py`` written by
``tests/candidates/variants.py`` (imported as ``tests.candidates.variants``: it needs
nothing of pytest).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sandbox import PROJECT_ROOT
from tests.candidates.variants import scaled_text, variant_source

CANDIDATES = PROJECT_ROOT / "tests" / "candidates"
FULL_SIZE = 3000  # the flagship's n_samples, which its pipeline files and fixtures state


def scaled_copy(source: Path, dest: Path, n_samples: int, default: int = FULL_SIZE,
                edits: Iterable[tuple[str, str]] = ()) -> Path:
    """A copy of a pipeline file with ``n_samples`` samples, each (old, new) of ``edits``
    replaced (each old must occur once)."""
    text = source.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            raise ValueError(f"{dest.name}: {old!r} must occur once in {source}")
        text = text.replace(old, new)
    dest.write_text(scaled_text(text, n_samples, source, default))
    return dest


def fixture_source(name: str) -> str:
    """The source of the candidate fixture ``name`` (e.g. ``honest_fast.py``,
    ``cheat_one_epoch.py``), at full size."""
    path = CANDIDATES / name
    if path.is_file():
        return path.read_text()
    try:
        return variant_source(name)
    except AssertionError:  # variants.py's way of saying there is none
        raise ValueError(f"no candidate fixture {name!r} in {CANDIDATES}") from None


def write_candidate(name: str, dest: Path, n_samples: int) -> Path:
    """Writes the candidate fixture ``name`` to ``dest`` with ``n_samples`` samples."""
    dest.write_text(scaled_text(fixture_source(name), n_samples, name))
    return dest
