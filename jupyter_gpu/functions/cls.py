"""`@jupyter_gpu.cls`: a notebook's class whose instance lives on a worker (Modal's ``@app.cls``).

    @jupyter_gpu.cls(gpu="A100", keep_warm="5m")
    class Model:
        @jupyter_gpu.enter
        def load(self):
            self.net = load_weights()          # once per worker
        def predict(self, x):
            return self.net(x)

    m = Model()
    m.predict.remote(x); m.predict.map(xs); m.predict.spawn(x); m.predict.local(x)

An instance's methods are Functions (``.remote``, ``.map``, ``.spawn``, ``.local``...) whose ``setup``
makes the instance on the worker (``Model(*args)``, then its ``@enter`` methods) once per worker:
every method of the same instance (same class and arguments) shares it there, as ``setup=`` does for
a function.  Here, ``.local`` shares one instance made here.  What goes to the worker is pickled by
value (closures made here, the notebook's class), never a name of this module, which a worker need
not import.
"""
from __future__ import annotations

import dataclasses

from jupyter_gpu.functions.function import Function, Options, function

_ENTER = "_jupyter_gpu_enter"


def enter(fn):
    """Mark a method of a ``@jupyter_gpu.cls`` class to run once per worker, after the instance is made."""
    setattr(fn, _ENTER, True)
    return fn


class Cls:
    """What ``@jupyter_gpu.cls(...)`` makes of a class: call it to get an instance handle."""

    def __init__(self, klass: type, options: Options):
        if not isinstance(klass, type):
            raise TypeError(f"@jupyter_gpu.cls decorates a class, not {type(klass).__name__}")
        self.klass, self.options = klass, options

    def __repr__(self) -> str:
        return f"<jupyter_gpu.Cls {self.klass.__qualname__} gpu={self.options.gpu or 'default'}>"

    def __call__(self, *args, **kwargs) -> "Obj":
        return Obj(self, args, kwargs)


class Obj:
    """An instance of a ``@jupyter_gpu.cls`` class, made where its methods run (once per worker)."""

    def __init__(self, cls: Cls, args: tuple, kwargs: dict):
        self._cls = cls
        self._make = _maker(cls.klass, args, kwargs, [n for n, v in vars(cls.klass).items() if getattr(v, _ENTER, False)])
        self._methods: dict[str, Method] = {}
        self._here = None  # the instance made here, for .local

    def __repr__(self) -> str:
        return f"<jupyter_gpu.Obj {self._cls.klass.__qualname__}>"

    def __getattr__(self, name: str) -> "Method":
        if name.startswith("_"):
            raise AttributeError(name)
        m = self._methods.get(name)
        if m is None:
            attr = getattr(self._cls.klass, name, None)
            if not callable(attr) or getattr(attr, _ENTER, False):
                raise AttributeError(f"{self._cls.klass.__qualname__} has no method {name!r} to call remotely")
            m = self._methods[name] = Method(self, name, attr)
        return m


class Method(Function):
    """A method of an ``Obj``: a Function whose setup makes the instance."""

    def __init__(self, obj: Obj, name: str, attr):
        fn = _caller(name, attr)
        # the handshake compares the packages any of the class's functions names (its @enter's: the model's)
        fn.__jupyter_gpu_uses__ = [v for v in vars(obj._cls.klass).values() if callable(v)]
        super().__init__(fn, dataclasses.replace(obj._cls.options, setup=obj._make))
        self._obj = obj

    def local(self, *args, **kwargs):
        if self._obj._here is None:
            self._obj._here = self._obj._make()
        return self.fn(self._obj._here, *args, **kwargs)


def _maker(klass, args, kwargs, enters: list):
    def make():
        __tracebackhide__ = True  # (IPython shows the user's frames, not this one)
        obj = klass(*args, **kwargs)
        for name in enters:
            getattr(obj, name)()
        return obj

    make.__qualname__ = f"{klass.__qualname__}(...)"
    return make


def _caller(name: str, attr):
    def call(obj, *args, **kwargs):
        __tracebackhide__ = True
        return getattr(obj, name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = getattr(attr, "__qualname__", name)
    call.__jupyter_gpu_source__ = attr  # its defining cell is the method's (a traceback names it)
    return call


def cls(_klass=None, **options):
    """``@jupyter_gpu.cls(gpu=..., keep_warm=..., image=..., timeout=..., retries=..., max_workers=...)``."""
    if "setup" in options:
        raise TypeError("@jupyter_gpu.cls takes no setup=: its @jupyter_gpu.enter methods are the setup")
    opts = function(lambda: None, **options).options  # the same checks and units as @jupyter_gpu.function

    def wrap(klass):
        return Cls(klass, opts)

    return wrap(_klass) if _klass is not None else wrap
