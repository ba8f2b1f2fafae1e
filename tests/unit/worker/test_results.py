"""What a worker sends back after a cell: bound names, inputs changed in place, deleted inputs."""
from __future__ import annotations

import numpy as np
import pytest

from jupyter_gpu._wire import serialization
from jupyter_gpu_worker.results import Holdings, before_cell, pack_results


def _arrive(holdings: Holdings, ns: dict, kernel_hashes: dict | None = None) -> dict:
    """Ship ns's values in as a cell's inputs: pickled, unpickled into ns (into writable memory,
    as the wire and shared memory give it); kernel_hashes: the kernel's hash, where its pickle
    differs from this process's (another process pickles a set of strings in another order)."""
    kernel_hashes = kernel_hashes or {}
    inputs = {}
    for name, obj in list(ns.items()):
        packer = serialization.Packer()
        spec = packer.pack(serialization.pickle_value(name, obj))
        spec["h"] = kernel_hashes.get(name, spec["h"])
        ns[name] = serialization.unpack(name, spec, [bytearray(b) for b in packer.buffers])
        holdings.arrived(name, ns[name], spec)
        inputs[name] = spec
    return inputs


def _results(ns, holdings, **h):
    packer = serialization.Packer()
    out = pack_results({"binds": [], **h}, "c1", ns, holdings, packer)
    values = {n: serialization.unpack(n, spec, packer.buffers) for n, spec in out["values"].items()}
    return out, values


def test_inputs_changed_in_place_come_back_and_unchanged_ones_do_not():
    holdings = Holdings()
    ns = {"lst": [1, 2], "arr": np.arange(4), "same": {"k": [1]}, "words": {"a", "b", "c"}}
    inputs = _arrive(holdings, ns, {"words": "the kernel's pickle of the set, in its own order"})
    ns["lst"].append(3)
    ns["arr"][:2] = 0
    out, values = _results(ns, holdings, inputs=inputs)
    assert sorted(values) == ["arr", "lst"]  # not `words`: unchanged here, whatever the kernel hashed
    assert values["lst"] == [1, 2, 3] and values["arr"].tolist() == [0, 0, 2, 3]
    assert holdings.held["lst"] == out["values"]["lst"]["h"]  # what the kernel now holds
    # the next cell keeps them; nothing changed since: nothing comes back
    out, values = _results(ns, holdings, keep={n: holdings.held[n] for n in ns})
    assert values == {} and out["refs"] == {}


def test_a_bound_name_comes_back_once_and_is_not_also_taken_for_a_changed_input():
    holdings = Holdings()
    ns = {"a": [1]}
    inputs = _arrive(holdings, ns)
    ns["a"] = ns["a"] + [2]
    ns["b"] = 5
    out, values = _results(ns, holdings, inputs=inputs, binds=["a", "b"])
    assert values == {"a": [1, 2], "b": 5}


def test_a_deleted_input_is_reported_and_forgotten():
    holdings = Holdings()
    ns = {"gone": 5, "kept": 6}
    inputs = _arrive(holdings, ns)
    del ns["gone"]
    out, values = _results(ns, holdings, inputs=inputs, binds=["gone"])
    assert out["deleted"] == ["gone"] and values == {}
    assert "gone" not in holdings.held and "kept" in holdings.held


def test_a_changed_input_not_brought_back_is_not_taken_for_the_kernels_copy_either():
    """--no-out / --out others: the kernel's value is sent again when next read."""
    for options in ({"no_out": True}, {"out": ["other"]}):
        holdings = Holdings()
        ns = {"lst": [1, 2], "other": 0}
        inputs = _arrive(holdings, ns)
        sent = holdings.held["lst"]
        ns["lst"].append(3)
        out, values = _results(ns, holdings, inputs=inputs, **options)
        assert "lst" not in values
        assert holdings.held["lst"] != sent  # a later `keep` of the old hash asks for a resend


def test_an_input_that_no_longer_pickles_stays_here_as_a_reference():
    import threading

    holdings = Holdings()
    ns = {"box": [1]}
    inputs = _arrive(holdings, ns)
    ns["box"].append(threading.Lock())
    out, values = _results(ns, holdings, inputs=inputs)
    assert values == {} and "box" in out["refs"] and "cannot be pickled" in out["refs"]["box"]["why"]


