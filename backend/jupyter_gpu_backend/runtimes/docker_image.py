"""The worker image of the `docker` runtime, rebuilt only when what goes into it changes.

Inputs: ``worker_image/Dockerfile``, the base image (name and id), the pinned wheels the worker needs
and the source of what the worker imports: ``jupyter_gpu_worker``, and of ``jupyter_gpu`` only
``errors.py`` and ``_wire/`` (``WORKER_SOURCES``; the import-linter contract "the worker imports only
jupyter_gpu._wire and jupyter_gpu.errors" keeps that true).  Their content hash is the image's tag
(``jupyter-gpu-worker:<hash>``): when that tag exists nothing is built, so a change to the footer, the
CI runner or the notebook code leaves the image as it is.

Python packages go into the image as wheels in the build context, installed with ``pip install
--no-index --find-links``: an index is not needed inside the build (here pip cannot even verify TLS
there), which is also how an air-gapped team builds.  The wheels are downloaded on this machine for
the base image's Python, pinned to the versions installed here, so the kernel and the worker unpickle
each other's values with the same cloudpickle and numpy.  The project's own code is copied as source
(the wheel of ``jupyter-gpu`` would pull the backend's web stack and the notebook tooling, which a
worker never imports).  torch is not installed: it comes with the base image when a team wants it
(the default base is a CUDA + PyTorch image); preloading torch in a zygote is the local runtime's.

    python -m jupyter_gpu_backend.runtimes.docker_image base     # local base: debootstrap + docker import
    python -m jupyter_gpu_backend.runtimes.docker_image worker [--base IMG]
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from jupyter_gpu._wire import settings

WORKER_REPO = "jupyter-gpu-worker"
LABEL = "org.jupyter-gpu.inputs"
# For real users: a public CUDA image that has Python (and torch, which their cells will want).
DEFAULT_BASE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
# What `base` builds here, where no image registry is reachable.
LOCAL_BASE = "jupyter-gpu-base:bookworm"
# What the worker imports, no more.  Pinned to this machine's versions (see the module doc).
# what the worker imports, and matplotlib: a %%gpu cell's figures show inline on every runtime
WORKER_PACKAGES = ["numpy", "cloudpickle", "ipython", "websockets", "xxhash", "msgspec", "typing_extensions",
                   "matplotlib", "matplotlib-inline", "nvidia-ml-py",
                   "comm",  # widgets' and libraries' comms go through the worker's kernel (kernel.py)
                   "ipywidgets", "tqdm"]  # what notebooks reach for in a cell, as the local runtime has them
# The project's files a worker runs, per package (a folder: its .py files): what it imports, no more.
WORKER_SOURCES = {"jupyter_gpu": ("__init__.py", "errors.py", "_wire"), "jupyter_gpu_worker": (".",)}


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = Path(root, "jupyter-gpu", "docker")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _locked(name: str):
    """One builder at a time per machine (a backend and `make docker-ready` may race)."""
    with open(cache_dir() / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def package_dir(name: str) -> Path:
    """Where an installed package's files are, found without importing it (the backend imports
    nothing of the worker)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def dockerfile_path() -> Path:
    pkg = package_dir("jupyter_gpu_worker")
    for p in (pkg / "Dockerfile", pkg.parent / "Dockerfile"):  # installed wheel; source tree
        if p.exists():
            return p
    raise FileNotFoundError(f"worker_image/Dockerfile is not next to {pkg}")


def source_files() -> list[tuple[str, Path]]:
    """(path in the image's src/, file) for what a worker imports (``WORKER_SOURCES``)."""
    out = []
    for name, parts in WORKER_SOURCES.items():
        pkg = package_dir(name)
        for part in parts:
            where = pkg / part
            files = [where] if where.is_file() else sorted(where.rglob("*.py"))
            out += [(f"{name}/{f.relative_to(pkg).as_posix()}", f) for f in files if "__pycache__" not in f.parts]
    return out


def pins() -> list[str]:
    out = []
    for name in WORKER_PACKAGES:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)  # not installed here (nvidia-ml-py without [worker]): take the newest
    return out


# ----------------------------------------------------------------------------- base image
def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (never a host name written into the project)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for block in Path(path).read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", block, re.M))
            suites = fields.get("Suites", "").split()
            if fields.get("URIs") and any(s in ("bookworm", "stable") for s in suites):
                return fields["URIs"].split()[0]
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(bookworm|stable)\s", line + " ")
                if m:
                    return m.group(1)
    raise RuntimeError("no Debian bookworm archive in /etc/apt/sources.list*: cannot debootstrap a base image")


def build_base(client, name: str = LOCAL_BASE, log=print) -> bool:
    """A minimal Debian bookworm with python3 and venv, imported as ``name``; once per machine.

    True when it was built now."""
    import docker

    with _locked("base"):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(name)
            return False
        mirror = debian_mirror()
        log(f"building the base image {name}: debootstrap --variant=minbase bookworm from {mirror}")
        t0 = time.monotonic()
        root = tempfile.mkdtemp(prefix="jupyter-gpu-rootfs-", dir=cache_dir())
        try:
            subprocess.run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv",
                            "bookworm", root, mirror], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):  # ~half the size
                for p in Path(root, junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            tar = os.path.join(cache_dir(), f"rootfs-{os.getpid()}.tar")
            try:
                subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True, stdin=subprocess.DEVNULL)
                repo, tag = name.rsplit(":", 1)
                client.api.import_image_from_file(tar, repository=repo, tag=tag, changes=["ENV LANG=C.UTF-8"])
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tar)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"debootstrap failed: {e.stderr.decode(errors='replace')[-2000:]}") from None
        finally:
            _unmount_below(root)  # a failed debootstrap leaves /proc (or more) mounted in the chroot
            shutil.rmtree(root, ignore_errors=True)
        log(f"base image {name} built in {time.monotonic() - t0:.0f} s")
        return True


