"""The "Python 3 (jupyter-gpu)" kernel's provisioner: its kernel starts with its embedded backend.

A notebook on the plain python3 kernel starts the embedded backend at `%load_ext jupyter_gpu`, and its
first `%%gpu` cell waits for that start (~0.25 s here: the backend's imports, then its early worker).
A kernel of the jupyter-gpu kernelspec (``share/jupyter/kernels/jupyter-gpu``, installed with the
package) says that its notebook runs `%%gpu` cells: this provisioner, Jupyter's own hook for what
happens as a kernel is launched, starts the backend beside the kernel's process, with the kernel's
environment, interpreter and directory, so it is up when the kernel is (the kernel's start takes a
core for ~0.6 s; the backend's the other).  The kernel then finds it as it finds any embedded backend,
through the runtime file (its lock held by this start until the backend is up).  Everything else is
LocalProvisioner's.

A backend that no kernel connects to leaves after ``JUPYTER_GPU_EMBEDDED_GRACE`` seconds, with its
early worker, like any embedded backend whose last client left.
"""
from __future__ import annotations

import threading
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

NAME = "jupyter-gpu"  # the entry point's name (pyproject.toml), which the kernelspec names


class BackendStart:
    """The kernel's backend found or started on a thread: ``done`` (an Event) is set once
    ``result`` is known: (url, token), or None (a backend is configured, or it could not start: the
    kernel's `%load_ext` then tries itself, and says why)."""

    def __init__(self, env: dict | None, python: str, cwd: str | None):
        self.done = threading.Event()
        self.result: tuple[str, str] | None = None
        threading.Thread(target=self._run, args=(env, python, cwd), name="jupyter-gpu-kernel-backend",
                         daemon=True).start()

    def _run(self, env, python, cwd) -> None:
        try:
            # imported here (~0.013 s), not on the way to the kernel's launch
            from jupyter_gpu._client import embedded

            self.result = embedded.start_for_kernel(env, python, cwd)
        except Exception:
            pass
        finally:
            self.done.set()


class GPUProvisioner(LocalProvisioner):
    """LocalProvisioner, and the kernel's embedded backend started as the kernel is."""

    backend_start: BackendStart | None = None  # the start begun for the last launch

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        info = await super().launch_kernel(cmd, **kwargs)  # the kernel's process first
        env = kwargs.get("env")
        # (jupyter_client resolved the kernelspec's "python" to an interpreter: the kernel's own)
        self.backend_start = BackendStart(dict(env) if env is not None else None, cmd[0], kwargs.get("cwd"))
        return info
