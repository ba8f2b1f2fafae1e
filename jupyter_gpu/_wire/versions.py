"""Package versions as a cell sees them, on either side (issue 23): the kernel's installed ones
(``Installed``), the worker's *loaded or installed* ones (``Loaded``), the rows where they differ,
with what to do, and the stamp that tells an environment changed (``site_dirs``, ``stamp``).

An environment changes when something is installed, upgraded or removed in it (`%pip install`):
that adds or removes entries of a site-packages directory, so its mtime changes.  One ``os.stat``
per directory (~1 us; a venv has one) tells it, where a scan of the installed distributions takes
tens to hundreds of milliseconds: answers are kept until the stamp changes.

A worker may have a module *loaded* at another version than its disk now has (imported before the
kernel's `%pip install -U`, or inherited from the zygote it was forked from).  A module loaded
before its distribution changed on disk (its ``.dist-info`` is newer than this process, or than the
zygote it was forked from) is of an older version than the disk's: its ``__version__`` says which,
where it has one.  The kernel's side is what its environment has installed - what `%pip` changed and
what a fresh worker imports - not a module the kernel itself imported before an upgrade (pip tells
the user to restart the kernel for that).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import pathlib
import sys
import time
import warnings

# this process's start (a forked worker inherits its zygote's: the modules it preloaded date from it)
BIRTH_NS = time.time_ns()
# top-level names a cell's use of never differs in a way the table helps with
IGNORED = frozenset({"__main__", "builtins", "jupyter_gpu", "jupyter_gpu_worker", "jupyter_gpu_backend"})


def site_dirs() -> tuple[str, ...]:
    """This interpreter's package directories on ``sys.path`` (site-packages / dist-packages; a
    layered environment's parents' too, which its .pth files put there)."""
    return tuple(dict.fromkeys(p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)))


def stamp(dirs) -> tuple:
    """The directories' mtimes in ns (-1: gone): any install, upgrade or removal in them changes it."""
    out = []
    for d in dirs:
        try:
            out.append(os.stat(d).st_mtime_ns)
        except OSError:
            out.append(-1)
    return tuple(out)


def is_package(top: str) -> bool:
    """Whether ``top`` may be a third-party package worth comparing (not the standard library, not ours)."""
    return bool(top) and top not in IGNORED and top not in sys.stdlib_module_names and not top.startswith("_")


class Installed:
    """The versions this environment has installed, by import name, kept until its stamp changes."""

    def __init__(self):
        self.dirs: tuple | None = None
        self.stamp: tuple | None = None
        self._versions: dict[str, str | None] = {}
        self._dists: dict[str, object | None] = {}

    def refresh(self) -> bool:
        """Stat the environment; True (and everything forgotten) when it changed since the last call."""
        if self.dirs is None:
            self.dirs = site_dirs()
        now = stamp(self.dirs)
        if now == self.stamp:
            return False
        changed = self.stamp is not None
        self.stamp = now
        self._versions.clear()
        self._dists.clear()
        return changed

    def distribution(self, top: str):
        """The installed distribution that provides import name ``top`` (None: none)."""
        if top in self._dists:
            return self._dists[top]
        dist = None
        try:
            dist = importlib.metadata.distribution(top)  # most import names are their distribution's
        except (importlib.metadata.PackageNotFoundError, ValueError):
            dist = self._owner(top)  # PIL -> Pillow, sklearn -> scikit-learn; a notebook's own module: none
        self._dists[top] = dist
        return dist

    def _owner(self, top: str):
        """The distribution whose files hold import name ``top``: found where Python would import it
        from (a module beside the notebook is no distribution's: ~50 us to tell), then by the
        ``top_level.txt`` of that directory's distributions, then their RECORD files.
        (``packages_distributions()`` reads every RECORD: 0.4 s here.)"""
        import importlib.util

        try:
            spec = importlib.util.find_spec(top)  # a top-level name: finders only, nothing imported
        except (ImportError, ValueError):
            return None
        where = (spec.origin if spec and spec.origin not in (None, "built-in", "frozen") else
                 next(iter(spec.submodule_search_locations or ()), None) if spec else None)
        site = next((d for d in self.dirs or site_dirs() if where and where.startswith(d + os.sep)), None)
        if site is None:
            return None
        try:
            infos = sorted(n for n in os.listdir(site) if n.endswith(".dist-info"))
        except OSError:
            return None
        mark, module = f"{top}/", f"{top}.py,"
        for reader in ("top_level.txt", "RECORD"):
            for info in infos:
                try:
                    with open(os.path.join(site, info, reader)) as f:
                        if any(line.strip() == top if reader == "top_level.txt" else line.startswith((mark, module))
                               for line in f):
                            return importlib.metadata.PathDistribution(pathlib.Path(site, info))
                except OSError:
                    continue
        return None

    def version(self, top: str) -> str | None:
        """The installed version of ``top`` (None: not installed, or not a distribution's)."""
        v = self._versions.get(top, False)
        if v is False:
            dist = self.distribution(top)
            try:
                v = dist.version if dist is not None else None
            except Exception:  # a broken dist-info
                v = None
            self._versions[top] = v
        return v

    def changed_since(self, top: str, ns: int) -> bool:
        """Whether ``top``'s distribution was installed (or changed) after ``ns`` (time.time_ns)."""
        dist = self.distribution(top)
        path = getattr(dist, "_path", None)  # its .dist-info directory (PathDistribution)
        if path is None:
            return False
        try:
            return os.stat(path).st_mtime_ns > ns
        except OSError:
            return True


