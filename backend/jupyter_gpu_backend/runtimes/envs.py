"""The local runtime's worker environments from ``jupyter_gpu.Image`` specs (``_wire/imagespec.py``),
built with uv, one directory per layer hash, kept across backend restarts.

Each layer is a directory ``<root>/<hash>/`` (built in place under a file lock: a venv's scripts
name their directory) holding, once built, ``layer.json`` (written last: {python, site, env}).  A layer that installs anything (pip, run, pysource) is a virtual environment
of its own chained to its parent's: its site-packages ends with a ``.pth`` line
``import site; site.addsitedir(PARENT)``, so the parent's packages (and the parent's own chain, its
editable installs included) come after its own, which shadow them.  So a layer holds only what it
adds, and changing the last layer builds only that one; an ``env`` layer is metadata only.

- ``kernel`` (``Image.from_kernel()``, ``%%gpu --pip``): the base is this backend's interpreter, the
  environment its default workers run (an embedded backend's is its kernel's): layers on it are an
  overlay.
- ``debian_slim``: a fresh virtual environment of that Python (one on this host: uv looks; none
  found fails naming it), with what a worker imports (the docker image's pins: the same cloudpickle
  and numpy as here) and this project's source (symlinked).
- ``pip``: resolved by ``uv pip compile`` against the parent's installed versions as constraints
  (the packages it names excepted), then only what the parent lacks is installed (``--no-deps``):
  an overlay never reinstalls the parent's torch, numpy... and never pulls another build of them.
- ``run``: shell commands with the layer's environment active (``VIRTUAL_ENV``, ``PATH``).
- ``pysource``: the kernel's modules, written into the layer's site-packages.

Everything the installers print streams to ``say`` (the cell's output).  A failure raises
``BuildFailed`` with the installer's own message; nothing of a half-built layer is kept.
"""
from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from jupyter_gpu._wire import imagespec, settings
from jupyter_gpu.errors import ImageBuildFailed as BuildFailed

from jupyter_gpu_backend.private import private_dir, private_file


@dataclass
class Built:
    python: str  # the interpreter the image's zygote and workers run
    env: dict  # their environment variables (env layers)
    site: str | None  # the last layer's site-packages (None: the base interpreter's own)
    built: list  # hashes built now (the others were there)
    # on the backend's own environment (``kernel``): the layers' site-packages, nearest first (else
    # None); and whether any of them holds another version of a package that environment has
    sites: list | None = None
    shadows: bool = True


def default_root() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root, "jupyter-gpu", "envs")


def uv() -> str:
    """The uv executable beside this interpreter (installed with the backend), else on PATH."""
    here = Path(sys.executable).with_name("uv")
    found = str(here) if here.exists() else shutil.which("uv")
    if not found:
        raise BuildFailed("building an Image on the local runtime needs uv: pip install uv")
    return found


