"""Names whose values share objects: found, pickled as one group, sharing again where they arrive;
modules by their names; values changed in place copied into the receiver's own objects."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from jupyter_gpu._wire import serialization, sharing
from jupyter_gpu.errors import SerializationError


class Node:
    """An object that refers to another (as an axes refers to its figure, and the figure to it)."""

    def __init__(self, other=None):
        self.other, self.data = other, []


def _found(values: dict) -> sharing.Sharing:
    share = sharing.Sharing(values)
    for name, value in values.items():
        share.note(name, serialization.pickle_value(name, value, watch=share.watch))
    return share


def _send(members, refs, values, there: dict) -> tuple[dict, list]:
    """Pickle a group, unpack it where ``there`` is the receiver's namespace: (name -> value, wire)."""
    joint, used = sharing.pickle_group(members, refs, values)
    packer = serialization.Packer()
    specs = {n: {**packer.pack(joint[n]), "g": {"n": i, "r": used}} for i, n in enumerate(members)}
    wire = [bytearray(b) for b in packer.buffers]  # writable, as the wire and shared memory give it
    return sharing.unpack_values(specs, wire, None, there), wire


def test_names_sharing_an_object_an_array_buffer_or_holding_one_another_are_grouped():
    lst, a = [0], np.zeros((3, 4))
    first = Node()
    second = Node(first)
    first.other = second
    share = _found({"x": lst, "y": lst, "a": a, "b": a[:2, :2], "c": np.zeros(2), "fig": first, "ax": second,
                    "alone": {"k": 1}})
    assert sorted(share.groups(share.values)) == [["a", "b"], ["ax", "fig"], ["x", "y"]]


def test_what_must_go_again_with_a_changed_name_and_what_is_referred_to():
    a = np.zeros((3, 4))
    holder, inner = Node(), Node()
    holder.other = inner
    share = _found({"a": a, "b": a[:2, :2], "holder": holder, "inner": inner})
    # a new view of an unchanged array: the view goes, as a view of the array the receiver holds
    assert share.split(["a", "b"], ["b"]) == (["b"], ["a"])
    # the array changed: the view must be rebuilt on the new one
    assert share.split(["a", "b"], ["a"]) == (["a", "b"], [])
    # a value held inside another goes with it; the one that holds it, to hold the new one
    assert share.split(["holder", "inner"], ["inner"]) == (["holder", "inner"], [])
    assert share.split(["holder", "inner"], ["holder"]) == (["holder"], ["inner"])
    # nothing changed (held as separate values): the whole group goes once
    assert share.split(["a", "b"], []) == (["a", "b"], [])


def test_a_view_of_an_array_the_receiver_holds_arrives_as_a_view_of_it_without_its_bytes():
    big = np.arange(1 << 16, dtype=np.float64)
    values = {"big": big, "part": big[::-2][10:20]}
    theirs = big.copy()  # the receiver's own copy of `big`
    got, wire = _send(["part"], ["big"], values, {"big": theirs})
    assert sum(len(b) for b in wire) < 1024, "the array the receiver holds must not be sent"
    part = got["part"]
    assert np.array_equal(part, values["part"]) and part.base is theirs
    part[0] = -1
    assert theirs[(1 << 16) - 21] == -1


def test_a_group_arrives_sharing_as_it_did_and_its_hash_follows_content():
    a = np.zeros((3, 4))
    lst = [1]
    first, second = Node(), Node()
    first.other, second.other = second, first
    values = {"a": a, "b": a.T[1:, ::-1], "x": lst, "y": lst, "fig": first, "ax": second}
    got, _ = _send(sorted(values), [], values, {})
    joint, _ = sharing.pickle_group(sorted(values), [], values)
    again, _ = sharing.pickle_group(sorted(got), [], got)  # what arrived pickles as it left: kept next time
    assert joint["a"].hash == joint["x"].hash == again["a"].hash
    got["b"][0, 0] = 5
    assert got["a"][2, 1] == 5 and np.shares_memory(got["a"], got["b"])
    assert got["x"] is got["y"]
    assert got["fig"].other is got["ax"] and got["ax"].other is got["fig"]
    assert joint["a"].hash.startswith(sharing.GROUP)
    lst.append(2)
    assert sharing.pickle_group(sorted(values), [], values)[0]["a"].hash != joint["a"].hash


def test_a_group_that_refers_to_a_name_the_receiver_lacks_is_an_error_for_its_names_only():
    a = np.zeros(4)
    joint, used = sharing.pickle_group(["v"], ["a"], {"a": a, "v": a[1:]})
    packer = serialization.Packer()
    specs = {"v": {**packer.pack(joint["v"]), "g": {"n": 0, "r": used}},
             "other": packer.pack(serialization.pickle_value("other", 3))}
    got = sharing.unpack_values(specs, [bytearray(b) for b in packer.buffers], None, {})
    assert got["other"] == 3
    assert isinstance(got["v"], SerializationError) and "refer to a, which is not here" in str(got["v"])


