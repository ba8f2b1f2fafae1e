"""Pickling values with out-of-band buffers, content hashes, and the shared-memory path."""
import threading

import numpy as np
import pytest

from jupyter_gpu._wire import serialization, shm
from jupyter_gpu.errors import SerializationError


def test_numpy_buffers_travel_out_of_band_without_a_copy():
    a = np.arange(1 << 20, dtype=np.float64)
    p = serialization.pickle_value("a", a)
    assert len(p.data) < 1024, "the array's bytes must not be inside the pickle"
    assert sum(b.nbytes for b in p.buffers) == a.nbytes
    packer = serialization.Packer()
    spec = packer.pack(p)
    wire = [bytearray(b) for b in packer.buffers]
    b = serialization.unpack("a", spec, wire)
    assert np.array_equal(a, b) and b.flags.writeable


def test_hash_follows_content():
    a = np.zeros(1000)
    h1 = serialization.pickle_value("a", a).hash
    assert serialization.pickle_value("a", a.copy()).hash == h1
    a[3] = 1
    assert serialization.pickle_value("a", a).hash != h1


def test_a_large_buffer_hashed_on_several_threads_still_follows_every_chunk(monkeypatch):
    """Over PARALLEL_HASH a buffer is hashed by chunks: a change in any chunk, the last and
    partial one included, changes the hash, and the same content hashes the same."""
    monkeypatch.setattr(serialization, "PARALLEL_HASH", 1 << 16)
    monkeypatch.setattr(serialization, "HASH_CHUNK", 1 << 12)
    a = np.zeros((1 << 17) + 3, dtype=np.uint8)
    h = serialization.pickle_value("a", a).hash
    assert serialization.pickle_value("a", a.copy()).hash == h
    for where in (0, 5000, a.size - 1):
        b = a.copy()
        b[where] = 1
        assert serialization.pickle_value("a", b).hash != h, where


def test_unpicklable_value_names_the_variable():
    with pytest.raises(SerializationError, match=r"variable 'lock' \(_thread.lock\) cannot be pickled"):
        serialization.pickle_value("lock", threading.Lock())


def test_lent_segment_is_used_in_place_and_recycled_once_its_value_dies():
    pool, reader = shm.SegmentPool(), shm.SegmentReader()
    try:
        a = np.random.default_rng(0).random(1 << 18)
        for round_ in range(3):
            packer = serialization.Packer(shm_pool=pool)
            spec = packer.pack(serialization.pickle_value("a", a))
            assert packer.shm_bytes == a.nbytes and any("shm" in r for r in spec["b"])
            b = serialization.unpack("a", spec, [bytearray(x) for x in packer.buffers], reader)
            assert np.array_equal(a, b) and b.flags.writeable
            pool.lent("peer")
            assert reader.drain_returned() == [], "a value still alive keeps its segment"
            del b
            pool.returned(reader.drain_returned())
        assert len(pool._segments) == 1, "a returned segment must be reused, not a new one made"
    finally:
        pool.close()


def test_segments_lent_to_a_peer_that_is_gone_are_reclaimed():
    pool = shm.SegmentPool()
    try:
        pool.put(memoryview(np.ones(1 << 18)))
        pool.lent("old-worker")
        pool.reclaim("new-worker")
        pool.put(memoryview(np.ones(1 << 18)))
        assert len(pool._segments) == 1
    finally:
        pool.close()


def test_reader_refuses_paths_outside_its_prefix():
    with pytest.raises(ValueError, match="refusing"):
        shm.SegmentReader().take({"shm": "../etc/passwd", "n": 1})


def test_plain_values_pickle_as_cloudpickle_would_and_keep_their_hash():
    import cloudpickle

    for value in (1, -(2**70), 1.5, True, None, "text", b"bytes", 2j):
        p = serialization.pickle_value("v", value)
        assert p.data == cloudpickle.dumps(value, protocol=serialization.PROTOCOL)  # same bytes, same hash
        assert serialization.unpickle_value("v", p.data, []) == value
    # a subclass is not plain: it goes through cloudpickle, with its class
    class Flag(int):
        pass

    back = serialization.unpickle_value("v", serialization.pickle_value("v", Flag(3)).data, [])
    assert type(back).__name__ == "Flag" and back == 3


def test_a_cells_function_keeps_the_file_it_was_compiled_in():
    # cloudpickle would name every code object "<dynamic-code>": no source for inspect or pdb,
    # no "Cell In[n]" in a traceback, once a %%gpu cell's function crossed to the kernel
    ns = {"__name__": "__main__"}
    exec(compile("def outer(x):\n    def inner():\n        return x\n    return inner\n", "/tmp/ipykernel_1/42.py",
                 "exec"), ns)
    p = serialization.pickle_value("outer", ns["outer"])
    assert serialization.pickle_value("outer", ns["outer"]).hash == p.hash  # still deterministic
    back = serialization.unpickle_value("outer", p.data, [])
    assert back.__code__.co_filename == back(1).__code__.co_filename == "/tmp/ipykernel_1/42.py"
    assert back(1)() == 1 and back.__code__.co_firstlineno == 1