def _unmount_below(root: str) -> None:
    """Unmount whatever is mounted under ``root``, deepest first, before it is deleted."""
    root = os.path.realpath(root)
    with open("/proc/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    for p in sorted((p for p in points if p.startswith(root + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], stdin=subprocess.DEVNULL, capture_output=True)


# ----------------------------------------------------------------------------- worker image
def base_python(client, base: str) -> str:
    """"3.11": the Python of the base image, for which the wheels are downloaded."""
    out = client.containers.run(base, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                remove=True, network_mode="none", entrypoint=[])
    return out.decode().strip()


def wheel_target(python: str) -> list[str]:
    """``pip download`` options for wheels that install on a Debian-like image with ``python`` on this
    machine's architecture (binary only: nothing is compiled in an image without an index)."""
    arch = platform.machine()
    cmd = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for v in (36, 34, 31, 28, 27, 24, 17, 12, 5):
        cmd += ["--platform", f"manylinux_2_{v}_{arch}"]
    return [*cmd, "--platform", f"linux_{arch}"]


def wheels(python: str, log=print) -> Path:
    """The wheels for ``pins()`` and their dependencies, for ``python`` on Linux; cached."""
    arch = platform.machine()
    key = hashlib.sha256(f"{python} {arch} {' '.join(pins())}".encode()).hexdigest()[:16]
    d = cache_dir() / f"wheels-{key}"
    if (d / "requirements.txt").exists():
        return d
    with _locked(f"wheels-{key}"):
        if (d / "requirements.txt").exists():
            return d
        log(f"downloading the worker's wheels for Python {python} ({arch})")
        tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(tmp),
               *wheel_target(python)]
        r = subprocess.run([*cmd, *pins()], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"pip download of the worker's wheels failed:\n{r.stderr[-3000:]}")
        (tmp / "requirements.txt").write_text("\n".join(pins()) + "\n")  # written last: the dir is complete
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
    return d


def inputs_hash(dockerfile: bytes, base: str, base_id: str, wheel_names: list[str],
                sources: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for part in (b"dockerfile", dockerfile, b"base", base.encode(), base_id.encode(), b"wheels",
                 *(w.encode() for w in sorted(wheel_names))):
        h.update(len(part).to_bytes(8, "little") + part)
    for rel, data in sorted(sources):
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:20]


def ensure_worker_image(client, base: str | None = None, log=print) -> tuple[str, bool]:
    """(tag, built now): the worker image for the current inputs, built only if its tag is missing."""
    import docker

    base = base or settings.DOCKER_BASE.get() or DEFAULT_BASE
    try:
        base_id = client.images.get(base).id
    except docker.errors.ImageNotFound:
        log(f"pulling the base image {base}")
        base_id = client.images.pull(base).id
    python = base_python(client, base)
    wheel_dir = wheels(python, log)
    wheel_names = sorted(p.name for p in wheel_dir.iterdir())
    dockerfile = dockerfile_path().read_bytes()
    sources = [(rel, f.read_bytes()) for rel, f in source_files()]
    tag = f"{WORKER_REPO}:{inputs_hash(dockerfile, base, base_id, wheel_names, sources)}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag, False
    with _locked("worker"):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(tag)
            return tag, False
        log(f"building the worker image {tag} from {base} (Python {python})")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="jupyter-gpu-ctx-") as ctx:
            Path(ctx, "Dockerfile").write_bytes(dockerfile)
            shutil.copytree(wheel_dir, Path(ctx, "wheels"))
            for rel, data in sources:
                p = Path(ctx, "src", rel)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            try:
                client.images.build(path=ctx, tag=tag, buildargs={"BASE_IMAGE": base}, labels={LABEL: tag},
                                    rm=True, forcerm=True, pull=False)
            except docker.errors.BuildError as e:
                lines = "".join(str(x.get("stream") or x.get("error") or "") for x in e.build_log)
                raise RuntimeError(f"building {tag} failed: {e.msg}\n{lines[-3000:]}") from None
        log(f"worker image {tag} built in {time.monotonic() - t0:.0f} s")
        prune(client, keep=tag)
        return tag, True


def prune(client, keep: str, newest: int = 3) -> None:
    """Remove older worker images (one per change of the source) beyond the ``newest`` few.

    An image a container still uses is kept (Docker refuses); a backend whose image went away
    builds it again on its next cold start."""
    import docker

    images = sorted(client.images.list(name=WORKER_REPO), key=lambda i: i.attrs.get("Created", ""), reverse=True)
    for img in images[newest:]:
        for t in img.tags:
            if t != keep:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(t)


def main(argv=None) -> int:
    import docker

    ap = argparse.ArgumentParser(prog="python -m jupyter_gpu_backend.runtimes.docker_image", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["base", "worker"])
    ap.add_argument("--base", help=f"base image of the worker image (default: $JUPYTER_GPU_DOCKER_BASE or {DEFAULT_BASE})")
    ap.add_argument("--name", default=LOCAL_BASE, help="name of the base image `base` builds")
    ap.add_argument("--quiet", action="store_true", help="say nothing when nothing was built")
    args = ap.parse_args(argv)
    client = docker.from_env()
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    if args.what == "base":
        build_base(client, args.name, log)
    else:
        tag, built = ensure_worker_image(client, args.base, log)
        if built or not args.quiet:
            print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
