"""jupyter-gpu: run notebook cells on serverless GPU workers with `%%gpu`.

    %load_ext jupyter_gpu

    %%gpu --gpu H100
    import torch
    x = torch.randn(4096, 4096, device="cuda") @ w
"""
from __future__ import annotations

__version__ = "0.1.0"

_magics = None


def load_ipython_extension(ip) -> None:
    global _magics
    from jupyter_gpu.notebook import cell_text, early
    from jupyter_gpu.notebook.magics import GpuMagics, help_without_body

    if _magics is None or _magics.shell is not ip:
        _magics = GpuMagics(ip)
    ip.register_magics(_magics)
    if help_without_body not in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.append(help_without_body)
    early.install(_magics)  # a warm cell goes to its worker as its request arrives (early.py)
    cell_text.install(ip)  # IPython transforms a `%%gpu` cell's text once, not at every run


def unload_ipython_extension(ip) -> None:
    from jupyter_gpu.notebook import cell_text

    cell_text.uninstall(ip)
    if _magics is not None:
        _magics.session.close()


def last_cell() -> dict | None:
    """The footer record of this kernel's last `%%gpu` cell (None before the first)."""
    return None if _magics is None else _magics.session.last_footer


def _jupyter_labextension_paths():
    """Where the prebuilt lab extension is (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "jupyter-gpu"}]
