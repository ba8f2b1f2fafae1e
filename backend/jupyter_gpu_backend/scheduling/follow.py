"""Follow the kernel (issue 23): a default worker gets the kernel's versions of the packages the
notebook's cells use, on every runtime, without a new worker.

A cell says which packages it uses and the kernel's versions of them (``Execute.versions``, and
``dists`` where a distribution is named otherwise).  Here they are compared with what the worker's
environment has installed (``Runtime.worker_facts``: the backend's own interpreter for the local
and ray runtimes, the worker image's for docker).  Where the worker lacks one, or has another
version, the session's *pins* change, and the cell waits (phase ``build``, its output in the cell,
its seconds the footer's ``build``) for one directory with exactly those versions, and whatever of
their dependencies the worker lacks, installed by uv for the worker's Python:
``<root>/<hash of the worker's environment and the pins>/site-packages``.  The worker puts it before
its own site-packages (``handshake.follow``): a warm worker keeps its namespace, a package it never
imported imports at the kernel's version from the next cell on, one it has loaded stays as loaded
and the cell's table says so (``%gpu release`` gives a fresh worker).  The directories are the
worker's to read (docker mounts the root read-only at the same path) and are kept: an unchanged set
of pins costs a dictionary lookup per cell, on any backend that made it before.

Not followed: the accelerator frameworks (``FRAMEWORKS``): a kernel's torch is the CPU build of a
laptop, the worker's must be its GPU's, from its image; the table names the difference.  A version
the index does not have (an editable install, a local build) is not followed either: the cell says
why once and runs with the worker's versions, as before.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import xxhash

from jupyter_gpu._wire.pools import DEFAULT_IMAGE
from jupyter_gpu.errors import ImageBuildFailed

from jupyter_gpu_backend.runtimes.base import follow_root_dir
from jupyter_gpu_backend.scheduling.builds import sayer

# their worker build is the GPU's, not the kernel's (a CPU wheel of torch is not what a GPU runs)
FRAMEWORKS = frozenset({"torch", "torchvision", "torchaudio", "triton", "tensorflow", "tensorflow-cpu", "jax",
                        "jaxlib", "cupy", "tensorrt", "onnxruntime-gpu", "xformers", "flash-attn", "deepspeed"})
_NAME = re.compile(r"[-_.]+")


def project(name: str) -> str:
    """A distribution's normalised name (PEP 503): ``Foo_Bar`` -> ``foo-bar``."""
    return _NAME.sub("-", name).lower()


def host_facts() -> dict:
    """The backend's own interpreter's: its Python, its platform and its installed versions (the
    local and ray runtimes' workers run it).  ~30 ms for a few hundred distributions."""
    import importlib.metadata as md

    dists = {}
    for d in md.distributions():
        name = d.metadata["Name"]
        if name and project(name) not in dists:  # the first on sys.path is the one imported
            dists[project(name)] = d.version
    return {"python": "%d.%d" % sys.version_info[:2], "dists": dists}


