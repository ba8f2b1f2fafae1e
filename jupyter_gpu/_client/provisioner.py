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

from typing import Any

from jupyter_client.provisioning import LocalProvisioner

from jupyter_gpu._client import embedded

NAME = "jupyter-gpu"  # the entry point's name (pyproject.toml), which the kernelspec names


class GPUProvisioner(LocalProvisioner):
    """LocalProvisioner, and the kernel's embedded backend started as the kernel is."""

    backend_start = None  # the start begun for the last launch (embedded._Soon: .done, .result), or None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        env = kwargs.get("env")
        # (jupyter_client resolved the kernelspec's "python" to an interpreter: the kernel's own)
        self.backend_start = embedded.start_for_kernel(dict(env) if env is not None else None, cmd[0],
                                                       kwargs.get("cwd"))
        return await super().launch_kernel(cmd, **kwargs)
