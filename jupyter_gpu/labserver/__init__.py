"""The Jupyter server extension behind the lab sidebar: it proxies to the jupyter-gpu backend.

Optional: `%%gpu` works without it (remote kernels, CI).  Every route sits under the server's
``base_url`` and behind Jupyter's own authentication; the backend's token never reaches the browser.
"""
from __future__ import annotations


def _jupyter_server_extension_points():
    return [{"module": "jupyter_gpu.labserver"}]


def _load_jupyter_server_extension(server_app):
    from jupyter_gpu.labserver.handlers import setup_handlers

    setup_handlers(server_app.web_app)
    register = getattr(server_app.contents_manager, "register_pre_save_hook", None)
    if register is not None:
        register(_drop_emptied_live)
    server_app.log.info("jupyter-gpu server extension loaded (routes under %sjupyter-gpu/)",
                        server_app.web_app.settings.get("base_url", "/"))


load_jupyter_server_extension = _load_jupyter_server_extension  # older servers


def _drop_emptied_live(model=None, **kwargs):
    """Pre-save hook: a saved notebook keeps a `%%gpu` cell's own outputs and its footer, not the
    emptied live status line the page still holds (cost/saved.py)."""
    if model and model.get("type") == "notebook" and isinstance(model.get("content"), dict):
        from jupyter_gpu.cost import saved

        saved.drop_emptied_live(model["content"])