class Loaded:
    """The worker's side: the version of each module a cell uses as that cell will get it (the
    loaded one if it is imported here, else what the disk has), compared with the kernel's."""

    def __init__(self):
        self.installed = Installed()
        # top -> (the module object, its version): a loaded module's version never changes
        self._loaded: dict[str, tuple] = {}
        self._rows: dict[str, tuple] = {}  # top -> (kernel's version, module object or None, row or None)

    def refresh(self) -> None:
        """Look again at the environment: a package installed since imports."""
        if self.installed.refresh():
            importlib.invalidate_caches()  # Python's own directory listings may lag behind an install

    def reset(self) -> None:
        """Forget everything: ``sys.path``'s package directories changed (handshake.follow)."""
        importlib.invalidate_caches()
        self.installed = Installed()
        self._loaded.clear()
        self._rows.clear()

    def here(self, top: str) -> str | None:
        """The version of ``top`` that code run here now gets: the loaded one, else the installed."""
        mod, disk = sys.modules.get(top), self.installed.version(top)
        return disk if mod is None else (self.loaded(top, mod, disk) or disk)

    def differences(self, kernel: dict) -> list:
        """[(module, kernel's version, this worker's, what to do)] for each of ``kernel``'s
        {module: version} that differs here.  A module asked about before, with the same kernel's
        version and the same module loaded (or still none), is answered from memory: no system call."""
        rows = []
        for top, theirs in kernel.items():
            mod = sys.modules.get(top)
            known = self._rows.get(top)
            if known is None or known[0] != theirs or known[1] is not mod:
                known = self._rows[top] = (theirs, mod, self._row(top, theirs, mod))
            if known[2] is not None:
                rows.append(known[2])
        return sorted(rows)

    def _row(self, top: str, theirs: str, mod) -> tuple | None:
        self.refresh()
        disk = self.installed.version(top)
        if mod is None:  # not imported here: the cell gets what the disk has
            here = disk
        else:
            here = self.loaded(top, mod, disk)
            if here is None:
                return None  # a module of no distribution, without __version__: nothing to compare
        if here == theirs:
            return None
        if mod is not None and disk == theirs:
            return (top, theirs, here, f"%gpu release: a fresh worker imports {theirs}")
        dist = self.installed.distribution(top)
        name = getattr(dist, "name", None) or top
        return (top, theirs, here, f'%%gpu --pip "{name}=={theirs}"')

    def loaded(self, top: str, mod, disk: str | None) -> str | None:
        """The version of the loaded module ``mod``: the disk's, unless its distribution changed
        after this process (or its zygote) began; then its ``__version__``, where it has one."""
        known = self._loaded.get(top)
        if known is not None and known[0] is mod:
            return known[1]
        version = disk
        if disk is None or self.installed.changed_since(top, BIRTH_NS):
            with warnings.catch_warnings():  # some packages deprecate their __version__
                warnings.simplefilter("ignore")
                v = getattr(mod, "__version__", None)
            if isinstance(v, str):
                version = v
        self._loaded[top] = (mod, version)
        return version
