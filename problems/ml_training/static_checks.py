"""Checks a candidate's source before anything runs: parsing and the required names.

All of it reads the syntax tree (``ast``), never substrings, so a required class named
in a comment or a string does not count.  Each function returns one
:class:`problem.Check`.  There is no denylist standing in for isolation: the sandbox
contains what the code does, and :func:`advisories` only explains what cannot help.
What the code does at run time is judged elsewhere (``runtime_checks``).
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterable

from problem import Check

# Advisory only: constructs that buy nothing here, each with the reason, so the agent
# learns it before spending a step on it.  Nothing is refused for them: the operating
# system isolates the execution (``sandbox``), and the grader judges outputs on inputs
# it chose, with a clock in another process.
ADVISORIES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset("subprocess multiprocessing threading concurrent".split()),
     "processes and threads share the single CPU each execution gets"),
    (frozenset("socket urllib http requests ftplib".split()),
     "executions have no network"),
    (frozenset("pickle shelve marshal joblib tempfile shutil".split()),
     "files written during an execution are discarded; nothing reaches the next one"),
    (frozenset("inspect gc ctypes __main__ traceback".split()),
     "the grader trusts nothing the candidate's process says about itself"),
)
_CLOCK_MODULES = frozenset({"time", "datetime"})


# CPython 3.11 can fail ast.parse run in two threads at once ("AST constructor recursion
# depth mismatch", a SystemError): gradings that run in threads parse one at a time.
_PARSE_LOCK = threading.Lock()


def parse(source: str, filename: str) -> tuple[ast.Module | None, Check]:
    try:
        with _PARSE_LOCK:
            tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as exc:
        lineno = getattr(exc, "lineno", None)
        if lineno is None and "\0" in source:  # Python gives no line for null bytes
            lineno = source.count("\n", 0, source.index("\0")) + 1
        where = f"line {lineno}" if lineno else "unknown line"
        message = getattr(exc, "msg", None) or str(exc)
        return None, Check("syntax", False,
                           f"the file does not parse as Python ({where}: {message})")
    return tree, Check("syntax", True, "the file parses as Python")


def _imported_modules(tree: ast.Module) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def required_imports(tree: ast.Module, required: Iterable[str]) -> Check:
    """Each required module (``torch``, ``torch.nn``, ``numpy``) is really imported."""
    imported = set(_imported_modules(tree))
    missing = [m for m in required
               if not any(i == m or i.startswith(m + ".") for i in imported)]
    if missing:
        return Check("required_imports", False,
                     f"missing import statement(s) for: {', '.join(missing)}")
    return Check("required_imports", True, "all required modules are imported")


def required_definitions(tree: ast.Module, classes: Iterable[str], functions: Iterable[str]
                         ) -> Check:
    """The required classes and entry function are defined at module top level."""
    top_classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    top_functions = {n.name for n in tree.body
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    missing = [f"class {c}" for c in classes if c not in top_classes]
    missing += [f"function {f}()" for f in functions if f not in top_functions]
    if missing:
        return Check("required_definitions", False,
                     f"not defined at module top level: {', '.join(missing)} (the grader "
                     "calls these by name; keep the original names)")
    return Check("required_definitions", True, "required classes and entry function defined")


def advisories(tree: ast.Module) -> Check:
    """Notes on constructs that cannot help here (never decisive)."""
    notes: dict[str, list[str]] = {}
    for module in _imported_modules(tree):
        for modules, note in ADVISORIES:
            if module.split(".")[0] in modules:
                notes.setdefault(note, []).append(module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                        and t.value.id in _CLOCK_MODULES):
                    notes.setdefault("the grader's clock runs in another process",
                                     []).append(ast.unparse(t))
    if not notes:
        return Check("advisories", True, "nothing to note", advisory=True)
    text = "; ".join(f"{', '.join(sorted(set(names)))}: {note}" for note, names in notes.items())
    return Check("advisories", True, text, advisory=True)
