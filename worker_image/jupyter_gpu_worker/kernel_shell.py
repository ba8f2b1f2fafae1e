"""What ipykernel's shell adds to IPython's, on the worker: a `%%gpu` cell's shell behaves as the
notebook kernel's own (ipykernel/zmqshell.py, whose module the worker does not import).

- the pager: ``obj?``, ``%magic``, ``%quickref`` page their text; a kernel puts it in the
  execute_reply's payload (``source: page``), which JupyterLab shows below the cell.  Here it is a
  ``payload`` event, and the notebook kernel pages it with its own pager (notebook/sink.py);
- ``!cmd`` runs in a pseudo-terminal (IPython's ``system_piped``, through pexpect), so its output
  is what a local cell shows (a terminal's line ends, ``hi\\r\\n``); with the environment a kernel
  sets for it (no pager a command could block on, colours forced);
- the kernel's magics that work on a worker: ``%clear``, ``%less``, ``%more``, ``%man``,
  ``%autosave``, ``%store`` (IPython's storemagic, which a kernel loads); those about the notebook's
  kernel itself (``%connect_info``, ``%qtconsole``, ``%subshell``, ``%gpu``) are not registered,
  so ``%lsmagic`` lists what works, and calling one says where it runs;
- ``%gui``: the same checks and messages as a kernel's (an unknown name, a missing Qt binding);
  a worker has no display, so no event loop runs.
"""
from __future__ import annotations

import os

from IPython.core import page
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from jupyter_gpu._wire import messages

# ipykernel's ZMQInteractiveShell.init_environment: what `!cmd` and the user's code see
KERNEL_ENVIRONMENT = {"TERM": "xterm-color", "CLICOLOR": "1", "FORCE_COLOR": "1", "CLICOLOR_FORCE": "1",
                      "PAGER": "cat", "GIT_PAGER": "cat"}
# ipykernel.eventloops.loop_map's keys, in its order (its error message lists them)
GUIS = ("inline", "nbagg", "webagg", "notebook", "ipympl", "widget", None, "qt", "qt5", "qt6", "wx", "tk", "gtk",
        "gtk3", "osx", "macosx", "asyncio")
# the notebook kernel's own magics, which mean nothing on a worker
KERNEL_ONLY = frozenset({"connect_info", "qtconsole", "subshell", "gpu"})


def install(shell) -> None:
    """Give ``shell`` a kernel's pager, magics and environment (once, as it is created)."""
    os.environ.update(KERNEL_ENVIRONMENT)
    shell.set_hook("show_in_pager", page.as_hook(_pager(shell)), 99)
    shell.register_magics(KernelMagics)
    try:
        shell.extension_manager.load_extension("storemagic")  # IPython's: an IPKernelApp loads it
    except Exception:  # pragma: no cover - an IPython without it
        pass


def _pager(shell):
    def page_payload(text, start=0, screen_lines=0, pager_cmd=None):
        """ipykernel's ``payloadpage_page``, as an event the kernel pages."""
        from jupyter_gpu_worker.events import jsonable

        data = text if isinstance(text, dict) else {"text/plain": text}
        shell.emitter.event({"type": messages.PAYLOAD, "source": "page", "data": jsonable(data),
                             "start": max(0, int(start or 0))})

    return page_payload


def not_here(magic: str, kind: str = "Line") -> UsageError | None:
    """The error for a kernel-only magic called in a `%%gpu` cell (None: not one of them)."""
    if magic not in KERNEL_ONLY:
        return None
    sigil = "%%" if kind == "Cell" else "%"
    return UsageError(f"{kind} magic function `{sigil}{magic}` is the notebook kernel's: a %%gpu cell runs on a "
                      "worker, so run it in a cell without %%gpu.")


def enable_gui(shell, gui=None) -> None:
    """``%gui NAME`` as a kernel answers it: an unknown name and a missing Qt binding are errors
    (``%gui`` logs them); a worker has no display, so no event loop is run for a known one."""
    if gui not in GUIS:
        raise UsageError(f"Invalid GUI request {gui!r}, valid ones are:dict_keys({list(GUIS)!r})")
    if gui is not None and gui.startswith("qt"):
        _qt_api(gui)
        from IPython.external.qt_for_kernel import QtCore  # noqa: F401 - the error a missing binding gives
    shell.active_eventloop = gui


_QT = {"qt5": (("PyQt5", "pyqt5"), ("PySide2", "pyside2")), "qt6": (("PyQt6", "pyqt6"), ("PySide6", "pyside6"))}


def _qt_api(gui: str) -> None:
    """ipykernel's ``set_qt_api_env_from_gui``, in short: the binding a request names (QT_API)."""
    if gui == "qt":  # IPython picks one
        os.environ.pop("QT_API", None)
    elif gui in _QT and "QT_API" not in os.environ:
        import importlib.util

        found = [api for module, api in _QT[gui] if importlib.util.find_spec(module) is not None]
        os.environ["QT_API"] = (found or [_QT[gui][0][1]])[0]


@magics_class
class KernelMagics(Magics):
    """ipykernel's KernelMagics that make sense on a worker, as it writes them."""

    @line_magic
    def clear(self, arg_s):
        """Clear the terminal."""
        self.shell.system("clear" if os.name == "posix" else "cls")

    @line_magic
    def less(self, arg_s):
        """Show a file through the pager.

        Files ending in .py are syntax-highlighted."""
        if not arg_s:
            raise UsageError("Missing filename.")
        if arg_s.endswith(".py"):
            from IPython.utils import openpy

            cont = self.shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))
        else:
            with open(arg_s) as fid:
                cont = fid.read()
        page.page(cont)

    more = line_magic("more")(less)

    @line_magic
    def man(self, arg_s):
        """Find the man page for the given command and display in pager."""
        page.page(self.shell.getoutput("man %s | col -b" % arg_s, split=False))

    @line_magic
    def autosave(self, arg_s):
        """Set the autosave interval in the notebook (in seconds).

        The default value is 120, or two minutes.
        ``%autosave 0`` will disable autosave.
        """
        from IPython.display import Javascript, display

        try:
            interval = int(arg_s)
        except ValueError as e:
            raise UsageError("%%autosave requires an integer, got %r" % arg_s) from e
        display(Javascript("IPython.notebook.set_autosave_interval(%i)" % (1000 * interval)),
                include=["application/javascript"])
        print("Autosaving every %i seconds" % interval if interval else "Autosave disabled")