def test_a_changed_value_is_copied_into_the_receivers_own_object_when_that_keeps_its_sharing():
    mine = [0]
    alias = {"k": mine}
    assert sharing.in_place([mine], [[0, 1]]) and alias["k"] == [0, 1]
    d = {"a": 1}
    assert sharing.in_place([d], [{"b": 2}]) and d == {"b": 2}
    base = np.zeros(4)
    view = base[1:3]
    new_base = np.arange(4.0)
    assert sharing.in_place([base, view], [new_base, new_base[1:3]]) and base.tolist() == [0, 1, 2, 3]
    # a shape that differs, another type, or a group of containers: not in place (rebound), all or none
    assert not sharing.in_place([base], [np.zeros(5)])
    assert not sharing.in_place([mine], [(0, 1)])
    outer, inner = {"k": [1]}, [1]
    assert not sharing.in_place([outer, inner], [{"k": [2]}, [2]]) and inner == [1]
    assert not sharing.in_place([mine, base], [[9], np.zeros(5)]) and mine == [0, 1]


def test_which_names_of_a_done_are_updated_in_place():
    specs = {"x": {"h": "1", "i": True}, "y": {"h": "2"},
             "a": {"h": "g1", "g": {"n": 0, "r": []}, "i": True}, "b": {"h": "g1", "g": {"n": 1, "r": []}, "i": True},
             "c": {"h": "g2", "g": {"n": 0, "r": []}, "i": True}, "d": {"h": "g2", "g": {"n": 1, "r": []}}}
    got = {n: 0 for n in specs}
    assert sharing.changed_in_place(specs, got) == [["x"], ["a", "b"]]
    assert sharing.changed_in_place({"y": {"h": "2"}}, {"y": 0}) == []


def test_a_module_travels_as_its_name_with_the_submodules_a_cell_imported():
    p = serialization.pickle_value("json", json)
    assert p.buffers == [] and len(p.data) < 120 and p.type_name == "module 'json'"
    assert serialization.unpickle_value("json", p.data, []) is json
    assert serialization.pickle_value("j", json).hash == p.hash
    sys.modules.pop("email.mime.audio", None)
    import email

    p = serialization.pickle_value("email", email, submodules=("email.mime.audio",))
    assert serialization.unpickle_value("email", p.data, []) is email and "email.mime.audio" in sys.modules


def test_a_module_that_cannot_be_imported_here_says_so():
    made = types.ModuleType("jgpu_made_for_a_moment")
    sys.modules[made.__name__] = made
    try:
        data = serialization.pickle_value("m", made).data
    finally:
        del sys.modules[made.__name__]
    with pytest.raises(SerializationError, match="module 'jgpu_made_for_a_moment' cannot be imported here: "
                                                  "ModuleNotFoundError"):
        serialization.unpickle_value("m", data, [])


def test_a_pickle_says_which_watched_values_it_holds():
    inner, arr, lst = Node(), np.zeros(2), [1]
    outer = Node(inner)
    outer.data = [arr, lst]
    watch = {id(inner): "inner", id(arr): "arr", id(lst): "lst"}
    p = serialization.pickle_value("outer", outer, watch=watch)
    assert p.reached == {"inner", "arr"}  # a plain list inside another value is not seen (by design)
    assert p.hash == serialization.pickle_value("outer", outer).hash  # watching does not change the pickle


def test_related_finds_what_an_input_shares_with_the_names_the_receiver_holds():
    """The kernel pulls into a cell's transfer the held names its inputs share with: the same
    object, memory of one array, one holding the other (either way), or last sent in one group."""
    a, lst, inner = np.zeros(8), [1], Node()
    outer = Node(inner)
    values = {"view": a[2:4], "a": a, "other": np.zeros(8), "x": lst, "y": lst, "inner": inner, "outer": outer,
              "mate": {"k": 1}, "stranger": {"k": 2}}
    share = sharing.Sharing(values)
    share.note("outer", serialization.pickle_value("outer", outer, watch=share.watch))
    held = {"mate": "gabc", "x": "gabc", "stranger": "0123"}
    assert share.related("view") == ["a"]
    assert share.related("x", held) == ["mate", "y"]
    assert share.related("inner") == ["outer"] and share.related("outer") == ["inner"]
    assert share.related("stranger", held) == [] and share.related("not-a-candidate") == []
