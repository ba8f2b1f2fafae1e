"""Named values <-> (JSON-able spec, list of buffers), with content hashes.

Each value is pickled on its own with cloudpickle protocol 5; its out-of-band buffers (numpy
arrays, and torch CPU tensors by ``tensors.py``) are never copied into the pickle.  Every buffer
travels either on the wire (an index into the message's buffers) or, when both ends share a host,
in a shared-memory segment (see ``shm.py``).  The hash of a value is xxh3-128 over its pickle and
its buffers, so the kernel side can skip a value the worker already holds; a buffer over
PARALLEL_HASH enters it as the xxh3-128 digests of its 16 MiB chunks, hashed on all cores
(memory-bound: 1.7x on this 2-core VM), since both sides hash every large input once per cell.
A module is pickled as its name and imported where it arrives (never by value).  Names whose
values share objects are pickled together by ``sharing.py``.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import sys
import types
from collections import ChainMap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cloudpickle
import xxhash

from jupyter_gpu._wire import shm, tensors
from jupyter_gpu.errors import SerializationError

# IPython's own names in every user namespace: never sent, never brought back (kernel and worker)
SHELL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
PROTOCOL = 5
SHM_MIN = 1 << 20  # buffers smaller than this are cheaper on the wire than in a segment
PARALLEL_HASH, HASH_CHUNK = 64 << 20, 16 << 20
MAX_RETURN = 4 * 2**30  # a larger result stays on its worker unless --out names it ($JUPYTER_GPU_MAX_RETURN)


@dataclass
class Pickled:
    """One value, pickled: its pickle, its out-of-band buffers and their joint hash."""

    data: bytes
    buffers: list  # raw memoryviews of the value's own memory (no copy)
    hash: str
    type_name: str
    reached: frozenset = frozenset()  # other names whose values it holds (pickle_value's ``watch``)

    @property
    def nbytes(self) -> int:
        return len(self.data) + sum(b.nbytes for b in self.buffers)


def type_name(obj) -> str:
    t = type(obj)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{t.__qualname__}"


def describe(obj) -> str:
    """What a value that stays on its worker is: its type, and a tensor's or array's shape with
    its device (torch) or dtype (numpy): ``torch.Tensor [4096, 4096] cuda:0``."""
    what = type_name(obj)
    try:  # any object: a property may compute, or raise anything
        shape = getattr(obj, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
            where = getattr(obj, "device", None)
            detail = where if where is not None and not isinstance(where, str) else getattr(obj, "dtype", "")
            return f"{what} [{', '.join(map(str, shape))}] {detail}".rstrip()
    except Exception:
        pass
    return what


# exact types whose pickle is the same from the C pickler, without cloudpickle's Python Pickler
# set-up (~5 us warm, several times that with cold caches, per value on each side of a cell)
_PLAIN = frozenset({int, float, bool, str, bytes, complex, type(None)})


def _code_at(args: tuple, filename: str) -> types.CodeType:
    """A code object unpickled under the file name it was compiled under."""
    return types.CodeType(*args).replace(co_filename=filename)


def _reduce_code(code: types.CodeType):
    # cloudpickle pickles every code object as compiled in "<dynamic-code>" (for pickles that do
    # not depend on where a function was defined); a function defined in a cell would then lose
    # its source (inspect.getsource, %psource, the debugger) and its "Cell In[n]" in tracebacks
    # once it crossed to the kernel and back.  A cell's file name is a hash of its text (as
    # ipykernel names a local cell: notebook/cell_code.py), so keeping it keeps pickles deterministic.
    _, args = cloudpickle.cloudpickle._code_reduce(code)
    return _code_at, (args, "".join(code.co_filename))  # a new string each time: never memoised


# cloudpickle's table, with code objects keeping their file name
_TABLE = ChainMap({types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, with torch tensors' memory out of band (``tensors.py``) and code objects
    keeping their file name."""

    def __init__(self, file, buffer_callback, device_memory_stays: bool, more: dict | None = None):
        extra = tensors.Reducers(device_memory_stays).table()
        if more:  # reducers of one pickling (sharing.py: arrays rebuilt as views of another name's array)
            extra = {**extra, **more}
        # the C pickler reads its dispatch table once, in __init__
        self.dispatch_table = ChainMap(extra, _TABLE) if extra else _TABLE
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)


