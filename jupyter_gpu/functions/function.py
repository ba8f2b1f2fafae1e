"""What `@jupyter_gpu.function(...)` makes of a notebook's function: a Function, called here with
``f(x)`` / ``f.local(x)``, on a worker with ``f.remote(x)``, over many inputs with ``f.map(xs)``
(``starmap``, ``for_each``)."""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from jupyter_gpu.notebook.magics import duration


@dataclass(frozen=True)
class Options:
    gpu: str | None = None  # "A100", "H100,A100,cpu" (the first the backend offers), "A100:2"
    keep_warm: float | None = None  # seconds ("5m" accepted): how long its worker stays warm after a call
    image: str | None = None  # one of the backend's worker images
    timeout: float | None = None  # seconds a call may run before it is stopped
    retries: int = 0  # a call whose worker died is run again this many times
    max_workers: int | None = None  # the most workers a map fans out over (one, for now: see map)
    setup: object = None  # run once per worker (load a model); its value is every call's first argument


class Function:
    """A notebook's function that runs on a GPU worker when called with ``.remote``."""

    def __init__(self, fn, options: Options):
        if not callable(fn):
            raise TypeError(f"@jupyter_gpu.function decorates a function, not {type(fn).__name__}")
        if options.setup is not None and not callable(options.setup):
            raise TypeError(f"setup= is a function (run once per worker), not {type(options.setup).__name__}")
        self.fn, self.options = fn, options
        self._state = _UNSET  # setup's value here, for .local
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<jupyter_gpu.Function {getattr(self.fn, '__qualname__', self.fn)!r} gpu={self.options.gpu or 'default'}>"

    def __call__(self, *args, **kwargs):
        """Here, in the kernel (as Modal's: `.remote` sends it)."""
        return self.local(*args, **kwargs)

    def local(self, *args, **kwargs):
        """Here, in the kernel (with ``setup=``: its value, made once here, first)."""
        if self.options.setup is None:
            return self.fn(*args, **kwargs)
        if self._state is _UNSET:
            self._state = self.options.setup()
        return self.fn(self._state, *args, **kwargs)

    def remote(self, *args, **kwargs):
        """On a worker: its output streams into the calling cell; its value comes back, or its
        exception is raised here as the same type with the worker's traceback."""
        from jupyter_gpu.functions import call

        return call.remote(self, args, kwargs)

    def remote_gen(self, *args, **kwargs):
        """A generator function on a worker: a generator here that yields each value as the worker
        yields it (closing it early stops the worker's generator)."""
        from jupyter_gpu.functions import call

        return call.remote_gen(self, args, kwargs)

    def spawn(self, *args, **kwargs):
        """Start ``f(*args)`` on a worker and return at once: a ``FunctionCall`` (``.get()``,
        ``.cancel()``), which the backend keeps running and keeps the result of, past this kernel."""
        from jupyter_gpu.functions import jobs

        return jobs.spawn(self, args, kwargs)

    def spawn_map(self, *iterables, return_exceptions: bool = False, kwargs: dict | None = None):
        """``spawn`` of a whole map (on one worker): one ``FunctionCall``, whose ``get()`` is the list
        of results in input order."""
        from jupyter_gpu.functions import jobs

        return jobs.spawn_map(self, zip(*iterables), dict(kwargs or {}), return_exceptions)

    def map(self, *iterables, order_outputs: bool = True, return_exceptions: bool = False, kwargs: dict | None = None):
        """``f(x)`` for each x (``f(x, y)`` for each pair of several iterables), on a worker, in
        batches; the results in input order.  An item that raised: its exception in place with
        ``return_exceptions``, else it is raised, naming the item's index."""
        return self.starmap(_Zipped(iterables), order_outputs=order_outputs, return_exceptions=return_exceptions,
                            kwargs=kwargs)

    def starmap(self, items, order_outputs: bool = True, return_exceptions: bool = False, kwargs: dict | None = None):
        """``f(*args)`` for each args tuple of ``items``."""
        from jupyter_gpu.functions import call

        return call.starmap(self, items, dict(kwargs or {}), return_exceptions)

    def for_each(self, *iterables, ignore_exceptions: bool = False, kwargs: dict | None = None) -> None:
        """``f(x)`` for each x, for its effects (its output); nothing comes back."""
        for _ in self.map(*iterables, return_exceptions=ignore_exceptions, kwargs=kwargs):
            pass


def function(_fn=None, *, gpu: str | None = None, keep_warm=None, image: str | None = None, timeout=None,
             retries: int = 0, max_workers: int | None = None, setup=None):
    """``@jupyter_gpu.function(gpu="A100", keep_warm="5m")``: ``f.remote(x)`` runs ``f(x)`` on a
    worker of that GPU type (``@jupyter_gpu.function`` alone: the kernel's default).  ``setup=load``:
    ``load()`` runs once per worker and its value is every call's first argument there
    (``f(model, x)``; called as ``f.remote(x)``)."""
    if retries < 0 or (max_workers is not None and max_workers < 1):
        raise ValueError("retries must be >= 0 and max_workers >= 1")
    options = Options(gpu, _seconds(keep_warm, "keep_warm"), image, _seconds(timeout, "timeout"), retries, max_workers,
                      setup)
    if _fn is not None:
        return Function(_fn, options)
    return lambda fn: Function(fn, options)


_UNSET = object()


class _Zipped:
    """``zip(*iterables)`` that says its len() when each of them does (a map's progress bar then
    knows its end); read as zip reads them, as it goes."""

    def __init__(self, iterables: tuple):
        self.iterables = iterables

    def __iter__(self):
        return zip(*self.iterables)

    def __len__(self) -> int:
        return min(len(x) for x in self.iterables) if self.iterables else 0  # (TypeError: one has no len)


def _seconds(value, what: str) -> float | None:
    if value is None:
        return None
    seconds = duration(value) if isinstance(value, str) else float(value)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{what}: {value!r} is not a finite number of seconds")
    return seconds


def batches(items, size: int):
    """The items in lists of ``size`` (a generator is read as it goes: nothing more is held)."""
    it = iter(items)
    while True:
        batch = list(itertools.islice(it, size))
        if not batch:
            return
        yield batch
