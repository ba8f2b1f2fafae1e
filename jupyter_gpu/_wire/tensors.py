"""Torch CPU tensors pickled with their memory as protocol-5 out-of-band buffers.

torch's own pickling (``Tensor.__reduce_ex__``) writes each storage into the pickle through
``torch.save``: a copy of all the data, in band, slower than a memcpy, and naming the storage by
its address - so the same tensor pickles differently in two processes.  A tensor that came back
from a worker then never matched the hash the worker holds, and was sent again by every later
cell that read it (256 MiB: 4 s instead of 0.06 s).  Here a CPU tensor is its storage's bytes (one
zero-copy buffer) plus dtype, size, stride and offset, so its pickle depends only on its contents.

A storage shared by several tensors of one value (views, tied weights) is sent once and shared
again where it is rebuilt.  Anything else torch's pickling knows better is left to it: CUDA and
other devices, sparse, quantized, nested or named tensors, conjugate or negative views, tensors
with autograd history, extra Python attributes or backward hooks, and every Tensor subclass but
``nn.Parameter``.

Device memory does not go back to the kernel: a value the worker would send back that holds a
tensor on a GPU (or any device but the CPU) stays on its worker as a remote reference, as soon as
the first such tensor is met - before anything was copied off the device.  The kernel has no such
device as a rule, could not load the value, and the copy would be billed GPU time.
"""
from __future__ import annotations

import pickle
import sys
import warnings


class InDeviceMemory(Exception):
    """A value on its way back to the kernel holds a tensor in device memory."""


class _Storage:
    """Stands for one storage while a value is pickled: the same object for every tensor on it,
    so the pickle memo sends its buffer once and the tensors share it again when rebuilt."""

    __slots__ = ("bytes_view",)

    def __init__(self, bytes_view):
        self.bytes_view = bytes_view  # a uint8 numpy view of the storage (zero-copy)

    def __reduce__(self):
        return _storage, (pickle.PickleBuffer(self.bytes_view),)


def _storage(buf):
    import torch

    view = memoryview(buf)
    if view.nbytes == 0:
        return torch.UntypedStorage(0)
    if view.readonly:  # torch would share memory it may not write: take a copy
        buf = bytearray(view)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frombuffer warns about buffers it cannot resize
        return torch.frombuffer(buf, dtype=torch.uint8).untyped_storage()


def _tensor(storage, dtype: str, size: tuple, stride: tuple, offset: int, requires_grad: bool, parameter: bool):
    import torch

    t = torch.empty(0, dtype=getattr(torch, dtype)).set_(storage, offset, size, stride)
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_(requires_grad) if requires_grad else t


def _plain(torch, t) -> bool:
    """Whether ``t`` is a tensor this module pickles (see the module's docstring)."""
    return (
        (type(t) is torch.Tensor or type(t) is torch.nn.Parameter)
        and t.device.type == "cpu"
        and t.layout is torch.strided
        and not (t.is_quantized or t.is_nested or t.is_conj() or t.is_neg() or any(getattr(t, "names", None) or ()))
        and t.grad_fn is None
        and not t.__dict__
        and not getattr(t, "_backward_hooks", None)
    )


def portable(obj) -> bool:
    """Whether ``obj`` is a tensor whose pickle here is the same in every process."""
    torch = sys.modules.get("torch")
    return torch is not None and _plain(torch, obj)


class Reducers:
    """The dispatch-table entries of one pickling: torch.Tensor and nn.Parameter, when torch is
    imported (a value holding a tensor implies it is)."""

    def __init__(self, device_memory_stays: bool = False):
        self.storages: dict = {}  # (data pointer, bytes) -> _Storage, for this one value
        self.device_memory_stays = device_memory_stays

    def table(self) -> dict:
        torch = sys.modules.get("torch")
        if torch is None:
            return {}
        return {torch.Tensor: self.reduce, torch.nn.Parameter: self.reduce}

    def reduce(self, t):
        torch = sys.modules["torch"]
        if self.device_memory_stays and t.device.type != "cpu":
            raise InDeviceMemory(f"it holds a tensor in {t.device} memory ({list(t.shape)})")
        if not _plain(torch, t):
            return t.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        holder = self.storages.get(key)
        if holder is None:
            flat = torch.empty(0, dtype=torch.uint8).set_(storage)
            holder = self.storages[key] = _Storage(flat.numpy())
        dtype = str(t.dtype).removeprefix("torch.")
        return _tensor, (holder, dtype, tuple(t.size()), t.stride(), t.storage_offset(), t.requires_grad,
                         type(t) is torch.nn.Parameter)
