"""``jupyter_gpu.Image``: a worker environment said in Python, in Modal's vocabulary.

    img = (jupyter_gpu.Image.debian_slim(python_version="3.11")
           .pip_install("six==1.16.0", "attrs").env({"MODE": "eval"}))

    %%gpu --image img                       (a variable of the kernel)
    @jupyter_gpu.function(image=img)
    %%gpu --pip "six==1.16.0 attrs"         (= Image.from_kernel().pip_install(...): the quick case)

Each method returns a new Image with one more layer; nothing is built here.  A request that names
an Image carries its spec (``_wire/imagespec.py``: layers hashed with their parents), and the
backend builds what it does not have yet, once per hash (the build streams into the cell, and is
its own phase in the footer); an unchanged Image is never built again.  ``Image.from_kernel()`` is
the kernel's own environment (what workers run by default), so layers on it are an overlay: the
kernel's packages plus these.
"""
from __future__ import annotations

import base64
import functools
import importlib.util
import os
import shlex
import sys

from jupyter_gpu._wire import imagespec


class Image:
    def __init__(self, base: dict, layers: tuple = ()):
        self._base, self._layers = base, tuple(layers)
        self._spec: dict | None = None

    # -- bases ---------------------------------------------------------------------------------
    @classmethod
    def from_kernel(cls) -> "Image":
        """The kernel's environment (the default workers'): layers on it add to what it has."""
        return cls({"kind": "kernel"})

    @classmethod
    def debian_slim(cls, python_version: str | None = None) -> "Image":
        """A fresh environment: Python ``python_version`` (default: the kernel's major.minor), the
        worker's own packages, nothing else."""
        version = python_version or f"{sys.version_info[0]}.{sys.version_info[1]}"
        if not isinstance(version, str) or not all(p.isdigit() for p in version.split(".")):
            raise ValueError(f"python_version: {python_version!r} is not a version like '3.11'")
        return cls({"kind": "debian_slim", "python": version})

    @classmethod
    def from_registry(cls, ref: str) -> "Image":
        """A container image by reference (``python:3.11-slim``): the docker runtime."""
        return cls({"kind": "registry", "ref": _text(ref, "ref")})

    @classmethod
    def from_dockerfile(cls, path: str) -> "Image":
        """A Dockerfile's image (its text is the layer; its directory the build context): docker."""
        with open(path) as f:
            text = f.read()
        return cls({"kind": "dockerfile", "text": text, "path": os.path.abspath(path)})

    # -- layers --------------------------------------------------------------------------------
    def _with(self, layer: dict) -> "Image":
        return Image(self._base, self._layers + (layer,))

    def pip_install(self, *packages: str) -> "Image":
        """Install packages (requirement strings) from the package index."""
        return self._with({"op": "pip", "packages": sorted(_texts(packages, "pip_install")), "installer": "pip"})

    def uv_pip_install(self, *packages: str) -> "Image":
        """``pip_install`` with uv as the installer (the local runtime's installer either way)."""
        return self._with({"op": "pip", "packages": sorted(_texts(packages, "uv_pip_install")), "installer": "uv"})

    def apt_install(self, *packages: str) -> "Image":
        """Debian packages (the docker runtime)."""
        return self._with({"op": "apt", "packages": sorted(_texts(packages, "apt_install"))})

    def run_commands(self, *commands: str) -> "Image":
        """Shell commands, in order, in the environment as built so far."""
        return self._with({"op": "run", "commands": list(_texts(commands, "run_commands"))})

    def env(self, variables: dict) -> "Image":
        """Environment variables of the workers."""
        if not isinstance(variables, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
            raise TypeError("env() takes a dict of names to string values")
        return self._with({"op": "env", "vars": dict(sorted(variables.items()))})

    def add_local_python_source(self, *modules: str) -> "Image":
        """Modules of this kernel (by name: a module file or a package directory), importable there."""
        files = []
        for name in _texts(modules, "add_local_python_source"):
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin in (None, "built-in", "frozen"):
                raise ValueError(f"add_local_python_source: no module {name!r} here with a source file")
            if spec.submodule_search_locations:  # a package: its directory
                root = list(spec.submodule_search_locations)[0]
                files += _read_tree(root, os.path.dirname(root), (".py",))
            else:
                files.append([os.path.basename(spec.origin), _b64(spec.origin)])
        return self._with({"op": "pysource", "files": sorted(files)})

    def add_local_dir(self, local_path: str, remote_path: str) -> "Image":
        """A directory of this machine at ``remote_path`` (absolute) in the image (the docker runtime)."""
        if not os.path.isabs(_text(remote_path, "remote_path")):
            raise ValueError(f"add_local_dir: remote_path {remote_path!r} must be absolute")
        if not os.path.isdir(local_path):
            raise ValueError(f"add_local_dir: {local_path!r} is not a directory")
        return self._with({"op": "dir", "remote": remote_path, "files": sorted(_read_tree(local_path, local_path, None))})

    # -- what travels --------------------------------------------------------------------------
    def spec(self) -> dict:
        """The spec a request carries (made once per Image)."""
        if self._spec is None:
            self._spec = imagespec.seal(self._base, [dict(layer) for layer in self._layers])
            imagespec.check(self._spec)  # over the size cap: said here, before anything is sent
        return self._spec

    @property
    def name(self) -> str:
        """Its name on a backend (``env-`` + 16 hex of its last layer's hash): its pool's image."""
        return self.spec()["name"]

    def __repr__(self) -> str:
        steps = [self._base["kind"], *(layer["op"] for layer in self._layers)]
        return f"<jupyter_gpu.Image {self.name} {' > '.join(steps)}>"


@functools.lru_cache(maxsize=64)  # a notebook repeats its few --pip lines: one Image (and one sealed spec) each
def from_pip_line(line: str) -> Image:
    """``%%gpu --pip "a==1 b"``: the kernel's environment plus those packages."""
    # IPython leaves a quoted value's quotes: shlex removes them, and the requirements are its words
    packages = [word for token in shlex.split(line) for word in token.split()]
    if not packages:
        raise ValueError('--pip needs at least one requirement, e.g. --pip "six==1.16.0"')
    return Image.from_kernel().pip_install(*packages)


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{what} must be a non-empty string, not {value!r}")
    return value.strip()


def _texts(values, what: str) -> list:
    out = [_text(v, what) for v in values]
    if not out:
        raise ValueError(f"{what}() needs at least one argument")
    return out


def _b64(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def _read_tree(root: str, relative_to: str, suffixes) -> list:
    files, total = [], 0
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__" and not x.startswith("."))
        for n in sorted(names):
            if suffixes and not n.endswith(suffixes):
                continue
            path = os.path.join(d, n)
            total += os.path.getsize(path)
            if total > imagespec.MAX_FILES_BYTES:
                raise ValueError(f"{root}: more than {imagespec.MAX_FILES_BYTES // 2**20} MiB of files for an image layer")
            files.append([os.path.relpath(path, relative_to), _b64(path)])
    return files