class _Watching(_Pickler):
    """Notes which watched objects (other names' values) the value it pickles holds.  cloudpickle
    calls ``reducer_override`` for every object but None, bools, numbers, strings, bytes and plain
    containers, so a watched instance, array or tensor is seen; a watched list or dict only as a
    name's own value (``sharing.py`` compares those by identity)."""

    def __init__(self, file, buffer_callback, device_memory_stays: bool, watch: dict):
        super().__init__(file, buffer_callback, device_memory_stays)
        self.watch, self.reached = watch, set()

    def reducer_override(self, obj):
        name = self.watch.get(id(obj))
        if name is not None:
            self.reached.add(name)
        return super().reducer_override(obj)


def _holds_nothing(obj) -> bool:
    """An array of numbers or a tensor: its pickle holds no other object (nothing to watch for)."""
    t = type(obj)
    if t.__name__ == "ndarray" and t.__module__ == "numpy":
        return not obj.dtype.hasobject
    return tensors.portable(obj)


def _dumps(obj, buffer_callback, device_memory_stays: bool) -> bytes:
    with io.BytesIO() as file:
        _Pickler(file, buffer_callback, device_memory_stays).dump(obj)
        return file.getvalue()


def _dumps_watching(obj, buffer_callback, device_memory_stays: bool, watch: dict) -> tuple[bytes, frozenset]:
    with io.BytesIO() as file:
        pickler = _Watching(file, buffer_callback, device_memory_stays, watch)
        pickler.dump(obj)
        return file.getvalue(), frozenset(pickler.reached)


class _ModuleRef:
    """A module as its name: where it arrives it is imported, never pickled by value."""

    __slots__ = ("name", "submodules")

    def __init__(self, name: str, submodules: tuple):
        self.name, self.submodules = name, submodules

    def __reduce__(self):
        return _import, (self.name, self.submodules) if self.submodules else (self.name,)


def _import(name: str, submodules: tuple = ()):
    """The module ``name``, imported here (after ``submodules``: ``import a.b.c`` binds ``a``, and
    ``a.b.c`` must be there too)."""
    import importlib

    try:
        for sub in submodules:
            importlib.import_module(sub)
        return importlib.import_module(name)
    except (Exception, SystemExit) as e:  # an import may raise anything
        raise SerializationError(f"module '{name}' cannot be imported here: {type(e).__name__}: {e}") from None


def is_module(obj) -> bool:
    """A module that is what importing its name gives (not one made by hand)."""
    return isinstance(obj, types.ModuleType) and sys.modules.get(obj.__name__) is obj


def pickle_value(name: str, obj, *, device_memory_stays: bool = False, watch: dict | None = None,
                 submodules: tuple = ()) -> Pickled:
    """``device_memory_stays``: for a value going back to the kernel (see ``tensors.py``).
    ``watch``: id -> name of other names' values; the Pickled's ``reached`` says which it holds.
    A module is pickled as its name (and ``submodules`` to import first)."""
    bufs: list[pickle.PickleBuffer] = []
    reached = frozenset()
    try:
        if type(obj) in _PLAIN:
            data = pickle.dumps(obj, protocol=PROTOCOL)
        elif is_module(obj):
            data = pickle.dumps(_ModuleRef(obj.__name__, tuple(submodules)), protocol=PROTOCOL)
            return Pickled(data, [], xxhash.xxh3_128_hexdigest(data), f"module '{obj.__name__}'")
        elif watch and not _holds_nothing(obj):
            data, reached = _dumps_watching(obj, bufs.append, device_memory_stays, watch)
        else:
            data = _dumps(obj, bufs.append, device_memory_stays)
    except tensors.InDeviceMemory as e:
        raise SerializationError(
            f"variable '{name}' ({type_name(obj)}) stays on its worker: {e}; `.cpu()` it in a %%gpu cell "
            "to bring a copy back"
        ) from None
    except Exception as e:  # pickling can raise anything: TypeError, PicklingError, RecursionError...
        raise SerializationError(
            f"variable '{name}' ({type_name(obj)}) cannot be pickled: {type(e).__name__}: {e}"
        ) from None
    raws = []  # (hash_buffers, written out: every value pickled pays a function call less)
    h = xxhash.xxh3_128()
    h.update(data)
    for b in bufs:
        try:
            raw = b.raw()
        except BufferError:  # a non-contiguous buffer: one copy, still out of band
            raw = memoryview(bytes(b))
        raws.append(raw)
        h.update(raw if raw.nbytes < PARALLEL_HASH else _chunk_digests(raw))
    return Pickled(data, raws, h.hexdigest(), type_name(obj), reached)