class Follow:
    """The session's pins and their directory, per cell (``plan``), made where missing (``build``)."""

    def __init__(self, runtime, root: Path | None = None, enabled: bool = True):
        self.runtime = runtime
        self.root = Path(root or follow_root_dir())
        self.enabled = enabled
        self.facts: dict | None = None  # the worker's environment (Runtime.worker_facts), once known
        self._fingerprint = ""
        self._failed: dict[str, str] = {}  # a directory's key -> why it could not be made
        self._locks: dict[str, asyncio.Lock] = {}

    def _wanted(self, session, header: dict) -> dict:
        """The session's pins after this cell: the kernel's version of each package the cell uses
        that the worker has at another version (or not at all); one it has at the kernel's: unpinned."""
        have = self.facts["dists"]
        wanted = dict(session.follow_pins)
        dists = header.get("dists") or {}
        for top, version in header["versions"].items():
            name = project(dists.get(top, top))
            if name in FRAMEWORKS:
                continue
            if have.get(name) == version:
                wanted.pop(name, None)
            else:
                wanted[name] = version
        return wanted

    def plan(self, run, header: dict) -> bool:
        """Before a cell: True when it must wait for ``build`` (its pins changed, or the worker's
        environment is not known yet); else the session's directory, if any, goes with the cell."""
        session = run.session
        if not self.enabled or run.image != DEFAULT_IMAGE:
            return False
        if "versions" in header:
            if self.facts is None or self.runtime.facts_stale():
                return True
            wanted = self._wanted(session, header)
            if wanted != session.follow_pins and wanted != session.follow_tried:
                return True
        if session.follow_dir is not None:
            header["follow"] = session.follow_dir
        return False

    async def build(self, run, header: dict) -> None:
        """Make the directory of the session's new pins (``plan`` said so); a failure is said in the
        cell, once per set of pins, and the cell runs with the worker's versions."""
        if not self.plan(run, header):
            return
        session = run.session
        if self.facts is None or self.runtime.facts_stale():
            self.facts = await self.runtime.worker_facts()
            self._fingerprint = xxhash.xxh3_64_hexdigest(repr(sorted(self.facts["dists"].items())).encode())
        wanted = self._wanted(session, header)
        if wanted == session.follow_pins or wanted == session.follow_tried:
            if session.follow_dir is not None:
                header["follow"] = session.follow_dir
            return
        session.follow_tried = wanted
        pins = sorted(f"{n}=={v}" for n, v in wanted.items())
        key = xxhash.xxh3_128_hexdigest("\n".join([self.facts["python"], self._fingerprint, *pins]).encode())[:20]
        where = self.root / key / "site-packages"
        say = sayer(run)
        if not pins:  # the kernel has the worker's versions again: its directory goes
            session.follow_pins, session.follow_dir = wanted, None
            header["follow"] = ""
            return
        if session.follow_dir is not None:
            header["follow"] = session.follow_dir  # until the new one is made, or if it cannot be
        if key in self._failed:
            say(f"jupyter-gpu: the worker cannot have the kernel's versions ({self._failed[key]}); "
                "the cell runs with the worker's\n")
            return
        t0 = time.monotonic()
        built = False
        async with self._locks.setdefault(key, asyncio.Lock()):
            if not where.is_dir():
                say(f"jupyter-gpu: giving the worker the kernel's {', '.join(pins)}\n")
                try:
                    loop = asyncio.get_running_loop()
                    tsay = lambda text: loop.call_soon_threadsafe(say, text)  # noqa: E731 (from the thread)
                    await loop.run_in_executor(None, self._make, pins, where, tsay)
                    built = True
                except ImageBuildFailed as e:
                    self._failed[key] = str(e)
                    say(f"jupyter-gpu: the worker cannot have the kernel's versions ({e}); "
                        "the cell runs with the worker's\n")
                    return
        session.follow_pins, session.follow_dir = wanted, str(where)
        header["follow"] = session.follow_dir
        if built:
            run.build += time.monotonic() - t0

    def _make(self, pins: list, where: Path, say) -> None:
        """Resolve ``pins`` for the worker's Python against what it has, and install what it lacks
        into ``where`` (in a thread; made beside it, then renamed: a half-made one is never seen)."""
        from jupyter_gpu_backend.runtimes.docker_envs import _run, resolve
        from jupyter_gpu_backend.runtimes.envs import uv

        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".making-", dir=self.root))
        try:
            try:
                missing = resolve(pins, self.facts, work, say)
            except ImageBuildFailed:  # one of them the index lacks (an editable install): the others still
                kept = [p for p in pins if _resolves(p, self.facts, work)]
                if not kept:
                    raise
                say(f"jupyter-gpu: not on the package index, left as the worker has them: "
                    f"{', '.join(p for p in pins if p not in kept)}\n")
                missing = resolve(kept, self.facts, work, say)
            heavy = sorted(m for m in missing if project(m.split("==")[0]) in FRAMEWORKS
                           or m.startswith("nvidia-"))
            if heavy:
                raise ImageBuildFailed(f"they need {', '.join(heavy)}, which the worker's image must bring")
            target = work / "site-packages"
            arch = os.uname().machine
            _run([uv(), "pip", "install", "--quiet", "--no-deps", "--target", str(target), "--python-version",
                  self.facts["python"], "--python-platform", f"{arch}-manylinux_2_28", *missing],
                 say, "following the kernel")
            for p in [target, *target.rglob("*")]:  # the worker may run as another user (docker_mounts.py)
                p.chmod(0o755 if p.is_dir() else 0o644)
            where.parent.mkdir(exist_ok=True)
            os.rename(target, where)
        except OSError as e:
            if not where.is_dir():
                raise ImageBuildFailed(f"{type(e).__name__}: {e}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _resolves(pin: str, facts: dict, work: Path) -> bool:
    from jupyter_gpu_backend.runtimes.docker_envs import resolve

    try:
        resolve([pin], facts, work, lambda text: None)
        return True
    except ImageBuildFailed:
        return False