class _Counted:
    """Counts how often it is pickled."""

    pickled = 0

    def __init__(self):
        self.steps = 0

    def __reduce__(self):
        _Counted.pickled += 1
        return (_Counted, (), self.__dict__)


def test_a_value_the_kernel_holds_as_a_reference_is_neither_pickled_nor_brought_back():
    """A model that lives on the worker (a RemoteValue in the kernel) and is trained in place: the
    worker's copy is the value; pickling it after every cell would copy it off the GPU for nothing."""
    holdings = Holdings()
    ns = {"model": _Counted()}
    _arrive(holdings, ns)
    ns["model"].steps += 1
    _Counted.pickled = 0
    out, values = _results(ns, holdings, keep={"model": holdings.held["model"]}, references=["model"])
    assert values == {} and out["refs"] == {} and _Counted.pickled == 0


def test_values_that_pickle_otherwise_in_another_process_are_not_taken_for_changed():
    """The kernel's hash of a tensor torch pickles itself (here: one with an attribute of its own),
    a set of strings or a strided numpy view differs from this worker's pickle of the same value:
    none of them comes back unless the cell changed it."""
    torch = pytest.importorskip("torch")
    holdings = Holdings()
    tagged = torch.arange(6.0)
    tagged.tag = "mine"
    ns = {"t": tagged, "view": np.arange(12.0)[::3], "words": {"x", "y"}, "arr": np.ones(5)}
    inputs = _arrive(holdings, ns, {n: f"the kernel's hash of {n}" for n in ("t", "view", "words")})
    out, values = _results(ns, holdings, inputs=inputs)
    assert values == {}
    ns["t"][0] = 5.0
    ns["view"][1] = 7.0
    out, values = _results(ns, holdings, keep={n: holdings.held[n] for n in ns})
    assert sorted(values) == ["t", "view"] and values["t"][0] == 5.0 and values["view"][1] == 7.0


def test_a_cpu_tensor_that_came_out_of_band_is_known_by_the_kernels_hash():
    """Its pickle is the same in both processes (jupyter_gpu._wire.tensors): it is not pickled again as
    it arrives, does not come back unchanged, and comes back when the cell changed it."""
    torch = pytest.importorskip("torch")
    holdings = Holdings()
    ns = {"t": torch.arange(8.0), "p": torch.nn.Parameter(torch.ones(3))}
    inputs = _arrive(holdings, ns)
    assert holdings.seen == {n: inputs[n]["h"] for n in ns}
    out, values = _results(ns, holdings, inputs=inputs)
    assert values == {}
    with torch.no_grad():
        ns["p"].mul_(2)
    out, values = _results(ns, holdings, keep={n: holdings.held[n] for n in ns})
    assert list(values) == ["p"] and values["p"].tolist() == [2.0, 2.0, 2.0]


def test_a_value_holding_device_memory_stays_on_the_worker_without_being_copied():
    """A tensor on a device other than the CPU (here torch's `meta` device: no GPU is needed to
    hold one) is not brought back, nor is a model holding one; they come back as references
    that say what they are.  A CPU value next to them still comes back."""
    torch = pytest.importorskip("torch")
    holdings = Holdings()
    ns = {"model": torch.nn.Linear(3, 2)}
    inputs = _arrive(holdings, ns)
    ns["model"].to("meta")  # moved in place, as model.cuda() does
    ns.update(t=torch.empty(4, 5, device="meta"), cpu=torch.ones(2))
    out, values = _results(ns, holdings, inputs=inputs, binds=["t", "cpu"])
    assert list(values) == ["cpu"]
    assert sorted(out["refs"]) == ["model", "t"]
    assert out["refs"]["t"]["t"] == "torch.Tensor [4, 5] meta"
    assert "meta memory" in out["refs"]["t"]["why"] and ".cpu()" in out["refs"]["t"]["why"]
    assert "meta memory" in out["refs"]["model"]["why"]