def hash_buffers(h, bufs: list) -> list:
    """Add ``bufs`` (PickleBuffers) to the hash ``h``; their raw memoryviews."""
    raws = []
    for b in bufs:
        try:
            raw = b.raw()
        except BufferError:  # a non-contiguous buffer: one copy, still out of band
            raw = memoryview(bytes(b))
        raws.append(raw)
        h.update(raw if raw.nbytes < PARALLEL_HASH else _chunk_digests(raw))
    return raws


_hashers: ThreadPoolExecutor | None = None


def _chunk_digests(raw: memoryview) -> bytes:
    """The xxh3-128 digests of ``raw``'s HASH_CHUNK chunks, in order, hashed on every core."""
    global _hashers
    if _hashers is None:
        _hashers = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="jupyter-gpu-hash")
    chunk = HASH_CHUNK
    return b"".join(_hashers.map(lambda off: xxhash.xxh3_128_digest(raw[off:off + chunk]), range(0, raw.nbytes, chunk)))


def unpickle_value(name: str, data, buffers):
    try:
        return pickle.loads(data, buffers=buffers)
    except SerializationError:  # says itself what failed (a module not importable here)
        raise
    except Exception as e:
        raise SerializationError(
            f"variable '{name}' could not be unpickled here: {type(e).__name__}: {e}"
        ) from None


@dataclass
class Packer:
    """Collects the buffers of one outgoing message; values refer to them by index."""

    shm_pool: "shm.SegmentPool | None" = None  # when the peer shares this host
    buffers: list = field(default_factory=list)
    shm_bytes: int = 0

    def add(self, buf) -> dict:
        mv = buf if isinstance(buf, memoryview) else memoryview(buf)
        if self.shm_pool is not None and mv.nbytes >= SHM_MIN:
            try:
                ref = self.shm_pool.put(mv)
            except shm.NoRoom:
                pass  # /dev/shm is full: the wire still works
            else:
                self.shm_bytes += mv.nbytes
                return ref
        self.buffers.append(mv)
        return {"w": len(self.buffers) - 1}

    def pack(self, p: Pickled) -> dict:
        return {
            "h": p.hash,
            "t": p.type_name,
            "p": self.add(p.data),
            "b": [self.add(b) for b in p.buffers],
        }


def resolve(ref: dict, wire: list, shm_reader) -> object:
    """Turn a buffer reference back into writable memory (a lent segment is used in place)."""
    if "w" in ref:
        return wire[ref["w"]]
    if "shm" in ref:
        if shm_reader is None:
            raise SerializationError("a shared-memory buffer arrived on a connection without shared memory")
        return shm_reader.take(ref)
    raise SerializationError(f"unknown buffer reference {ref!r}")


def unpack(name: str, spec: dict, wire: list, shm_reader=None):
    data = resolve(spec["p"], wire, shm_reader)
    bufs = [resolve(r, wire, shm_reader) for r in spec["b"]]
    return unpickle_value(name, data, bufs)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """'4GiB', '500MB', '1g', '1048576' -> bytes (powers of 1024 either way, as memory is sized)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{what}: {text!r} is not a size (use e.g. 512MiB, 4GiB)")
    power = "kmgt".find(m.group(2).lower()) + 1 if m.group(2) else 0
    return int(float(m.group(1)) * 1024 ** power)


def size_hint(obj) -> int | None:
    """The bytes an array-like holds, without pickling it (numpy, torch, cupy, jax); else None."""
    try:  # any object: a property may compute, or raise anything
        n = getattr(obj, "nbytes", None)
        if isinstance(n, int):
            return n
        numel, size = getattr(obj, "numel", None), getattr(obj, "element_size", None)
        if callable(numel) and callable(size):  # a torch tensor has no nbytes before torch 2.1
            return int(numel()) * int(size())
    except Exception:
        pass
    return None


def human_size(n: float) -> str:
    """12 -> '12 B', 1572864 -> '1.5 MiB'."""
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
