"""A large sync read, sent and written at once (issue 21's first sync, filestream.py): the header made
from the manifest lays the bytes out as ``pack`` would; the kernel's reader fills the buffers on its
own thread while a sender takes each, in a window of buffers used again and again; the worker writes
each file as soon as its bytes arrive (``framing.Assembly`` + ``apply(stream=)``), also in a window; a
file that changed after the manifest was made is sent as zeros and, checked against its hash, never
written - the mirror keeps what it had; a request cut off half way says so to the thread waiting on
it.  Real files in tmp_path, real threads, real frames."""
from __future__ import annotations

import os
import threading
import time

import pytest
import xxhash

from jupyter_gpu._wire import filestream, framing
from jupyter_gpu._wire.filetree import BLOB, Tree, apply, delta, pack


def _tree(root, files: dict) -> Tree:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    old = time.time_ns() - 86_400 * 10**9  # not racy: as files that were there before
    for rel in files:
        os.utime(root / rel, ns=(old, old))
    return Tree(str(root), watch=False)


FILES = {"empty": b"", "a/small.txt": b"s" * 100, "a/b/deep.py": b"x = 1\n", "big.bin": os.urandom(2 * BLOB + 12345),
         **{f"many/{i:02}.txt": os.urandom(300_000 + i) for i in range(30)}}  # ~9 MB of small files: 3 blobs


def test_the_layout_fills_buffers_in_order_and_the_reader_puts_each_files_bytes_there(tmp_path):
    t = _tree(tmp_path, FILES)
    put, _ = delta({}, t.manifest)
    entries, sizes = filestream.layout(put, t.manifest)
    packed, _ = pack(str(tmp_path), put, t.manifest)
    assert sorted(e[:4] for e in entries) == sorted(e[:4] for e in packed) and all(n <= BLOB for n in sizes)
    assert [e[4] for e in entries] == sorted(e[4] for e in entries)  # never back to an earlier buffer
    assert entries[-1][0] == "big.bin"  # the small files first: created while the big one's bytes come
    reader = filestream.Reader(str(tmp_path), entries, sizes, window=None)
    buffers = [bytes(reader.take(i)) for i in range(len(sizes))]
    for rel, size, _, _, index, offset in entries:
        data, i, off = b"", index, offset
        while len(data) < size:
            data += buffers[i][off:off + size - len(data)]
            i, off = i + 1, 0
        assert data == FILES[rel], rel
    assert reader.spoiled == []


def test_written_as_it_arrives_through_frames_on_threads(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    t = _tree(src, FILES)
    put, _ = delta({}, t.manifest)
    entries, sizes = filestream.layout(put, t.manifest)
    reader = filestream.Reader(str(src), entries, sizes, window=2)  # (a 2-buffer file: still it goes)
    frames = framing.streamed({"type": "status"}, sizes, reader.take, reader.release)  # the kernel's send
    head, _ = framing.parse_first(next(frames))
    held = []

    def recv():  # the wire: each frame a fresh bytearray, as websockets gives them
        held.append(reader.held)
        return bytearray(next(frames))

    assembly = framing.Assembly(head, recv, window=2, first=0)  # the worker's reader thread
    filler = threading.Thread(target=assembly.fill)
    filler.start()
    skipped = apply(str(dst), entries, [], atomic=False, threads=4, stream=assembly, check=True)
    assembly.abandon()
    filler.join()
    assert skipped == [] and max(held) <= 2  # never more than its window read ahead
    assert all(b is None for b in assembly.buffers)  # each let go once its files were written
    with Tree(str(dst), watch=False) as u:
        assert u.manifest == t.manifest


def test_a_file_changed_after_the_manifest_is_not_written_and_the_old_one_stays(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    t = _tree(src, FILES)
    put, _ = delta({}, t.manifest)
    apply(str(dst), *pack(str(src), put, t.manifest), atomic=False)  # the worker's mirror: the old files
    changed = {"many/03.txt": b"changed after the manifest", "big.bin": os.urandom(2 * BLOB + 12345)}
    for rel, data in changed.items():
        (src / rel).write_bytes(data)  # (a new mtime: not what the manifest says)
    (src / "a/small.txt").unlink()
    entries, sizes = filestream.layout(put, t.manifest)  # the manifest as it was
    reader = filestream.Reader(str(src), entries, sizes, window=None)
    buffers = [reader.take(i) for i in range(len(sizes))]
    assert sorted(reader.spoiled) == ["a/small.txt", "big.bin", "many/03.txt"]
    e = next(e for e in entries if e[0] == "many/03.txt")
    assert bytes(buffers[e[4]][e[5]:e[5] + e[1]]) == bytes(e[1])  # zeros, never other memory
    skipped = apply(str(dst), entries, buffers, atomic=False, check=True)
    assert sorted(skipped) == sorted(reader.spoiled)
    assert (dst / "many/03.txt").read_bytes() == FILES["many/03.txt"]  # as it was
    assert (dst / "big.bin").read_bytes() == FILES["big.bin"]
    assert (dst / "a/small.txt").read_bytes() == FILES["a/small.txt"]
    assert (dst / "many/04.txt").read_bytes() == FILES["many/04.txt"]


def test_a_racy_file_is_checked_by_its_bytes(tmp_path):
    (tmp_path / "now.txt").write_bytes(b"one")  # written just now: racy
    t = Tree(str(tmp_path), watch=False)
    entries, sizes = filestream.layout(["now.txt"], t.manifest)
    reader = filestream.Reader(str(tmp_path), entries, sizes)
    reader.take(0)
    assert reader.spoiled == []
    (tmp_path / "now.txt").write_bytes(b"two")  # same size, maybe the same mtime tick
    st = os.stat(tmp_path / "now.txt")
    os.utime(tmp_path / "now.txt", ns=(st.st_atime_ns, t.manifest["now.txt"][1]))  # the very same mtime
    reader = filestream.Reader(str(tmp_path), entries, sizes)
    reader.take(0)
    assert reader.spoiled == ["now.txt"]
    assert xxhash.xxh3_128_hexdigest(b"one") == entries[0][3]


def test_a_request_cut_off_half_way_fails_the_waiter_and_nothing_waits_for_ever(tmp_path):
    buffers = [b"a" * 10, os.urandom(BLOB + 5), b"xyz"]
    frames = framing.encode({"type": "status"}, buffers)
    head, _ = framing.parse_first(frames[0])
    rest = iter(frames[1:3])  # the connection drops after the second buffer's first frame

    def recv():
        try:
            return next(rest)
        except StopIteration:
            raise ConnectionError("dropped") from None

    assembly = framing.Assembly(head, recv, eager=True)
    with pytest.raises(ConnectionError):
        assembly.fill()
    assembly.wait(0)  # the first buffer came whole
    with pytest.raises(framing.Incomplete, match="after 1 of its 3 buffers"):
        assembly.wait(1)
    with pytest.raises(framing.Incomplete):
        assembly.wait()
