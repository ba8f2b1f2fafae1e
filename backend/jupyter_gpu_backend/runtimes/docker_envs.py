"""The docker runtime's images of ``jupyter_gpu.Image`` specs (``_wire/imagespec.py``): an image per
layer, built by the engine, each ``FROM`` its parent's, tagged ``jupyter-gpu-env:<16 hex>``.

A layer's tag is the hash of the spec layer's own hash (which chains its parents') and the id of the
worker image the stack stands on (its *root*): an unchanged spec finds its last tag and builds
nothing; changing the last layer builds only that one; a new worker image (the worker's source
changed) gives every stack new tags, so a layer never runs an old worker.  The tag is looked up
before anything else, so a cached spec costs one API call.

Roots (``DockerRuntime.build_image`` resolves ``kernel``, the runtime's own worker image):
``debian_slim`` is the local Debian base (``docker_image.LOCAL_BASE``, debootstrap, once per
machine) with the worker installed on it; ``registry`` an image of this machine's engine (pulled
when missing, which fails clearly where no registry answers) with the worker on it; ``dockerfile``
the spec's Dockerfile built with its directory as the context (the engine's own cache decides what
runs again; nothing of the backend's state may be that directory), with the worker on it.

Layers: ``pip`` is resolved on this host against the parent image's installed versions (``uv pip
compile``, as the local runtime does) and only what the parent lacks is downloaded here as wheels
for the image's Python (``pip download``: an index is unreachable or untrusted inside a build) and
installed with ``pip install --no-index --find-links``; ``apt`` and ``run`` run as root (Modal's
images do), the parent's user restored after; ``env`` is ``ENV`` lines whose values come in as build
arguments (no Dockerfile quoting to get wrong); ``pysource`` files go into the image's
site-packages, ``dir`` files to their absolute path, by ``COPY``.  The engine's output streams to
``say`` line by line; a failure is ``ImageBuildFailed`` with the installer's or the engine's words.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import xxhash

from jupyter_gpu.errors import ImageBuildFailed

from jupyter_gpu_backend.runtimes import docker_image, docker_mounts
from jupyter_gpu_backend.runtimes.envs import _project as project, uv

REPO = "jupyter-gpu-env"
LAYER_LABEL = "org.jupyter-gpu.layer"  # the spec layer's hash (what tests and clean-ups find it by)
ROOT_LABEL = "org.jupyter-gpu.root"  # the id of the worker image the stack stands on
WHEELS = "/tmp/jupyter-gpu-wheels"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ENGINE_CHATTER = re.compile(r" ---> |Removing intermediate container ")
# what a layer image's parent is asked once (its Python, where its packages go, what it has)
_FACTS = ("import importlib.metadata as m, json, re, sys, sysconfig\n"
          "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'purelib': sysconfig.get_paths()['purelib'],"
          " 'dists': {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version"
          " for d in m.distributions() if d.metadata['Name']}}))")


def layer_tag(root_id: str, layer_hash: str) -> str:
    key = xxhash.xxh3_128_hexdigest(f"{root_id}\n{layer_hash}".encode())
    return f"{REPO}:{key[:16]}"


class DockerEnvs:
    """Builds and finds the layer images of specs on one engine (``client``)."""

    def __init__(self, client):
        self.client = client
        self._facts: dict[str, dict] = {}  # image id -> its facts (_FACTS)
        self._locks: dict[str, asyncio.Lock] = {}

    # -- the root ----------------------------------------------------------------------------
    async def root(self, base: dict, base_hash: str, say) -> tuple[str, bool]:
        """(the worker image tag a non-``kernel`` base stands for, whether anything was built now)."""
        loop = asyncio.get_running_loop()
        tsay = _threadsafe(say, loop)
        kind = base["kind"]
        lock = self._locks.setdefault(base_hash, asyncio.Lock())
        async with lock:
            try:
                return await loop.run_in_executor(None, getattr(self, f"_root_{kind}"), base, base_hash, tsay)
            except ImageBuildFailed:
                raise
            except Exception as e:  # the engine's or debootstrap's words
                raise ImageBuildFailed(f"the {kind} base of the image could not be made: {type(e).__name__}: {e}") from None

    def _root_debian_slim(self, base: dict, base_hash: str, tsay) -> tuple[str, bool]:
        built = docker_image.build_base(self.client, docker_image.LOCAL_BASE, log=_lines(tsay))
        tag, worker_built = docker_image.ensure_worker_image(self.client, docker_image.LOCAL_BASE, _lines(tsay))
        python = self.facts(tag)["python"]
        if python != base["python"]:
            raise ImageBuildFailed(f"debian_slim(python_version={base['python']!r}): this machine's Debian base "
                                   f"({docker_image.LOCAL_BASE}) has Python {python}; ask for {python!r}")
        return tag, built or worker_built

    def _root_registry(self, base: dict, base_hash: str, tsay) -> tuple[str, bool]:
        import docker

        ref = base["ref"]
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            tsay(f"jupyter-gpu: {ref} is not on this machine; pulling it\n")
            try:
                self.client.images.pull(ref)
            except docker.errors.DockerException as e:
                raise ImageBuildFailed(f"from_registry({ref!r}): the image is not on this machine and pulling it "
                                       f"failed (is its registry reachable from here?): {e}") from None
        return docker_image.ensure_worker_image(self.client, ref, _lines(tsay))

    def _root_dockerfile(self, base: dict, base_hash: str, tsay) -> tuple[str, bool]:
        import docker

        tag = layer_tag("", base_hash)
        directory = os.path.dirname(base["path"])
        refused = docker_mounts.plan(directory).refused  # the backend's own state is never a build context
        with tempfile.TemporaryDirectory(prefix="jupyter-gpu-ctx-") as empty:
            if refused:
                why = next(iter(refused.values()))
                if why != "not an existing directory here":
                    raise ImageBuildFailed(f"from_dockerfile({base['path']!r}): its directory cannot be a build "
                                           f"context: {why}")
                tsay(f"jupyter-gpu: {directory} is not on the backend's machine: the Dockerfile is built "
                     "with an empty context\n")
                directory = empty
            with tempfile.NamedTemporaryFile("w", prefix="jupyter-gpu-Dockerfile-", suffix=".txt") as f:
                f.write(base["text"])
                f.flush()
                before = None
                with contextlib.suppress(docker.errors.ImageNotFound):
                    before = self.client.images.get(tag).id
                tsay(f"jupyter-gpu: building image layer dockerfile ({base_hash[:12]})\n")
                # an absolute Dockerfile outside the context: the SDK puts it into the context it sends
                self._engine_build(tsay, "from_dockerfile", path=directory, dockerfile=f.name, tag=tag,
                                   labels={LAYER_LABEL: base_hash})
        changed = self.client.images.get(tag).id != before
        worker, worker_built = docker_image.ensure_worker_image(self.client, tag, _lines(tsay))
        return worker, changed or worker_built

    # -- the layers --------------------------------------------------------------------------
    async def build(self, spec: dict, root: str, say) -> tuple[str, list]:
        """(the tag of the spec's last layer on the worker image ``root``, the hashes built now)."""
        import docker

        loop = asyncio.get_running_loop()
        if not spec["layers"]:
            return root, []
        root_id = await loop.run_in_executor(None, lambda: self.client.images.get(root).id)
        tags = [layer_tag(root_id, h) for h in spec["hashes"][1:]]
        if await loop.run_in_executor(None, self._exists, tags[-1]):
            return tags[-1], []  # the whole stack is there: nothing to look at
        tsay = _threadsafe(say, loop)
        built: list = []
        parent = root
        for layer, h, tag in zip(spec["layers"], spec["hashes"][1:], tags):
            lock = self._locks.setdefault(tag, asyncio.Lock())
            async with lock:  # two cells of one spec: one build
                if not await loop.run_in_executor(None, self._exists, tag):
                    try:
                        await loop.run_in_executor(None, self._layer, layer, h, parent, tag, root_id, tsay)
                    except ImageBuildFailed:
                        raise
                    except (docker.errors.DockerException, OSError) as e:  # the engine's words
                        raise ImageBuildFailed(f"{_word(layer['op'])} failed: {type(e).__name__}: {e}") from None
                    built.append(h)
            parent = tag
        if built:
            await loop.run_in_executor(None, prune_stale, self.client)
        return tags[-1], built

    def _exists(self, tag: str) -> bool:
        import docker

        try:
            self.client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    def _layer(self, layer: dict, h: str, parent: str, tag: str, root_id: str, tsay) -> None:
        """Build one layer image (in a thread; one builder of a tag per machine)."""
        op = layer["op"]
        with docker_image._locked(f"env-{tag.split(':')[1]}"):
            if self._exists(tag):  # another backend built it meanwhile
                return
            tsay(f"jupyter-gpu: building image layer {op} ({h[:12]})\n")
            user = self.client.images.get(parent).attrs.get("Config", {}).get("User") or "root"
            with tempfile.TemporaryDirectory(prefix="jupyter-gpu-ctx-") as ctx:
                lines, args = getattr(self, f"_op_{op}")(layer, parent, Path(ctx), tsay)
                if lines and lines[0] == "USER root":
                    lines.append(f"USER {user}")  # what the parent runs as, after root's work
                # the labels in one step (the build's labels= would add a step, a container, each)
                lines.append(f"LABEL {LAYER_LABEL}={json.dumps(h)} {ROOT_LABEL}={json.dumps(root_id)}")
                Path(ctx, "Dockerfile").write_text("\n".join([f"FROM {parent}", *lines]) + "\n")
                self._engine_build(tsay, _word(op), path=ctx, tag=tag, buildargs=args)

    def _op_pip(self, layer: dict, parent: str, ctx: Path, tsay):
        facts = self.facts(parent)
        missing = resolve(layer["packages"], facts, ctx, tsay)
        if not missing:
            tsay("jupyter-gpu: everything asked for is in the parent image already\n")
            return [], {}
        wheels = ctx / "wheels"
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar",
              "off", "-d", str(wheels), *docker_image.wheel_target(facts["python"]), *missing], tsay, "pip_install")
        (wheels / "requirements.txt").write_text("".join(m + "\n" for m in missing))
        # umask 0: what it installs is writable by whoever the container runs as (docker_mounts.py)
        return ["USER root", f"COPY wheels {WHEELS}",
                f"RUN umask 0000 && python -m pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check"
                f" --find-links {WHEELS} -r {WHEELS}/requirements.txt && rm -rf {WHEELS}"], {}

    def _op_apt(self, layer: dict, parent: str, ctx: Path, tsay):
        names = " ".join(shlex.quote(p) for p in layer["packages"])
        return ["USER root", "RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                f"--no-install-recommends {names} && rm -rf /var/lib/apt/lists/*"], {}

    def _op_run(self, layer: dict, parent: str, ctx: Path, tsay):
        # the exec form with sh -c: a command is passed as it is (newlines, quotes, $ and all)
        return ["USER root", *(f"RUN {json.dumps(['/bin/sh', '-c', c])}" for c in layer["commands"])], {}

    def _op_env(self, layer: dict, parent: str, ctx: Path, tsay):
        lines, pairs, args = [], [], {}
        for i, (name, value) in enumerate(layer["vars"].items()):
            if not _ENV_NAME.match(name):
                raise ImageBuildFailed(f"env: {name!r} is not an environment variable's name")
            lines.append(f"ARG JGPU_BUILD_ENV_{i}")
            pairs.append(f'{name}="${{JGPU_BUILD_ENV_{i}}}"')
            args[f"JGPU_BUILD_ENV_{i}"] = value
        return [*lines, f"ENV {' '.join(pairs)}"], args

    def _op_pysource(self, layer: dict, parent: str, ctx: Path, tsay):
        return self._files(layer, ctx, self.facts(parent)["purelib"], "add_local_python_source")

    def _op_dir(self, layer: dict, parent: str, ctx: Path, tsay):
        return self._files(layer, ctx, layer["remote"], "add_local_dir")

    @staticmethod
    def _files(layer: dict, ctx: Path, dest: str, what: str):
        for rel, data in layer["files"]:
            norm = posixpath.normpath(rel)
            if posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
                raise ImageBuildFailed(f"{what}: a path outside its directory: {rel}")
            p = ctx / "files" / norm
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(base64.b64decode(data))
        (ctx / "files").mkdir(exist_ok=True)
        return [f"COPY {json.dumps(['files', dest.rstrip('/') + '/'])}"], {}

    # -- the engine and the images -----------------------------------------------------------
    def facts(self, image: str) -> dict:
        """The Python version, site-packages and installed versions of ``image`` (asked once per id)."""
        image_id = self.client.images.get(image).id
        if image_id not in self._facts:
            out = self.client.containers.run(image_id, ["python", "-c", _FACTS], remove=True, network_mode="none",
                                             entrypoint=[])
            self._facts[image_id] = json.loads(out.decode().strip().splitlines()[-1])
        return self._facts[image_id]

    def _engine_build(self, tsay, what: str, **kwargs) -> None:
        """``docker build`` through the engine's API, its output to ``tsay`` a line at a time."""
        tail: list = []
        pending = ""
        for chunk in self.client.api.build(decode=True, rm=True, forcerm=True, pull=False, **kwargs):
            if "error" in chunk:
                said = re.sub(r"\x1b\[[0-9;]*m", "", "".join(tail[-15:])).rstrip()  # (stderr's red is for the cell)
                raise ImageBuildFailed(f"{what} failed: {chunk['error'].strip()}\n{said}".rstrip())
            pending += chunk.get("stream") or ""
            *done, pending = pending.split("\n")
            for line in done:
                if _ENGINE_CHATTER.match(line):  # the engine's bookkeeping, not the build's output
                    continue
                tail.append(line + "\n")
                del tail[:-30]
                tsay(line + "\n")
        if pending.strip():
            tsay(pending + "\n")


def prune_stale(client) -> None:
    """Remove the layer images whose root worker image is gone (``docker_image.prune`` untags the
    old ones after the worker's source changed): no backend runs them, and they would keep that
    worker image's half gigabyte alive.  Newest first (children before parents); one in use stays."""
    import docker

    live = {i.id for i in client.images.list() if i.tags}
    stale = [i for i in client.images.list(name=REPO)
             if ROOT_LABEL in (i.labels or {}) and i.labels[ROOT_LABEL] not in live]
    for image in sorted(stale, key=lambda i: i.attrs.get("Created", ""), reverse=True):
        for tag in image.tags:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(tag)


def resolve(packages: list, facts: dict, work: Path, tsay) -> list:
    """What a pip layer must install ("name==version", ...): ``packages`` resolved by uv for the
    image's Python against the parent's versions (those it names excepted), less what it has."""
    have = facts["dists"]
    named = {project(p) for p in packages}
    constraints = work / "constraints.txt"
    constraints.write_text("".join(f"{n}=={v.split('+')[0]}\n" for n, v in have.items() if n not in named))
    requirements = work / "requirements.in"
    requirements.write_text("".join(p + "\n" for p in packages))
    arch = os.uname().machine
    out = _run([uv(), "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python-version", facts["python"],
                "--python-platform", f"{arch}-manylinux_2_28", "--constraints", str(constraints), str(requirements)],
               tsay, "pip_install", echo=False)
    constraints.unlink()
    requirements.unlink()
    wanted = [line.strip() for line in out.splitlines() if "==" in line and not line.startswith("#")]
    return [w for w in wanted if have.get(project(w)) != w.split("==", 1)[1].strip()]


def _run(argv: list, tsay, what: str, echo: bool = True) -> str:
    """Run ``argv`` here; its stderr (and stdout, with ``echo``) to ``tsay`` as it comes; its stdout
    returned; ImageBuildFailed with its last lines when it fails."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if echo else subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, text=True, errors="replace")
    out, tail = [], []
    if echo:
        for line in proc.stdout:
            out.append(line)
            tail = (tail + [line])[-20:]
            tsay(line)
        code = proc.wait()
    else:
        stdout, stderr = proc.communicate()
        out, tail = [stdout], stderr.splitlines(keepends=True)[-20:]
        if stderr:
            tsay(stderr)
        code = proc.returncode
    if code:
        said = re.sub(r"\x1b\[[0-9;]*m", "", "".join(tail)).rstrip()
        raise ImageBuildFailed(f"{what} failed ({Path(argv[0]).name} exited {code}):\n{said}")
    return "".join(out)


def _word(op: str) -> str:
    return {"pip": "pip_install", "apt": "apt_install", "run": "run_commands", "env": "env",
            "pysource": "add_local_python_source", "dir": "add_local_dir"}.get(op, op)


def _threadsafe(say, loop):
    """``say`` callable from a builder's thread (it publishes on the loop)."""
    return lambda text: loop.call_soon_threadsafe(say, text)


def _lines(tsay):
    """docker_image's ``log(message)`` as lines of the cell's output."""
    return lambda message: tsay(f"jupyter-gpu: {message}\n")