def test_names_bound_or_deleted_where_the_text_does_not_show_come_back_too():
    """`from m import *`, `exec`, `globals()[k] = v`: found by what each name is bound to before
    and after the cell; the shell's own `_` names stay; a module comes back (by its name), as a
    bound one does."""
    holdings = Holdings()
    ns = {"old": 1, "stale": [1], "same": "kept", "In": [], "_": None}
    before = before_cell(ns)
    exec("from math import sqrt\nimport json\nnew = 2\nstale = [2]\n_hidden = 3\ndel old\n_ = 5", {}, ns)
    packer = serialization.Packer()
    out = pack_results({"binds": []}, "c1", ns, holdings, packer, before)
    assert sorted(out["values"]) == ["json", "new", "sqrt", "stale"]
    assert out["values"]["json"]["t"] == "module 'json'" and out["values"]["json"]["b"] == []
    assert out["deleted"] == ["old"]
    out = pack_results({"binds": [], "no_out": True}, "c2", ns, holdings, serialization.Packer(), before_cell(ns))
    assert out["values"] == {} and "deleted" not in out


def _back(out: dict, packer, kernel_ns: dict) -> dict:
    """What the kernel unpacks of a ``done``'s values (a group's refs taken from ``kernel_ns``)."""
    from jupyter_gpu._wire import sharing

    return sharing.unpack_values(out["values"], [bytearray(b) for b in packer.buffers], None, kernel_ns)


def test_a_view_of_an_unchanged_input_comes_back_as_a_view_of_the_kernels_own_array():
    holdings = Holdings()
    kernel = {"a": np.zeros((3, 4))}
    ns = dict(kernel)
    inputs = _arrive(holdings, ns)
    before = before_cell(ns)
    ns["b"] = ns["a"][:2, :2]
    packer = serialization.Packer()
    out = pack_results({"binds": ["b"], "inputs": inputs}, "c1", ns, holdings, packer, before)
    spec = out["values"]["b"]
    assert spec["g"] == {"n": 0, "r": ["a"]} and spec["b"] == [], "a's bytes must not come back"
    assert list(out["values"]) == ["b"]
    b = _back(out, packer, kernel)["b"]
    b[0, 0] = 1
    assert kernel["a"][0, 0] == 1
    # the next cell keeps both: nothing changed, nothing comes back
    out = pack_results({"binds": [], "keep": dict(holdings.held)}, "c2", ns, holdings, serialization.Packer(),
                       before_cell(ns))
    assert out["values"] == {}


def test_a_change_through_a_view_brings_back_its_base_and_the_view_together_marked_in_place():
    holdings = Holdings()
    ns = {"a": np.zeros((3, 4))}
    inputs = _arrive(holdings, ns)
    ns["b"] = ns["a"][:2, :2]
    pack_results({"binds": ["b"], "inputs": inputs}, "c1", ns, holdings, serialization.Packer(), before_cell(ns))
    before = before_cell(ns)
    ns["b"][0, 0] = 1  # `b[0, 0] = 1`: the cell reads b; the kernel keeps a with it (they share)
    packer = serialization.Packer()
    out = pack_results({"binds": [], "keep": {"a": holdings.held["a"], "b": holdings.held["b"]}}, "c2", ns,
                       holdings, packer, before)
    assert sorted(out["values"]) == ["a", "b"]
    assert {v["h"] for v in out["values"].values()} == {holdings.held["a"]} and holdings.held["a"].startswith("g")
    assert all(v["i"] for v in out["values"].values())
    got = _back(out, packer, {})
    assert got["a"][0, 0] == 1 and np.shares_memory(got["a"], got["b"])


def test_names_bound_to_one_object_come_back_as_one_and_a_module_with_the_submodule_imported():
    holdings = Holdings()
    ns = {}
    before = before_cell(ns)
    exec("import email.mime.text\nlst = [1]\nx = y = lst", {}, ns)
    packer = serialization.Packer()
    code = "import email.mime.text\nlst = [1]\nx = y = lst"
    out = pack_results({"binds": ["email", "lst", "x", "y"], "code": code}, "c1", ns, holdings, packer, before)
    got = _back(out, packer, {})
    assert got["x"] is got["y"] is got["lst"]
    assert b"email.mime.text" in packer.buffers[out["values"]["email"]["p"]["w"]].tobytes()
