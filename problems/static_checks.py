"""Checks a candidate's source before anything runs: parsing, required names, safety.

All of it reads the syntax tree (``ast``), never substrings, so a required class named
in a comment or a string does not count, and a forbidden call hidden behind an alias
still does.  Each function returns one :class:`problem.Check`.  What the code does at
run time is judged elsewhere (``problems.measurement``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from problem import Check

# Modules with no place in a training pipeline: I/O, processes, introspection, threads.
FORBIDDEN_MODULES = frozenset(
    "os sys subprocess socket ctypes cffi importlib inspect gc pickle shelve marshal dill "
    "joblib shutil pathlib io tempfile glob fileinput multiprocessing threading concurrent "
    "asyncio signal builtins requests urllib http ftplib sqlite3 resource mmap atexit "
    "faulthandler code codeop runpy pty fcntl threadpoolctl psutil tracemalloc sysconfig "
    "site zipimport pkgutil weakref __main__ __mp_main__ traceback".split()
)
FORBIDDEN_CALLS = frozenset(
    "open exec eval compile __import__ globals locals vars setattr delattr exit quit "
    "breakpoint input memoryview".split()
)
DYNAMIC_ATTRIBUTE_CALLS = frozenset({"getattr", "hasattr"})
# Attribute names that reach into interpreter internals, files or thread settings.
FORBIDDEN_ATTRIBUTES = frozenset(
    "__globals__ __builtins__ __code__ __closure__ __subclasses__ __loader__ __spec__ "
    "__file__ __dict__ __import__ f_back f_locals f_globals _getframe save savez savez_compressed "
    "load loadtxt savetxt genfromtxt fromfile tofile memmap hub cpp_extension "
    "load_library set_num_threads set_num_interop_threads set_flush_denormal "
    # modules reachable as attributes of others (torch.os, np.sys, ...) and frames
    "os sys modules subprocess builtins system popen tb_frame __traceback__ gi_frame "
    "cr_frame f_code".split()
)
FORBIDDEN_NAMES = frozenset({"SystemExit", "KeyboardInterrupt", "__builtins__", "__file__"})


def parse(source: str, filename: str) -> tuple[ast.Module | None, Check]:
    try:
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


def _module_aliases(tree: ast.Module) -> set[str]:
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            aliases.update(a.asname or a.name for a in node.names)
    return aliases


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def forbidden_constructs(tree: ast.Module, forbidden_strings: Iterable[str] = ()) -> Check:
    """No file/network I/O, processes, clock patching, interpreter introspection, or
    early exits: constructs a training pipeline never needs and reward hacks always do."""
    found: list[str] = []
    aliases = _module_aliases(tree)
    strings = tuple(forbidden_strings)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:  # `from torch import os` reaches os as surely as `import os`
                names = [node.module or ""] + [a.name for a in node.names]
            for name in names:
                if any(part in FORBIDDEN_MODULES for part in name.split(".")):
                    found.append(f"line {line}: import of {name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                found.append(f"line {line}: call to {node.func.id}()")
            elif node.func.id in DYNAMIC_ATTRIBUTE_CALLS and len(node.args) >= 2:
                name = node.args[1]
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                    found.append(f"line {line}: {node.func.id}() with a computed name")
                elif name.value in FORBIDDEN_ATTRIBUTES or name.value in FORBIDDEN_MODULES:
                    found.append(f"line {line}: {node.func.id}() of {name.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(f"line {line}: use of .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"line {line}: use of {node.id}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = (node.targets if isinstance(node, ast.Assign | ast.Delete)
                       else [node.target])
            for target in targets:
                if (isinstance(target, ast.Attribute | ast.Subscript)
                        and _root_name(target) in aliases):
                    found.append(f"line {line}: assignment to {ast.unparse(target)} "
                                 "(patching an imported module)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for text in strings:
                if text in node.value:
                    found.append(f"line {line}: string mentioning {text!r}")
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        return Check("forbidden_constructs", False, f"forbidden constructs: {shown}")
    return Check("forbidden_constructs", True, "no forbidden constructs")


def minimum_length(source: str, min_lines: int) -> Check:
    """At least ``min_lines`` lines of code (blank lines and comments not counted)."""
    code_lines = sum(1 for line in source.splitlines()
                     if line.strip() and not line.strip().startswith("#"))
    if code_lines < min_lines:
        return Check("minimum_length", False,
                     f"{code_lines} lines of code, fewer than the required {min_lines}")
    return Check("minimum_length", True, f"{code_lines} lines of code")
