"""The worker's mirror of a kernel's directory (jupyter_gpu_worker/mirror.py): a sync from nothing
writes the files and then makes its Tree (no events of its own writes to reconcile), with a manifest
that is exactly the kernel's, less the files the kernel's reader found changed (skipped); what a
cell then writes in the mirror is found as before."""
from __future__ import annotations

import os

from jupyter_gpu._wire import filetree
from jupyter_gpu_worker.mirror import Mirrors


def _tree(root, n=120):
    for i in range(n):
        p = root / f"d{i % 4}" / f"f{i:03}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"file {i} " * (i % 9))
    past = 10**18
    for p in root.rglob("*"):
        os.utime(p, ns=(past, past))


def test_a_sync_from_nothing_matches_the_kernels_manifest_and_sees_the_cells_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    src = tmp_path / "src"
    _tree(src)
    with filetree.Tree(str(src), watch=False) as t:
        entries, buffers = filetree.pack(str(src), sorted(t.manifest), t.manifest)
        manifest = dict(t.manifest)
    spoiled = entries[5][0]
    entries[5][3] = "0" * 32  # its bytes do not hash to its entry (the kernel read it as it changed)
    mirrors = Mirrors()
    try:
        path = mirrors.receive({"root": str(src), "base": "", "put": entries, "check": True}, buffers)
        m = mirrors.mirrors[str(src)]
        assert m.tree.watching
        assert m.tree.manifest == {r: e for r, e in manifest.items() if r != spoiled}
        assert not os.path.exists(os.path.join(path, spoiled))
        with filetree.Tree(path, watch=False) as check:  # what is on disk, read and hashed
            assert check.manifest == m.tree.manifest and check.digest == m.tree.digest
        mirrors.began()
        with open(os.path.join(path, "d1", "new.txt"), "w") as f:
            f.write("made by the cell")
        os.remove(os.path.join(path, entries[0][0]))
        files, bufs = mirrors.after()
        assert [e[0] for e in files["put"]] == ["d1/new.txt"] and files["drop"] == [entries[0][0]]
        assert bytes(bufs[0]) == b"made by the cell"
    finally:
        mirrors.remove()


def test_a_sync_from_nothing_whose_writes_fail_leaves_no_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    src = tmp_path / "src"
    _tree(src, 10)
    with filetree.Tree(str(src), watch=False) as t:
        entries, buffers = filetree.pack(str(src), sorted(t.manifest), t.manifest)
    entries[3][1] += 10**9  # its bytes are not in the buffers
    mirrors = Mirrors()
    try:
        try:
            mirrors.receive({"root": str(src), "base": "", "put": entries}, buffers)
        except ValueError:
            pass
        else:
            raise AssertionError("the sync should have failed")
        assert str(src) not in mirrors.mirrors
        assert not os.path.exists(mirrors.path_of(str(src)))
    finally:
        mirrors.remove()
