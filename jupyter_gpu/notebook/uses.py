"""The packages a `%%gpu` cell uses, and the kernel's versions of them (``Execute.versions``): the
worker compares them with its own before the cell runs and shows one table where they differ
(_wire/handshake.py, _wire/versions.py).

What a cell uses: the top-level modules its text imports (``import x.y``, ``from x import y``,
anywhere in it; kept per text) and the packages of its inputs' values (a module, or the module of a
value's type: a numpy array is numpy's).  The kernel's version is what its environment has
installed, re-read when that environment changed (`%pip install` changes its site-packages' mtime):
one stat, by a cell that uses a package unless the cell before it looked, under a second ago (a
system call costs ~1-4 us; a run of warm `%%gpu` cells makes one a second).  A cell that imports nothing and ships only plain values
sends nothing and costs a dictionary lookup.
"""
from __future__ import annotations

import ast
import re
import time
import types

from jupyter_gpu._wire import handshake, versions
from jupyter_gpu.notebook.cell_options import nested_magic

_LIMIT = 256  # distinct cell texts (and value types) kept; a notebook has far fewer
_imports: dict[str, tuple] = {}  # cell text -> _parse's answer
_type_tops: dict[type, str | None] = {}  # a value's type -> its package (None: none worth comparing)
_names: dict[tuple, str | None] = {}  # (module, version) -> its distribution's name, where it differs
_AGAIN = 1.0  # seconds: how long a look at the environment lasts while only `%%gpu` cells run
_looked = [-2, 0.0]  # the execution count and time.monotonic() of the cell that last looked
_REQ = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a requirement's distribution name
_NORM = re.compile(r"[-.]+")


def fields(shell, source: str, names, ns: dict, spec: dict | None = None) -> dict:
    """``{"versions": {module: version}}`` of the packages the cell uses that the kernel has
    installed (and ``"dists"``, {module: distribution}, where a distribution is named otherwise);
    {} when there are none.  A package the cell's image ``spec`` installs itself
    (``pip_install``, ``--pip``) is left out: its version there is the one asked for."""
    used = set(_parsed(shell, source)[0])
    for name in names:
        top = _package_of(ns.get(name))
        if top is not None:
            used.add(top)
    if not used:
        return {}
    _look(shell)
    found = {top: v for top in sorted(used) if (v := handshake.version(top)) is not None}
    if spec and found:
        pinned = _pinned(spec)
        found = {top: v for top, v in found.items() if _norm(top) not in pinned
                 and _norm(getattr(handshake.distribution(top), "name", "") or "") not in pinned}
    if not found:
        return {}
    named = {top: d for top, v in found.items() if (d := _dist_name(top, v)) is not None}
    return {"versions": found, "dists": named} if named else {"versions": found}


def _dist_name(top: str, version: str) -> str | None:
    """The name of the distribution that provides ``top`` where it is not ``top`` itself (PIL:
    Pillow), else None: what the backend pins when it brings this version to a worker.  Kept per
    (module, version): a distribution's name is read from its METADATA file (~20 us)."""
    key = (top, version)
    if key not in _names:
        name = getattr(handshake.distribution(top), "name", None)
        if len(_names) >= _LIMIT:
            _names.clear()
        _names[key] = name if name and _norm(name) != _norm(top) else None
    return _names[key]


def _look(shell) -> None:
    """Look at the environment again (a stat) unless the last look was the cell just before this one,
    under a second ago: a `%pip install` in a cell between, or a second's time, is seen."""
    count, now = shell.execution_count, time.monotonic()
    if count != _looked[0] + 1 or now - _looked[1] > _AGAIN:
        handshake.refresh()
        _looked[1] = now
    _looked[0] = count


def _norm(name: str) -> str:
    return _NORM.sub("_", name).lower()


def _pinned(spec: dict) -> set:
    """The distributions an image spec's pip layers name (normalised): ``"Foo-Bar[x]>=1"`` -> foo_bar."""
    names = set()
    for layer in spec.get("layers", ()):
        if layer.get("op") == "pip":
            for p in layer.get("packages", ()):
                m = _REQ.match(p.strip())
                if m:
                    names.add(_norm(m.group(0)))
    return names


def _package_of(value) -> str | None:
    """The third-party package a value belongs to (a module: its own), kept per type."""
    if isinstance(value, types.ModuleType):
        top = value.__name__.partition(".")[0]
        return top if versions.is_package(top) else None
    kind = type(value)
    try:
        return _type_tops[kind]
    except KeyError:
        pass
    module = getattr(kind, "__module__", None)
    top = module.partition(".")[0] if isinstance(module, str) else None
    top = top if top and versions.is_package(top) else None
    if len(_type_tops) >= _LIMIT:
        _type_tops.clear()
    _type_tops[kind] = top
    return top


def top_level_modules(shell, source: str) -> tuple:
    """The modules the cell's top-level statements import (absolute: `import x.y` -> x.y, `from x.y
    import z` -> x.y), in order: those the kernel binds after the cell (prefetch.py)."""
    return _parsed(shell, source)[1]


def _parsed(shell, source: str) -> tuple:
    found = _imports.get(source)
    if found is None:
        found = _parse(shell, source)
        if len(_imports) >= _LIMIT:
            _imports.clear()
        _imports[source] = found
    return found


def _imported(shell, source: str) -> tuple:
    """The top-level third-party packages the cell's text imports (absolute imports, anywhere in it)."""
    return _parse(shell, source)[0]


def _parse(shell, source: str) -> tuple[tuple, tuple]:
    """(_imported's packages, top_level_modules's modules), from one parse of the cell's text."""
    if "import" not in source:
        return (), ()
    python = source.lstrip(" \t\n").partition("\n")[2] if nested_magic(source) else source
    try:
        tree = ast.parse(shell.transform_cell(python))
    except Exception:  # SyntaxError, a failing transform: the worker says what is wrong
        return (), ()
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            tops.add(node.module.partition(".")[0])
    modules = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Import):
            modules += [alias.name for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and not stmt.level and stmt.module:
            modules.append(stmt.module)
    return tuple(sorted(t for t in tops if versions.is_package(t))), tuple(dict.fromkeys(modules))
