"""A directory kept as a manifest of content hashes (issue 21, another filesystem): git's ignore rules
(checked against git itself where it is installed), the manifest kept current with and without inotify
through every kind of change, and files packed for the wire and written on the other side, never
outside its root.  Real files in tmp_path; no sleeps: inotify queues an event as the write happens."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import xxhash

from jupyter_gpu._wire import fileapply, filetree, inotify
from jupyter_gpu._wire.filetree import BLOB, Ignore, Tree, apply, delta, pack

# (ignore files, path, is_dir, ignored)
IGNORE_CASES = [
    ({".gitignore": "*.log"}, "a.log", False, True),
    ({".gitignore": "*.log"}, "d/e/a.log", False, True),
    ({".gitignore": "*.log"}, "a.txt", False, False),
    ({".gitignore": "/a.log"}, "a.log", False, True),  # a leading '/' anchors
    ({".gitignore": "/a.log"}, "d/a.log", False, False),
    ({".gitignore": "d/a.log"}, "d/a.log", False, True),  # so does a '/' in the middle
    ({".gitignore": "d/a.log"}, "x/d/a.log", False, False),
    ({".gitignore": "doc/*.txt"}, "doc/a.txt", False, True),
    ({".gitignore": "doc/*.txt"}, "doc/x/a.txt", False, False),  # '*' stops at '/'
    ({".gitignore": "build/"}, "build", True, True),
    ({".gitignore": "build/"}, "build", False, False),  # a trailing '/' means directories only
    ({".gitignore": "build/"}, "build/x.txt", False, True),  # inside an ignored directory
    ({".gitignore": "build/"}, "src/build/y/z.txt", False, True),
    ({".gitignore": "*.log\n!keep.log"}, "keep.log", False, False),
    ({".gitignore": "*.log\n!keep.log"}, "other.log", False, True),
    ({".gitignore": "logs/\n!logs/keep.log"}, "logs/keep.log", False, True),  # a parent excluded: no way back
    ({".gitignore": "logs/*\n!logs/keep.log"}, "logs/keep.log", False, False),
    ({".gitignore": "logs/*\n!logs/keep.log"}, "logs/other.log", False, True),
    ({".gitignore": "**/foo"}, "foo", False, True),
    ({".gitignore": "**/foo"}, "a/b/foo", False, True),
    ({".gitignore": "a/**"}, "a/x", False, True),
    ({".gitignore": "a/**"}, "a/x/y", False, True),
    ({".gitignore": "a/**"}, "b/a/x", False, False),
    ({".gitignore": "a/**/b"}, "a/b", False, True),
    ({".gitignore": "a/**/b"}, "a/x/y/b", False, True),
    ({".gitignore": "a/**/b"}, "a/xb", False, False),
    ({".gitignore": "?.txt"}, "a.txt", False, True),
    ({".gitignore": "?.txt"}, "ab.txt", False, False),
    ({".gitignore": "[abc].txt"}, "b.txt", False, True),
    ({".gitignore": "[!abc].txt"}, "b.txt", False, False),
    ({".gitignore": "[!abc].txt"}, "d.txt", False, True),
    ({".gitignore": "x[a-c][0-9]"}, "xb7", False, True),
    ({".gitignore": "x[a-c][0-9]"}, "xd7", False, False),
    ({".gitignore": "#foo"}, "#foo", False, False),  # a comment
    ({".gitignore": "\\#foo"}, "#foo", False, True),
    ({".gitignore": "\\!bang"}, "!bang", False, True),
    ({".gitignore": "foo   "}, "foo", False, True),  # trailing spaces dropped
    ({".gitignore": "foo\\ "}, "foo ", False, True),  # unless escaped
    ({".gitignore": "\n\n# only comments\n"}, "x", False, False),
    ({".gitignore": "*.dat", "sub/.gitignore": "!keep.dat"}, "sub/keep.dat", False, False),  # deeper wins
    ({".gitignore": "*.dat", "sub/.gitignore": "!keep.dat"}, "keep.dat", False, True),
    ({"sub/.gitignore": "*.dat"}, "sub/x/a.dat", False, True),
    ({"sub/.gitignore": "*.dat"}, "a.dat", False, False),  # only below its directory
    ({"sub/.gitignore": "/top.dat"}, "sub/top.dat", False, True),
    ({"sub/.gitignore": "/top.dat"}, "sub/x/top.dat", False, False),
    # jupyter-gpu's own: always ignored, and .jupyter-gpu-ignore read after .gitignore
    ({}, ".git/config", False, True),
    ({}, "pkg/__pycache__/m.cpython-311.pyc", False, True),
    ({}, "m.pyc", False, True),
    ({}, "node_modules/x/index.js", False, True),
    ({}, ".ipynb_checkpoints/a-checkpoint.ipynb", False, True),
    ({".jupyter-gpu-ignore": "!node_modules/"}, "node_modules/x/index.js", False, False),
    ({".gitignore": "*.csv\ndata/", ".jupyter-gpu-ignore": "!*.csv\n!data/"}, "a.csv", False, False),
    ({".gitignore": "*.csv\ndata/", ".jupyter-gpu-ignore": "!*.csv\n!data/"}, "data/x.bin", False, False),
    ({".gitignore": "*.csv", ".jupyter-gpu-ignore": "*.bin"}, "a.bin", False, True),
]
GIT_KNOWS = [c for c in IGNORE_CASES if c[0] and all(k.endswith(".gitignore") for k in c[0])]


def _layout(root, files: dict, path: str, is_dir: bool):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).mkdir() if is_dir else (root / path).write_text("x")


@pytest.mark.parametrize("files, path, is_dir, expected", IGNORE_CASES)
def test_gitignore_rules(tmp_path, files, path, is_dir, expected):
    _layout(tmp_path, files, path, is_dir)
    assert Ignore(str(tmp_path)).ignored(path, is_dir) is expected
    assert (path in Tree(str(tmp_path), watch=False).manifest) is (not expected and not is_dir)


@pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
@pytest.mark.parametrize("files, path, is_dir, expected", GIT_KNOWS)
def test_the_table_says_what_git_says(tmp_path, files, path, is_dir, expected):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _layout(tmp_path, files, path, is_dir)
    out = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=tmp_path)  # its type read from disk
    assert out.returncode == (0 if expected else 1)


# ------------------------------------------------------------------------------------------- Tree
def truth(root) -> dict:
    """What the manifest must be: every file but .git/ and the tests' *.log, hashed here."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git"]
        for name in files:
            p = os.path.join(d, name)
            if not name.endswith(".log") and not os.path.islink(p):
                st = os.stat(p)
                out[os.path.relpath(p, root).replace(os.sep, "/")] = (st.st_size, st.st_mtime_ns,
                                                                      xxhash.xxh3_128_hexdigest(open(p, "rb").read()))
    return out


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    (root / "d" / "e").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / ".gitignore").write_text("*.log\n")
    (root / "a.txt").write_text("alpha")
    (root / "d" / "b.txt").write_text("bravo")
    (root / "d" / "e" / "c.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "x.log").write_text("noise")
    return root


@pytest.mark.parametrize("watch", [True, False], ids=["inotify", "stat"])
def test_a_manifest_follows_every_change(src, watch):
    tree = Tree(str(src), watch=watch)
    if watch and inotify._lib() is None:
        pytest.skip("no inotify here")
    assert tree.watching is watch
    assert tree.manifest == truth(src) and ".gitignore" in tree.manifest and "x.log" not in tree.manifest
    assert tree.total == sum(e[0] for e in tree.manifest.values())
    assert tree.refresh() is False

    def step(change, changed=True, without=()):
        change()
        assert tree.refresh() is changed
        assert tree.manifest == {k: v for k, v in truth(src).items() if k not in without}
        assert tree.refresh() is False

    step(lambda: (src / "a.txt").write_text("ALPHA"))  # rewritten, same size
    step(lambda: (src / "a.txt").open("a").write(" and more"))  # appended
    step(lambda: (src / "new.txt").write_text("new"))
    step(lambda: (src / "d" / "b.txt").unlink())
    step(lambda: (src / "new.txt").rename(src / "d" / "renamed.txt"))
    step(lambda: (src / "d" / "e").rename(src / "moved"))  # a directory moved: its files under the new name

    def new_dir():
        (src / "n1" / "n2").mkdir(parents=True)
        (src / "n1" / "one.txt").write_text("1")
        (src / "n1" / "n2" / "two.txt").write_text("2")
    step(new_dir)
    step(lambda: os.chmod(src / "a.txt", 0o600), changed=False)  # a mode is not content
    step(lambda: (src / "ignored.log").write_text("still ignored"), changed=False)

    def twice_in_one_tick():  # the same size, written again within the clock's tick: the same mtime
        (src / "tick.txt").write_text("aaaa")
        assert tree.refresh() is True
        first = os.stat(src / "tick.txt").st_mtime_ns
        (src / "tick.txt").write_text("bbbb")
        os.utime(src / "tick.txt", ns=(first, first))  # what a coarse clock (or a FAT disk) does on its own
    step(twice_in_one_tick)
    assert tree.manifest["tick.txt"][2] == xxhash.xxh3_128_hexdigest(b"bbbb")
    step(lambda: shutil.rmtree(src / "n1"))

    def swap_dir():  # moved out, and another moved in under its name: no event for the files of either
        (src.parent / "other").mkdir()
        (src.parent / "other" / "fresh.txt").write_text("fresh")
        (src / "moved").rename(src.parent / "away")
        (src.parent / "other").rename(src / "moved")
    step(swap_dir)
    step(lambda: (src / ".gitignore").write_text("*.log\na.txt\n"), without=["a.txt"])  # the rules changed
    step(lambda: (src / ".gitignore").write_text("*.log\n"))
    assert "a.txt" in tree.manifest
    tree.close()


def test_a_directory_ignored_by_a_new_rule_and_one_created_ignored(src):
    tree = Tree(str(src))
    (src / "build").mkdir()
    (src / "build" / "out.o").write_text("o")
    assert tree.refresh() is True and "build/out.o" in tree.manifest
    (src / ".jupyter-gpu-ignore").write_text("build/\n")
    assert tree.refresh() is True and "build/out.o" not in tree.manifest
    (src / "build" / "more.o").write_text("o")  # no longer watched, nor kept
    tree.refresh()
    assert not any(k.startswith("build/") for k in tree.manifest)


def test_many_events_at_once_overflow_into_a_rescan(src):
    tree = Tree(str(src))
    for i in range(17000):  # one event each, none merged: past the kernel's default queue (16384)
        os.utime(src / ("a.txt" if i % 2 else "d/b.txt"), ns=(i, i))
    for i in range(3):  # their events are lost: only the rescan finds them
        (src / f"late{i}.txt").write_text(str(i))
    assert tree.refresh() is True
    assert tree.manifest == truth(src) and "late2.txt" in tree.manifest


def test_symlinks_count_as_their_file_only_inside_root(src, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(src / "a.txt", src / "link.txt")
    os.symlink(outside, src / "out.txt")
    os.symlink(src / "missing", src / "dangling.txt")
    os.symlink(src / "d", src / "dirlink")
    tree = Tree(str(src))
    assert tree.manifest["link.txt"][2] == tree.manifest["a.txt"][2]
    assert not {"out.txt", "dangling.txt"} & set(tree.manifest)
    assert not any(k.startswith("dirlink") for k in tree.manifest)
    (src / "a.txt").write_text("changed through the link")
    assert tree.refresh() is True
    assert tree.manifest["link.txt"][2] == xxhash.xxh3_128_hexdigest(b"changed through the link")


def test_digest_is_content_only(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root, names in ((one, ["a", "b", "c/d"]), (two, ["c/d", "b", "a"])):  # another order, other mtimes
        for name in names:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(name * 3)
    os.utime(two / "a", ns=(1, 1))
    t1, t2 = Tree(str(one)), Tree(str(two))
    assert t1.digest == t2.digest and t1.manifest != t2.manifest
    before = t1.digest
    (one / "b").write_text("other")
    t1.refresh()
    assert t1.digest != before
    (one / "b").write_text("bbb")
    t1.refresh()
    assert t1.digest == before and len(before) == 32


def test_adopt_forget_and_biggest(src):
    tree = Tree(str(src))
    st = os.stat(src / "a.txt")
    tree.adopt("a.txt", (st.st_size, st.st_mtime_ns, "trusted"))  # the stat agrees: taken as given
    assert tree.manifest["a.txt"][2] == "trusted"
    tree.adopt("d/b.txt", (99, 1, "wrong"))  # it does not: hashed
    assert tree.manifest["d/b.txt"][2] == xxhash.xxh3_128_hexdigest(b"bravo")
    (src / "a.txt").unlink()
    tree.forget("a.txt")
    assert "a.txt" not in tree.manifest
    assert tree.biggest(1) == [("d/e/c.bin", 3 * 1024 * 1024)]


# ------------------------------------------------------------------------------------------- the wire
def test_delta_puts_new_and_changed_content_and_drops_what_went():
    old = {"same": (1, 5, "h"), "touched": (1, 5, "h"), "changed": (1, 5, "h"), "gone": (1, 5, "h")}
    new = {"same": (1, 5, "h"), "touched": (1, 9, "h"), "changed": (1, 5, "k"), "added": (2, 5, "j")}
    assert delta(old, new) == (["added", "changed"], ["gone"])


def test_pack_and_apply_round_trip(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = {"small.txt": b"s" * 100, "empty": b"", "été/naïve ✓.txt": "unicode".encode(),
             "a/b/c/deep.py": b"x = 1\n", "big.bin": os.urandom(10 * 1024 * 1024),
             **{f"many/{i}.txt": os.urandom(300_000) for i in range(20)}}  # 6 MB of small files: two blobs
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    tree = Tree(str(src))
    entries, buffers = pack(str(src), sorted(tree.manifest), tree.manifest)
    big = next(e for e in entries if e[0] == "big.bin")
    assert [len(b) for b in buffers[big[4]:big[4] + 3]] == [BLOB, BLOB, 10 * 1024 * 1024 - 2 * BLOB]
    assert all(len(b) <= BLOB for b in buffers) and len(buffers) == 5
    dst.mkdir()
    mirror = Tree(str(dst))  # watching as apply writes, as a worker's mirror does
    for _ in range(2):  # into new directories, then over the files it wrote
        apply(str(dst), entries, [bytes(b) for b in buffers])  # as they arrive off the wire
        for rel, size, mtime_ns, digest, *_ in entries:
            mirror.adopt(rel, (size, mtime_ns, digest))
        assert mirror.manifest == tree.manifest
        assert mirror.refresh() is False and mirror.manifest == tree.manifest  # its own writes' events
        assert Tree(str(dst), watch=False).manifest == tree.manifest
    assert not [p for p in dst.rglob("*") if p.name.endswith(".jupyter-gpu-part")]


def test_pack_reads_a_file_as_it_is_now(tmp_path):
    (tmp_path / "f").write_text("before")
    (tmp_path / "gone").write_text("x")
    tree = Tree(str(tmp_path))
    (tmp_path / "f").write_text("after, and longer")
    (tmp_path / "gone").unlink()
    entries, buffers = pack(str(tmp_path), ["f", "gone"], tree.manifest)  # gone: left out
    [[rel, size, _mtime, digest, index, offset]] = entries
    assert (rel, size, digest) == ("f", 17, xxhash.xxh3_128_hexdigest(b"after, and longer"))
    assert bytes(buffers[index][offset:offset + size]) == b"after, and longer"


def test_apply_keeps_a_mode_and_drop_removes_files_and_emptied_directories(tmp_path):
    (tmp_path / "run.sh").write_text("old")
    os.chmod(tmp_path / "run.sh", 0o755)
    for rel in ("x/y/only.txt", "x/keep.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    apply(str(tmp_path), [["run.sh", 3, 10**18, "h", 0, 0]], [b"new"], drop=["x/y/only.txt", "not/there"])
    assert (tmp_path / "run.sh").read_text() == "new" and os.stat(tmp_path / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(tmp_path / "run.sh").st_mtime_ns == 10**18
    assert not (tmp_path / "x" / "y").exists() and (tmp_path / "x" / "keep.txt").exists()
    apply(str(tmp_path), [], [], drop=["x/keep.txt"])
    assert not (tmp_path / "x").exists() and tmp_path.exists()


@pytest.mark.parametrize("rel", ["../x", "/etc/x", "a/../../x", "a//b", "./a", "", "esc/x", "esc/deeper/x"])
def test_apply_refuses_paths_outside_root(tmp_path, rel):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "esc")  # a symlinked parent that leads out
    with pytest.raises(ValueError, match="refused path"):
        apply(str(root), [["fine.txt", 1, 1, "h", 0, 0], [rel, 1, 1, "h", 0, 0]], [b"x"])
    with pytest.raises(ValueError, match="refused path"):
        apply(str(root), [], [], drop=[rel])
    assert not list(outside.iterdir()) and not (root / "fine.txt").exists()  # nothing written at all


def test_sync_limit():
    assert filetree.sync_limit({}) == 2**30
    assert filetree.sync_limit({"JUPYTER_GPU_SYNC_LIMIT": "500MB"}) == 500 * 2**20
    assert filetree.sync_limit({"JUPYTER_GPU_SYNC_LIMIT": "0"}) == 0
    with pytest.raises(ValueError):
        filetree.sync_limit({"JUPYTER_GPU_SYNC_LIMIT": "lots"})


@pytest.mark.parametrize("watch", [True, False])
def test_since_mark_names_what_changed_and_only_that(tmp_path, watch):
    for rel in ("same.txt", "edit.txt", "gone.txt", "d/touched.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    with Tree(str(tmp_path), watch=watch) as t:
        t.mark()
        (tmp_path / "edit.txt").write_text("edited")
        (tmp_path / "gone.txt").unlink()
        (tmp_path / "new.txt").write_text("new")
        os.utime(tmp_path / "d" / "touched.txt", ns=(10**18, 10**18))  # a new mtime, the same content
        (tmp_path / "tmp.txt").write_text("x")
        (tmp_path / "tmp.txt").unlink()  # made and removed within the mark: no change at all
        t.refresh()
        assert t.since_mark() == (["edit.txt", "new.txt"], ["gone.txt"])
        assert t.since_mark() == ([], [])  # the mark ended


def test_apply_in_place_writes_the_same_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for rel, text in (("x.txt", "x"), ("d/y.txt", "yy")):
        (a / rel).parent.mkdir(parents=True, exist_ok=True)
        (a / rel).write_text(text)
    with Tree(str(a), watch=False) as t:
        entries, buffers = pack(str(a), sorted(t.manifest), t.manifest)
        apply(str(b), entries, buffers, atomic=False)
        with Tree(str(b), watch=False) as u:
            assert u.manifest == t.manifest


def test_apply_on_threads_writes_every_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(300):
        (a / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (a / f"d{i % 7}" / f"f{i}.txt").write_text(f"file {i}" * (i % 5))
    with Tree(str(a), watch=False) as t:
        entries, buffers = pack(str(a), sorted(t.manifest), t.manifest)
        apply(str(b), entries, buffers, atomic=False, threads=4)
        with Tree(str(b), watch=False) as u:
            assert u.manifest == t.manifest


def test_apply_on_threads_raises_the_first_failure_in_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(300):
        (a / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (a / f"d{i % 3}" / f"f{i:03}.txt").write_text(f"file {i}")
    with Tree(str(a), watch=False) as t:
        entries, buffers = pack(str(a), sorted(t.manifest), t.manifest)
    rels = [e[0] for e in entries]
    first, later = rels[100], rels[250]
    for rel in (later, first):  # a directory where the file goes: its os.open fails
        (b / rel).mkdir(parents=True)
    with pytest.raises(IsADirectoryError) as e:
        apply(str(b), entries, buffers, atomic=False, threads=4)
    assert e.value.filename.endswith(first)


def test_apply_on_threads_returns_the_skipped_in_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(200):
        (a / f"f{i:03}.txt").parent.mkdir(parents=True, exist_ok=True)
        (a / f"f{i:03}.txt").write_text(f"file {i}")
    with Tree(str(a), watch=False) as t:
        entries, buffers = pack(str(a), sorted(t.manifest), t.manifest)
    bad = {entries[7][0], entries[150][0], entries[42][0]}
    for e in entries:
        if e[0] in bad:
            e[3] = "0" * 32  # bytes that do not hash to it: not written
    assert apply(str(b), entries, buffers, atomic=False, threads=4, check=True) == sorted(bad)
    assert sorted(p.name for p in b.iterdir()) == sorted(e[0] for e in entries if e[0] not in bad)


def test_each_on_threads_keeps_order_and_stops_after_a_failure():
    begun = []

    def fn(i):
        begun.append(i)
        if i == 10:
            raise KeyError(i)
        return i * 2

    assert fileapply._each_on_threads(lambda i: i * 2, list(range(1000)), 4) == [i * 2 for i in range(1000)]
    with pytest.raises(KeyError) as e:
        fileapply._each_on_threads(fn, list(range(1000)), 4)
    assert e.value.args == (10,)
    assert set(range(11)) <= set(begun) and len(begun) <= 11 + 4  # each thread begins at most one more


def test_a_tree_takes_known_entries_whose_stat_agrees_without_reading_them(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("aaa")
    (tmp_path / "b.txt").write_text("bb")
    past = 10**18
    os.utime(tmp_path / "d" / "a.txt", ns=(past, past))
    os.utime(tmp_path / "b.txt", ns=(past, past))
    known = {"d/a.txt": (3, past, "f" * 32),  # what apply wrote, per its entry: taken as it is
             "b.txt": (2, past + 1, "e" * 32)}  # another mtime than on disk: read and hashed
    with Tree(str(tmp_path), known=known) as t:
        assert t.manifest["d/a.txt"] == (3, past, "f" * 32)
        assert t.manifest["b.txt"] == (2, past, xxhash.xxh3_128_hexdigest(b"bb"))
        (tmp_path / "d" / "a.txt").write_text("changed")  # watched from the scan on
        assert t.refresh() and t.manifest["d/a.txt"][0] == 7
