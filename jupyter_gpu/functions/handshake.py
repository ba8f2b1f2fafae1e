"""What a function needs of a worker's environment, sent with its first call to that worker: the
kernel's Python (major.minor), its cloudpickle, and the versions of the installed packages the
function refers to (its globals that are modules, or classes and functions of a package; what it
refers to goes by reference, by name, and must unpickle there).  The worker compares (calls.py, _wire/handshake.py)
and, where they differ, shows one table (package, here, there) and what to do, before the call and
instead of an unpickling traceback when it does not load.
"""
from __future__ import annotations

import sys
import types

from jupyter_gpu._wire.handshake import refresh, version

_IGNORED = frozenset({"__main__", "builtins", "jupyter_gpu"})


def environment(fn) -> dict:
    """{"python": "3.11", "cloudpickle": "3.1.1", "packages": {"numpy": "2.1.0", ...}}; a method of a
    ``@jupyter_gpu.cls`` class: what all of the class's functions refer to (``__jupyter_gpu_uses__``)."""
    import cloudpickle

    refresh()  # a package installed or upgraded since the last call (%pip install) is seen
    return {"python": f"{sys.version_info[0]}.{sys.version_info[1]}",
            "cloudpickle": getattr(cloudpickle, "__version__", "?"),
            "packages": {top: v for top in sorted(set().union(*map(_packages, getattr(fn, "__jupyter_gpu_uses__", [fn]))))
                         if (v := version(top)) is not None}}


def _packages(fn) -> set:
    """The top-level packages (not the standard library) of what ``fn``'s code names in its globals."""
    fn = getattr(fn, "__wrapped__", fn)
    code, glob = getattr(fn, "__code__", None), getattr(fn, "__globals__", {})
    if code is None:
        return set()
    names, stack = set(), [code]
    while stack:  # the function's code and the code it nests (lambdas, comprehensions, inner functions)
        c = stack.pop()
        names.update(c.co_names)
        stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    tops = set()
    for name in names:
        value = glob.get(name)
        if value is None:
            continue
        module = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if not isinstance(module, str):
            module = getattr(type(value), "__module__", None)
        top = module.partition(".")[0] if isinstance(module, str) else None
        if top and top not in _IGNORED and top not in sys.stdlib_module_names:
            tops.add(top)
    return tops
