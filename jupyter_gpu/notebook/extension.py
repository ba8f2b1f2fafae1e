"""`%load_ext jupyter_gpu`: register the magics on the shell and hook the kernel (early sends, the
cell-text memo); `%unload_ext` undoes it and frees this kernel's workers."""
from __future__ import annotations

from jupyter_gpu.notebook import cell_text, debug, early
from jupyter_gpu.notebook.magics import GpuMagics, empty_body

magics: GpuMagics | None = None  # this kernel's, once loaded


def load(ip) -> None:
    global magics
    if magics is None or magics.shell is not ip:
        magics = GpuMagics(ip)
    ip.register_magics(magics)
    if empty_body not in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.append(empty_body)
    early.install(magics)  # a warm cell goes to its worker as its request arrives (early.py)
    cell_text.install(ip)  # IPython transforms a `%%gpu` cell's text once, not at every run
    debug.install(ip, magics.session)  # %debug after a %%gpu cell's error debugs on its worker
    _preconnect_after_this_cell(ip, magics.session)


def _preconnect_after_this_cell(ip, session) -> None:
    """Once the cell that loaded us has run, connect to the backend in the background (starting
    the embedded one): its start then overlaps what the notebook does before its first `%%gpu`
    cell (after a 1 s local cell, the first `%%gpu` cell took 0.28 s instead of 0.85 s; the
    whole-notebook benchmark, %%gpu from its first cell on, is unchanged).  After the cell, not now: a `%gpu
    use URL` in the same cell (the sidebar sends both) names another backend, and none is started
    for nothing."""
    def once(*_):
        ip.events.unregister("post_run_cell", once)
        session.preconnect()

    ip.events.register("post_run_cell", once)


def unload(ip) -> None:
    cell_text.uninstall(ip)
    debug.uninstall(ip)
    if magics is not None:
        magics.session.close()


def last_cell() -> dict | None:
    return None if magics is None else magics.session.last_footer
