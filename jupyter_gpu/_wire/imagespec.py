"""A worker environment said in Python (``jupyter_gpu.Image``), as it travels: the spec the kernel sends
with a request (``Execute.image_spec``) and the backend builds, layer by layer, once per hash.

    {"base": {"kind": "kernel"} | {"kind": "debian_slim", "python": "3.11"}
             | {"kind": "registry", "ref": "python:3.11-slim"} | {"kind": "dockerfile", "text": "...", "path": "..."},
     "layers": [{"op": "pip", "packages": [...], "installer": "pip" | "uv"},
                {"op": "apt", "packages": [...]}, {"op": "run", "commands": [...]},
                {"op": "env", "vars": {...}}, {"op": "pysource", "files": [[path, b64], ...]},
                {"op": "dir", "remote": "/abs/path", "files": [[path, b64], ...]}],
     "hashes": [base hash, layer 1's, ...], "name": "env-<16 hex of the last hash>"}

A layer's hash is that of its parent's hash and its own definition (pip lists sorted, files by
content), so an unchanged spec has the same name everywhere, and changing the last layer changes
only the last hash: the builder finds every layer before it built already.  ``kernel`` is the
environment the backend's workers run by default (the kernel's, for an embedded backend): layers on
it are an overlay.  What a runtime cannot build it refuses before anything runs (``RUNTIMES``).
"""
from __future__ import annotations

import json

import xxhash

BASES = ("kernel", "debian_slim", "registry", "dockerfile")
OPS = ("pip", "apt", "run", "env", "pysource", "dir")
_FILES = ("pysource", "dir")
# what each runtime can build: a spec with anything else fails before a worker is leased, naming who can
RUNTIMES = {
    "local": {"kernel", "debian_slim", "pip", "run", "env", "pysource"},
    "docker": {"kernel", "debian_slim", "registry", "dockerfile", "pip", "apt", "run", "env", "pysource", "dir"},
    "ray": {"kernel", "pip", "env"},
}
MAX_FILES_BYTES = 16 * 1024 * 1024  # files a spec carries (add_local_python_source / add_local_dir)


def digest(parent: str, part: dict) -> str:
    """The hash of a layer (or base) given its parent's hash."""
    text = json.dumps(part, sort_keys=True, separators=(",", ":"))
    return xxhash.xxh3_128_hexdigest(f"{parent}\n{text}".encode())


def name_of(last_hash: str) -> str:
    return f"env-{last_hash[:16]}"


def seal(base: dict, layers: list) -> dict:
    """The spec with its hashes and name (the kernel makes it; the backend checks it with ``check``)."""
    hashes = [digest("", base)]
    for layer in layers:
        hashes.append(digest(hashes[-1], _hashable(layer)))
    return {"base": base, "layers": layers, "hashes": hashes, "name": name_of(hashes[-1])}


def _hashable(layer: dict) -> dict:
    """A layer as it is hashed: files by their content's hash, not their bytes."""
    if layer.get("op") not in _FILES:
        return layer
    return {**layer, "files": [[p, xxhash.xxh3_128_hexdigest(b.encode())] for p, b in layer["files"]]}


def check(spec) -> dict:
    """``spec`` if it is well formed and its hashes are its own, else ValueError saying what is wrong
    (the backend trusts nothing a kernel sends)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("base"), dict) or not isinstance(spec.get("layers"), list):
        raise ValueError("an image spec is {base, layers, hashes, name}")
    kind = spec["base"].get("kind")
    if kind not in BASES:
        raise ValueError(f"unknown image base {kind!r}; one of {', '.join(BASES)}")
    size = 0
    for layer in spec["layers"]:
        if not isinstance(layer, dict) or layer.get("op") not in OPS:
            raise ValueError(f"unknown image layer {layer!r}; its op is one of {', '.join(OPS)}")
        for key in ("packages", "commands"):
            if key in layer and not (isinstance(layer[key], list) and all(isinstance(p, str) for p in layer[key])):
                raise ValueError(f"image layer {layer['op']}: {key} must be a list of strings")
        if layer["op"] == "env" and not (isinstance(layer.get("vars"), dict)
                                         and all(isinstance(v, str) for v in layer["vars"].values())):
            raise ValueError("image layer env: vars must map names to strings")
        if layer["op"] in _FILES:
            files = layer.get("files")
            if not (isinstance(files, list) and all(isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f)
                                                    for f in files)):
                raise ValueError(f"image layer {layer['op']}: files must be [[path, base64], ...]")
            size += sum(len(b) for _, b in files)
    if size > MAX_FILES_BYTES * 4 // 3 + 1024:
        raise ValueError(f"an image spec carries at most {MAX_FILES_BYTES // 2**20} MiB of files")
    sealed = seal(spec["base"], spec["layers"])
    if sealed["hashes"] != spec.get("hashes") or sealed["name"] != spec.get("name"):
        raise ValueError("the image spec's hashes are not its own")
    return spec


def parts(spec: dict) -> list:
    """The spec's base and layers, each with its kind ("kernel", "pip", ...)."""
    return [spec["base"]["kind"], *(layer["op"] for layer in spec["layers"])]


def refused_by(spec: dict, runtime: str) -> str | None:
    """Why ``runtime`` cannot build ``spec`` (naming the runtimes that can), or None."""
    can = RUNTIMES.get(runtime, set())
    for part in parts(spec):
        if part not in can:
            others = [r for r, ops in RUNTIMES.items() if part in ops]
            return (f"the {runtime} runtime cannot build an image with {_words(part)}; "
                    f"{' or '.join(others) or 'no runtime'} can")
    return None


def _words(part: str) -> str:
    return {"apt": "apt_install", "registry": "from_registry", "dockerfile": "from_dockerfile", "pip": "pip_install",
            "run": "run_commands", "pysource": "add_local_python_source", "dir": "add_local_dir", "env": "env",
            "kernel": "the kernel's environment", "debian_slim": "debian_slim"}.get(part, part)
