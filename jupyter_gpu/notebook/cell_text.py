"""IPython's text work on a `%%gpu` cell, done once per distinct cell.

Before IPython calls a cell magic, the kernel transforms the cell's text twice (ipykernel's
``do_execute`` and IPython's ``run_cell`` each call ``transform_cell``: the cell magic becomes one
``get_ipython().run_cell_magic(...)`` line, which is tokenised, and prefiltered since it is a
single line), and asks twice whether the result needs a coroutine runner (``should_run_async``,
which compiles it).  Measured on the kernel's main thread, in a real kernel on our 2-core VM, that
is ~0.6 ms of the ~1.1 ms IPython spends on a warm `%%gpu` cell, all of it on the cell's round
trip.  Both answers are functions of the text and of the shell's configuration only, and a
notebook runs the same few `%%gpu` cells again and again, so they are kept per cell text together
with everything they depend on: the transformer lists, ``input_transformers_post``, autocall and
automagic, the prefilter's checkers and transformers (and whether each is enabled), what
``get_ipython`` names in the user's namespace (the prefilter looks it up), and ``autoawait``.
When any of it changes the text is transformed afresh, exactly as IPython would.  Any other cell
goes straight to IPython.
"""
from __future__ import annotations

PREFIX = "%%gpu"
_LIMIT = 256  # distinct cells kept; a notebook has far fewer `%%gpu` cells
_MISSING = object()


class CellTextMemo:
    """Installed on one shell: its ``transform_cell`` and ``should_run_async``, remembered for
    `%%gpu` cells."""

    def __init__(self, shell):
        self.shell = shell
        self._transform = shell.transform_cell  # the shell's own, bound
        self._should_run_async = shell.should_run_async
        self._transformed: dict[str, tuple[tuple, str]] = {}  # raw cell -> (configuration, result)
        self._is_async: dict[tuple[str, bool], bool] = {}  # (transformed cell, autoawait) -> answer

    def _configuration(self) -> tuple:
        """Everything besides the text that ``transform_cell`` reads for a `%%gpu` cell."""
        sh = self.shell
        itm, pm = sh.input_transformer_manager, sh.prefilter_manager
        return (itm, tuple(itm.cleanup_transforms), tuple(itm.line_transforms), tuple(itm.token_transformers),
                tuple(sh.input_transformers_post), sh.autocall, sh.automagic, pm,
                tuple((c, c.enabled) for c in pm.checkers), tuple((t, t.enabled) for t in pm.transformers),
                sh.user_ns.get("get_ipython", _MISSING))

    def transform_cell(self, raw_cell):
        if not isinstance(raw_cell, str) or not raw_cell.startswith(PREFIX):
            return self._transform(raw_cell)
        config = self._configuration()
        known = self._transformed.get(raw_cell)
        if known is not None and known[0] == config:
            return known[1]
        cell = self._transform(raw_cell)  # raises as IPython does: nothing is kept
        if len(self._transformed) >= _LIMIT:
            self._transformed.clear()
        self._transformed[raw_cell] = (config, cell)
        return cell

    def should_run_async(self, raw_cell, *, transformed_cell=None, preprocessing_exc_tuple=None):
        if (preprocessing_exc_tuple is not None or not isinstance(raw_cell, str) or not raw_cell.startswith(PREFIX)
                or not isinstance(transformed_cell, str)):
            return self._should_run_async(raw_cell, transformed_cell=transformed_cell,
                                          preprocessing_exc_tuple=preprocessing_exc_tuple)
        key = (transformed_cell, bool(self.shell.autoawait))
        answer = self._is_async.get(key)
        if answer is None:
            answer = self._should_run_async(raw_cell, transformed_cell=transformed_cell)
            if len(self._is_async) >= _LIMIT:
                self._is_async.clear()
            self._is_async[key] = answer
        return answer


def install(shell) -> None:
    """Put the memo in front of the shell's own methods (as instance attributes, which IPython
    and ipykernel look up first); loading the extension again keeps the one there."""
    if isinstance(getattr(shell.transform_cell, "__self__", None), CellTextMemo):
        return
    memo = CellTextMemo(shell)
    shell.transform_cell = memo.transform_cell
    shell.should_run_async = memo.should_run_async


def uninstall(shell) -> None:
    for name in ("transform_cell", "should_run_async"):
        if isinstance(getattr(shell.__dict__.get(name), "__self__", None), CellTextMemo):
            del shell.__dict__[name]
