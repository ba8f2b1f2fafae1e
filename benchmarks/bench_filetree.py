"""A directory kept by content for a worker on another filesystem (issue 21): jupyter_gpu/_wire/filetree.py.

A tree of 10,000 files / ~540 MB in a temp dir (9,900 files of 2-6 KiB in 100 directories + 100 files
of 5 MiB), mtimes set a day back (else every file is "racy" for 2 s and the stat-only refresh hashes it):

  scan          Tree(src): the first scan, every file stat'ed and hashed (page cache warm)
  refresh       refresh() of the unchanged tree with inotify (one failed non-blocking read), per call
  refresh_stat  refresh() of the unchanged tree without inotify (watch=False: every file stat'ed)
  touch         os.utime of one small file, then refresh() (one event, one stat, one 4 KiB hash)
  pack, apply   pack() of every file, then apply() into a fresh directory, in this process
  sync          pack + apply
  mirror        (first round) what a worker's mirror does after apply: adopt() every entry into a Tree
                that watched the directory as apply wrote it, then refresh() (all of apply's own events)

Anchors in the same run, interleaved round by round with `sync` (a fresh destination each round):
`rsync -a src/ dst/` (skipped, said so, where rsync is absent) and `tar -C src -cf - . | tar -C dst -xf -`.

    python benchmarks/bench_filetree.py [--rounds 3] [--refreshes 20000] [--quick]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import banner, fmt_stats, on_cleanup, ratio, run_main, stats, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jupyter_gpu._wire import filetree  # noqa: E402


def build(src: Path, small_dirs=100, per_dir=99, big=100, big_size=5 << 20) -> tuple[int, int]:
    rnd = random.Random(21)
    n = size = 0
    for d in range(small_dirs):
        (src / f"d{d:03}").mkdir(parents=True)
        for i in range(per_dir):
            data = rnd.randbytes(rnd.randint(2048, 6144))
            (src / f"d{d:03}" / f"f{i:03}.txt").write_bytes(data)
            n, size = n + 1, size + len(data)
    (src / "big").mkdir()
    for i in range(big):
        data = rnd.randbytes(big_size)
        (src / "big" / f"b{i:03}.bin").write_bytes(data)
        n, size = n + 1, size + len(data)
    past = time.time_ns() - 86_400 * 10**9
    for p in src.rglob("*"):
        os.utime(p, ns=(past, past))
    return n, size


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--refreshes", type=int, default=20000)
    ap.add_argument("--quick", action="store_true", help="1 round, 2000 refreshes")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.refreshes = 1, 2000
    base = Path(tempfile.mkdtemp(prefix="bench-filetree-"))
    on_cleanup(lambda: shutil.rmtree(base, ignore_errors=True))
    src = base / "src"
    banner("filetree: 10,000 files / ~540 MB kept by content, against rsync -a and a tar pipe")
    n, size = build(src)
    print(f"tree: {n} files, {size / 1e6:.0f} MB in {src}", flush=True)
    rsync = shutil.which("rsync")
    if not rsync:
        print("rsync: not installed, its anchor is SKIPPED")
    samples = {k: [] for k in ("scan", "refresh", "refresh_stat", "touch", "pack", "apply", "sync", "mirror",
                               "rsync", "tar")}

    tree = None
    for _ in range(args.rounds):
        if tree:
            tree.close()
        dt, tree = timed(lambda: filetree.Tree(str(src)))
        samples["scan"].append(dt)
    assert tree.watching and len(tree.manifest) == n, (tree.watching, len(tree.manifest))
    for _ in range(args.refreshes):
        t = time.perf_counter_ns()
        changed = tree.refresh()
        samples["refresh"].append((time.perf_counter_ns() - t) / 1e3)
        assert not changed
    stat_tree = filetree.Tree(str(src), watch=False)
    for _ in range(max(3, args.rounds)):
        dt, changed = timed(stat_tree.refresh)
        samples["refresh_stat"].append(dt)
        assert not changed
    stat_tree.close()
    victims = sorted(tree.manifest)[:: max(1, n // 200)]
    for i, rel in enumerate(victims):
        os.utime(src / rel, ns=(i, i + 1))  # a new mtime, the same content
        dt, changed = timed(tree.refresh)
        samples["touch"].append(dt * 1e3)
        assert changed and tree.manifest[rel][1] == i + 1

    rels = sorted(tree.manifest)
    for r in range(args.rounds):
        order = ["sync", "rsync", "tar"]
        random.Random(r).shuffle(order)
        for what in order:
            dst = base / f"dst-{what}"
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir()
            if what == "sync":
                mirror = filetree.Tree(str(dst)) if r == 0 else None
                t0 = time.perf_counter()
                entries, buffers = filetree.pack(str(src), rels, tree.manifest)
                t1 = time.perf_counter()
                filetree.apply(str(dst), entries, buffers)
                t2 = time.perf_counter()
                samples["pack"].append(t1 - t0)
                samples["apply"].append(t2 - t1)
                samples["sync"].append(t2 - t0)
                if mirror is not None:
                    t3 = time.perf_counter()
                    for rel, n, mtime_ns, digest, *_ in entries:
                        mirror.adopt(rel, (n, mtime_ns, digest))
                    mirror.refresh()
                    samples["mirror"].append(time.perf_counter() - t3)
                    assert mirror.manifest == tree.manifest, "apply wrote another tree"
                    mirror.close()
            elif what == "rsync" and rsync:
                cmd = [rsync, "-a", f"{src}/", f"{dst}/"]
                samples["rsync"].append(timed(lambda: subprocess.run(cmd, check=True))[0])
            elif what == "tar":
                samples["tar"].append(timed(lambda: subprocess.run(
                    f"tar -C '{src}' -cf - . | tar -C '{dst}' -xf -", shell=True, check=True))[0])
        for what in order:
            shutil.rmtree(base / f"dst-{what}", ignore_errors=True)
    tree.close()

    units = {"refresh": "us", "touch": "ms"}
    result = {k: stats(v, units.get(k, "s")) for k, v in samples.items()}
    for k, st in result.items():
        print(fmt_stats(k, st, width=14))
    med = {k: v.get("median", float("nan")) for k, v in result.items()}
    ratios = {"sync_over_tar": ratio(med["sync"], med["tar"]),
              "sync_over_rsync": ratio(med["sync"], med["rsync"]) if samples["rsync"] else None,
              "scan_over_tar": ratio(med["scan"], med["tar"])}
    for k, v in ratios.items():
        print(f"  {k:<18} {'skipped (no rsync)' if v is None else f'{v:.3f}'}")
    print(f"  unchanged refresh: {med['refresh']:.2f} us median (target well under 500 us)")
    write_result("filetree", {"files": n, "bytes": size, "rounds": args.rounds, "results": result,
                              "ratios": ratios, "rsync": bool(rsync)})
    return 0


if __name__ == "__main__":
    run_main(main)
