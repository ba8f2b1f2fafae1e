"""A ``jupyter_gpu.Image``'s spec (``_wire/imagespec.py``), from the request that names it to the
worker image its workers start from: checked when the request arrives (its seal, whether this
runtime can build it: a refusal fails the cell at once), built in the cold path before the first
worker (``runtime.build_image``: phase ``build``, its output streamed into the cell, its seconds the
run's ``build``), once per spec however many cells wait for it.
"""
from __future__ import annotations

import asyncio
import time

from jupyter_gpu._wire import imagespec, messages
from jupyter_gpu.errors import BadRequest, ImageBuildFailed

from jupyter_gpu_backend.config import OWNER


class Builds:
    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.specs: dict = {}  # image name -> its spec, until built
        self._locks: dict = {}  # image name -> the lock its builds take

    def accept(self, spec, image: str, user: str) -> str:
        """The image name of a request with ``image_spec`` from ``user``; BadRequest / ImageBuildFailed now."""
        try:
            imagespec.check(spec)
        except ValueError as e:
            raise BadRequest(f"image_spec: {e}") from None
        if spec["base"]["kind"] == "dockerfile" and user != OWNER:
            # its build context is a directory of the backend's host: not another user's to name
            raise ImageBuildFailed("from_dockerfile builds from a directory of the backend's host: only the "
                                   "backend's owner may; ask for the image in its config ([images.NAME])")
        if spec["name"] != image:
            raise BadRequest(f"image_spec is the spec of {spec['name']}, not of image {image!r}")
        why = imagespec.refused_by(spec, self.scheduler.runtime.name)
        if why:
            raise ImageBuildFailed(why)
        if image not in self.scheduler.images:
            self.specs[image] = spec
        return image

    async def build(self, run) -> None:
        images = self.scheduler.images
        spec = self.specs.get(run.image)
        if spec is None or run.image in images:
            return
        t0 = time.monotonic()
        say = sayer(run)
        async with self._locks.setdefault(run.image, asyncio.Lock()):
            if run.image in images:
                return  # another cell's build of the same spec, just finished
            image, built = await self.scheduler.runtime.build_image(spec, say)
            images[run.image] = image
            self.specs.pop(run.image, None)
        if built:
            run.build = time.monotonic() - t0


def sayer(run):
    """``say(text)``: a build's output, into the run's cell as its stderr; the first also turns the
    cell's status line to ``build`` (follow.py's too)."""
    announced = []

    def say(text: str) -> None:
        if not announced:  # the status line says "build" once there is something to build
            announced.append(True)
            asyncio.ensure_future(run.session.emit({"type": messages.PHASE, "cell": run.id, "phase": "build",
                                                    "gpu": run.gpu}))
        asyncio.ensure_future(run.session.emit({"type": messages.STREAM, "cell": run.id, "name": "stderr",
                                                "text": text}))

    return say
