"""Torch CPU tensors travel as out-of-band buffers and pickle the same in every process."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from jupyter_gpu._wire import serialization

torch = pytest.importorskip("torch")


def _round_trip(obj, readonly: bool = False):
    p = serialization.pickle_value("v", obj)
    wire = [bytes(b) if readonly else bytearray(b) for b in p.buffers]
    return p, serialization.unpickle_value("v", bytes(p.data), wire)


@pytest.mark.parametrize("make", [
    lambda: torch.rand(1000, 3),
    lambda: torch.arange(10, dtype=torch.int64).reshape(2, 5).t(),  # a transposed view
    lambda: torch.ones(7, dtype=torch.bfloat16),  # no numpy dtype for it
    lambda: torch.tensor([True, False, True]),
    lambda: torch.randn(4, dtype=torch.complex64),
    lambda: torch.tensor(3.5),  # 0-dim
    lambda: torch.empty(0, 4),
], ids=["float32", "transposed", "bfloat16", "bool", "complex64", "scalar", "empty"])
def test_a_cpu_tensor_comes_back_equal_with_its_memory_out_of_band(make):
    t = make()
    p, back = _round_trip(t)
    assert type(back) is torch.Tensor and back.dtype == t.dtype and back.shape == t.shape
    assert back.stride() == t.stride() and torch.equal(back, t)
    assert len(p.buffers) == 1 and p.buffers[0].nbytes == t.untyped_storage().nbytes()
    assert len(p.data) < 400, "the tensor's memory was copied into the pickle"


def test_a_tensor_pickles_the_same_in_another_process():
    """What lets a tensor that came back from a worker be known there, not sent again."""
    t = torch.randn(64, 64)
    p = serialization.pickle_value("t", t)
    code = (
        "import sys, torch\n"
        "from jupyter_gpu._wire import serialization as s\n"
        "data = sys.stdin.buffer.read()\n"
        f"n = {p.buffers[0].nbytes}\n"
        "t = s.unpickle_value('t', data[n:], [bytearray(data[:n])])\n"
        "print(s.pickle_value('t', t).hash)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=bytes(p.buffers[0]) + bytes(p.data),
                         capture_output=True, timeout=120, check=True)
    assert out.stdout.decode().strip() == p.hash


def test_tensors_sharing_a_storage_are_sent_once_and_share_it_again():
    base = torch.zeros(4, 6)
    value = {"base": base, "row": base[1], "cols": base[:, ::2], "same": base}
    p, back = _round_trip(value)
    assert len(p.buffers) == 1
    back["base"][1, 0] = 9.0
    assert back["row"][0].item() == 9.0 and back["cols"][1, 0].item() == 9.0
    assert back["same"] is back["base"]


def test_a_model_keeps_its_parameters_and_their_gradient_flags():
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)
    p, back = _round_trip(model)
    assert len(p.buffers) == 4
    for mine, theirs in zip(model.parameters(), back.parameters()):
        assert type(theirs) is torch.nn.Parameter and torch.equal(mine, theirs)
        assert theirs.requires_grad == mine.requires_grad
    x = torch.randn(3, 8)
    assert torch.equal(model(x), back(x))
    back(x).sum().backward()  # autograd works on what arrived
    assert back[0].weight.grad is not None


def test_what_torch_pickles_better_is_left_to_it():
    """Autograd history, attributes of its own and sparse layout: torch's pickling, still equal."""
    leaf = torch.ones(3, requires_grad=True)
    tagged = torch.arange(4.0)
    tagged.note = "kept"
    sparse = torch.eye(3).to_sparse()
    _, back = _round_trip({"grad": leaf * 2, "tagged": tagged, "sparse": sparse})
    assert torch.equal(back["grad"].detach(), torch.full((3,), 2.0))
    assert back["tagged"].note == "kept" and torch.equal(back["tagged"], tagged)
    assert back["sparse"].is_sparse and torch.equal(back["sparse"].to_dense(), torch.eye(3))


def test_memory_that_arrives_read_only_is_copied_and_the_tensor_is_writable():
    t = torch.arange(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, back = _round_trip(t, readonly=True)
    back[0] = 7.0
    assert back.tolist() == [7.0, 1.0, 2.0, 3.0, 4.0]


def test_a_rebuilt_tensor_keeps_its_memory_alive():
    t = torch.arange(1 << 16, dtype=torch.float64)
    p = serialization.pickle_value("t", t)
    wire = [bytearray(b) for b in p.buffers]
    back = serialization.unpickle_value("t", bytes(p.data), wire)
    del wire, p
    import gc

    gc.collect()
    assert torch.equal(back, t)