class LocalEnvs:
    def __init__(self, root: Path | None = None, base_python: str | None = None, group: int | None = None):
        self.root = Path(root or default_root())
        self.base_python = base_python or sys.executable
        self._locks: dict[str, asyncio.Lock] = {}
        # under --users: the sandboxed workers' group (runtimes/local.py), which may read (not write) it
        self.group = group
        if group is not None and self.root.is_dir():
            for d in [self.root, *(p for p in self.root.iterdir() if p.is_dir())]:
                self._grant(d)

    def _grant(self, path: Path) -> None:
        """Let the workers' group read ``path`` (a directory of the cache): 0750, group theirs."""
        if self.group is not None:
            os.chown(path, -1, self.group)
            os.chmod(path, 0o750)

    def ready(self, spec: dict) -> Built | None:
        """The built image, when every layer of it is there already (no build)."""
        info = self._info(spec["hashes"][-1])
        return _built(info, []) if info else None

    def _info(self, h: str) -> dict | None:
        try:
            return json.loads((self.root / h / "layer.json").read_text())
        except (OSError, ValueError):
            return None

    async def build(self, spec: dict, say) -> Built:
        """Build what is missing of ``spec`` (``say(text)``: the build's output, as it comes)."""
        reason = imagespec.refused_by(spec, "local")
        if reason:
            raise BuildFailed(reason)
        lock = self._locks.setdefault(spec["hashes"][-1], asyncio.Lock())
        async with lock:  # two cells of one spec: one build, the second finds it done
            built: list = []
            parent = None
            for part, h in zip([spec["base"], *spec["layers"]], spec["hashes"]):
                info = self._info(h)
                if info is None:
                    info = await self._layer(part, h, parent, say)
                    built.append(h)
                parent = info
            return _built(parent, built)

    async def _layer(self, part: dict, h: str, parent: dict | None, say) -> dict:
        kind = part.get("kind") or part.get("op")
        work = self.root / h  # built where it stays: a venv's scripts name their own directory
        private_dir(self.root)  # the backend user's alone: what is under it stays out of other users' reach
        self._grant(self.root)
        with private_file(self.root / f"{h}.lock", "a") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)  # one builder per layer on this host
            info = self._info(h)
            if info is not None:  # another backend built it meanwhile
                return info
            shutil.rmtree(work, ignore_errors=True)  # what a build that died left
            work.mkdir(mode=0o700)
            self._grant(work)
            try:
                if kind == "kernel":
                    info = {"python": self.base_python, "site": None, "env": {}, "sites": [], "shadows": False,
                            "chain": _base_dirs(), "version": "%d.%d" % sys.version_info[:2]}
                elif kind == "env":
                    info = {**parent, "env": {**parent["env"], **part["vars"]}}
                else:
                    say(f"jupyter-gpu: building image layer {kind} ({h[:12]})\n")
                    info = await self._venv(work, part, parent, say)
                tmp = work / "layer.json.tmp"
                with private_file(tmp, "w") as f:
                    f.write(json.dumps(info))
                os.replace(tmp, work / "layer.json")  # last: a layer is there or it is not
                return info
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise

    async def _venv(self, work: Path, part: dict, parent: dict | None, say) -> dict:
        kind = part.get("kind") or part.get("op")
        python = part["python"] if kind == "debian_slim" else parent["python"]
        # a pip layer's resolution needs nothing of its venv: both at once
        resolving = asyncio.ensure_future(self._resolve(work, part["packages"], parent, say)) if kind == "pip" else None
        try:
            await self._run([uv(), "venv", "--quiet", "--python", python, str(work / "venv")], say, what=kind)
        except BaseException:
            if resolving is not None:
                resolving.cancel()
            raise
        vpython = str(work / "venv" / "bin" / "python")
        (site,) = (work / "venv" / "lib").glob("python*/site-packages")
        site = str(site)
        if parent is not None:  # (not where a worker puts the layers' sites on sys.path itself: agent.image_sites)
            chain = parent["site"] or _base_site(parent["python"])
            Path(site, "zz_jupyter_gpu_parent.pth").write_text(
                f"import os, site; os.environ.get({settings.IMAGE_SITES.name!r}) or site.addsitedir({chain!r})\n")
        env = dict(parent["env"]) if parent else {}
        shadows = kind in ("debian_slim", "run")  # (run_commands may install anything)
        if kind == "debian_slim":
            await self._fresh(work, site, say)
        elif kind == "pip":
            shadows = await self._install(work, *await resolving, say)
        elif kind == "run":
            for command in part["commands"]:
                say(f"$ {command}\n")
                await self._run(["/bin/sh", "-c", command], say, what="run_commands", cwd=str(work),
                                env={**os.environ, **env, "VIRTUAL_ENV": str(work / "venv"),
                                     "PATH": f"{work / 'venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"})
        elif kind == "pysource":
            root = Path(site).resolve()
            for rel, data in part["files"]:
                target = (root / rel).resolve()
                if root not in target.parents:
                    raise BuildFailed(f"add_local_python_source: a path outside site-packages: {rel}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(data))
        if parent is None:  # debian_slim: a root of its own
            return {"python": vpython, "site": site, "env": env, "sites": None, "chain": [site],
                    "version": part["python"], "shadows": True}
        sites = None if parent["sites"] is None else [site, *parent["sites"]]
        return {"python": vpython, "site": site, "env": env, "sites": sites, "chain": [site, *parent["chain"]],
                "version": parent["version"], "shadows": shadows or parent["shadows"]}

    async def _fresh(self, work: Path, site: str, say) -> None:
        """What a worker imports (pinned as the docker image pins it) and this project's source."""
        from jupyter_gpu_backend.runtimes import docker_image

        await self._run([uv(), "pip", "install", "--python", str(work / "venv" / "bin" / "python"),
                         *docker_image.pins()], say, what="debian_slim")
        src = work / "src"
        src.mkdir()
        for name in docker_image.WORKER_SOURCES:
            os.symlink(docker_image.package_dir(name), src / name)
        Path(site, "jupyter_gpu_worker_src.pth").write_text(f"{src}\n")

    async def _resolve(self, work: Path, packages: list, parent: dict, say) -> tuple:
        """(what the layer must install: ["name==version", ...], the parent's {name: version}):
        ``packages`` resolved against the parent's versions (its own named ones excepted)."""
        # what the parent's interpreter sees, read off its chain's dist-info names (~1 ms; an
        # interpreter asked with importlib.metadata: 0.7-2.3 s on this machine)
        have = await asyncio.to_thread(_scan, parent["chain"])
        named = {_project(p) for p in packages}
        constraints = work / "constraints.txt"
        constraints.write_text("".join(f"{n}=={v.split('+')[0]}\n" for n, v in have.items() if n not in named))
        requirements = work / "requirements.txt"
        requirements.write_text("".join(p + "\n" for p in packages))
        out = await self._run([uv(), "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python-version",
                               parent["version"], "--constraints", str(constraints), str(requirements)], say,
                              what="pip_install", echo=False)
        wanted = [line.strip() for line in out.splitlines() if "==" in line and not line.startswith("#")]
        return [w for w in wanted if have.get(_project(w)) != w.split("==", 1)[1].strip()], have

    async def _install(self, work: Path, missing: list, have: dict, say) -> bool:
        """Install ``missing`` alone (their dependencies are the parent's); whether any is another
        version of a package the parent has."""
        if not missing:
            say("jupyter-gpu: everything asked for is in the parent environment already\n")
            return False
        argv = [uv(), "pip", "install", "--no-deps", "--python", str(work / "venv" / "bin" / "python"), *missing]
        try:  # the exact versions are known: from uv's cache without asking the index (~0.2 s less) ...
            out = await self._run([*argv, "--offline"], lambda _: None, what="pip_install", merge=True)
            say(out)
        except BuildFailed:  # ... unless a wheel is not in it yet
            await self._run(argv, say, what="pip_install")
        return any(_project(m) in have for m in missing)

    async def _run(self, argv: list, say, what: str, cwd: str | None = None, env: dict | None = None,
                   echo: bool = True, merge: bool = False) -> str:
        """Run ``argv``; its stderr (and stdout, with ``echo``) stream to ``say``; its stdout returned
        (``merge``: with its stderr).  BuildFailed with its last lines when it fails."""
        env = {**(env or os.environ), "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}  # this host's Pythons only
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env)
        out_lines: list = []
        tail: list = []

        async def pump(stream, keep: list, show: bool):
            while True:
                line = await stream.readline()
                if not line:
                    return
                text = line.decode(errors="replace")
                keep.append(text)
                tail.append(text)
                del tail[:-20]
                if show:
                    say(text)

        await asyncio.gather(pump(proc.stdout, out_lines, echo), pump(proc.stderr, out_lines if merge else [], True))
        code = await proc.wait()
        if code != 0:
            said = re.sub(r"\x1b\[[0-9;]*m", "", "".join(tail)).rstrip()  # (its colours are for the cell's stream)
            raise BuildFailed(f"{what} failed ({Path(argv[0]).name} exited {code}):\n{said}")
        return "".join(out_lines)


def _built(info: dict, built: list) -> Built:
    return Built(info["python"], info["env"], info["site"], built, info.get("sites"), info.get("shadows", True))


def _base_dirs() -> list:
    """The backend's own interpreter's package directories (the ``kernel`` base's), in sys.path order."""
    return [p for p in sys.path if p and os.path.isdir(p) and p.rstrip("/").endswith(("site-packages", "dist-packages"))]


def _scan(dirs: list) -> dict:
    """{normalised name: version} from the ``NAME-VERSION.dist-info`` directories of ``dirs`` (the
    first a name is found in wins, as on sys.path)."""
    have: dict = {}
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if n.endswith(".dist-info"):
                name, _, version = n[:-len(".dist-info")].partition("-")
                have.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
    return have


def _base_site(python: str) -> str:
    """The site-packages of the backend's own interpreter (the chain's end: ``kernel``)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return sysconfig.get_paths()["purelib"]
    raise BuildFailed(f"no site-packages known for {python}")


def _project(requirement: str) -> str:
    """The normalised project name of a requirement string ("Six==1.16" -> "six")."""
    name = re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()
