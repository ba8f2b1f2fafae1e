"""jupyter-gpu: run notebook cells on serverless GPU workers with `%%gpu`.

    %load_ext jupyter_gpu

    %%gpu --gpu H100
    import torch
    x = torch.randn(4096, 4096, device="cuda") @ w

The public API, and only that (``__all__``).  Nothing is imported at import time: the worker and the
backend import this package for ``errors`` and ``_wire``, and must not pull in the kernel's side;
the functions IPython and JupyterLab call import it when called.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension", "last_cell", "function",
           "FunctionCall", "calls", "cls", "enter", "Image"]


def load_ipython_extension(ip) -> None:
    """`%load_ext jupyter_gpu`: registers `%%gpu` and `%gpu`."""
    from jupyter_gpu._client import embedded

    # the embedded backend starts now, beside the imports below (the request being run: ipykernel's
    # parent message, whose code may name another backend with `%gpu use`)
    parent = getattr(ip, "parent_header", None)
    embedded.start_soon((parent.get("content") or {}).get("code", "") if isinstance(parent, dict) else "")
    from jupyter_gpu.notebook import extension

    extension.load(ip)


def unload_ipython_extension(ip) -> None:
    from jupyter_gpu.notebook import extension

    extension.unload(ip)


def last_cell() -> dict | None:
    """The footer record of this kernel's last `%%gpu` cell (None before the first)."""
    from jupyter_gpu.notebook import extension

    return extension.last_cell()


def function(_fn=None, *, gpu=None, keep_warm=None, image=None, timeout=None, retries=0, max_workers=None,
             setup=None):
    """``@jupyter_gpu.function(gpu="A100", keep_warm="5m")`` on a notebook's function: ``f.remote(x)``
    runs it on a worker (its output in the calling cell, its value back), ``f.map(xs)`` over many
    inputs, ``f(x)`` / ``f.local(x)`` here; ``setup=load`` runs once per worker, its value every
    call's first argument.  See jupyter_gpu/functions/."""
    from jupyter_gpu.functions.function import function as make

    return make(_fn, gpu=gpu, keep_warm=keep_warm, image=image, timeout=timeout, retries=retries,
                max_workers=max_workers, setup=setup)


def cls(_klass=None, *, gpu=None, keep_warm=None, image=None, timeout=None, retries=0, max_workers=None):
    """``@jupyter_gpu.cls(gpu="A100")`` on a notebook's class: ``Model().predict.remote(x)`` runs the
    method on a worker's instance, made there once per worker (then its ``@jupyter_gpu.enter`` methods:
    load a model once).  See jupyter_gpu/functions/cls.py."""
    from jupyter_gpu.functions.cls import cls as make

    return make(_klass, gpu=gpu, keep_warm=keep_warm, image=image, timeout=timeout, retries=retries,
                max_workers=max_workers)


def enter(fn):
    """Mark a ``@jupyter_gpu.cls`` method to run once per worker, after the instance is made."""
    from jupyter_gpu.functions.cls import enter as mark

    return mark(fn)


def calls():
    """This notebook's spawned calls (``f.spawn``), newest first: FunctionCalls, shown as a table."""
    from jupyter_gpu.functions.jobs import calls as listing

    return listing()


def __getattr__(name: str):
    if name == "FunctionCall":  # (imported when first named: nothing at import time)
        from jupyter_gpu.functions.jobs import FunctionCall

        return FunctionCall
    if name == "Image":
        from jupyter_gpu.notebook.image import Image

        return Image
    if name == "_magics":  # this kernel's magics, for tests and benchmarks (None before %load_ext)
        from jupyter_gpu.notebook import extension

        return extension.magics
    raise AttributeError(f"module 'jupyter_gpu' has no attribute {name!r}")


def _jupyter_labextension_paths():
    """Where the prebuilt lab extension is (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "jupyter-gpu"}]
