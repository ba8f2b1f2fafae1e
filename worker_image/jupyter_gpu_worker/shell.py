"""The worker's InteractiveShell: runs cells like a kernel would, with every output an event.

Its display publisher, display hook and stdout/stderr are the ones in events.py; its traceback
printer emits the cell's ``error`` itself.  A cell run again is neither parsed nor compiled again
(``WorkerShell.run_cell_fast``).
"""
from __future__ import annotations

import ast
import sys
from types import CodeType

from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult, InteractiveShell
from traitlets import Type
from traitlets.config import Config

from jupyter_gpu._wire import messages
from jupyter_gpu.errors import in_group
from jupyter_gpu_worker import history
from jupyter_gpu_worker.compiler import CellCompiler
from jupyter_gpu_worker.events import Emitter, EventDisplayHook, EventDisplayPublisher, EventStream, clip
from jupyter_gpu_worker import kernel_shell


def _execution_info(raw_cell: str, cell: str) -> ExecutionInfo:
    """What IPython's events get about a cell (``pre_run_cell``), in any IPython we support."""
    try:
        return ExecutionInfo(raw_cell, False, False, True, None, transformed_cell=cell)
    except TypeError:  # IPython 8 before ``transformed_cell``
        return ExecutionInfo(raw_cell, False, False, True, None)


_PRINTERS = frozenset({"showtraceback", "_showtraceback", "showsyntaxerror", "show_usage_error"})


def _shown_by_library() -> bool:
    """Whether the traceback being shown was asked for by code other than IPython's cell loop (or
    its magics, or ours): then it is an output of the cell, not the cell's own error."""
    f = sys._getframe(2)
    while f is not None and f.f_code.co_name in _PRINTERS:
        f = f.f_back
    if f is None:
        return False
    where = f.f_code.co_filename.replace("\\", "/")
    return "/IPython/" not in where and not where.endswith(("jupyter_gpu_worker/shell.py", "jupyter_gpu_worker/calls.py"))


def _run(coro) -> bool:
    """Drive one of IPython's coroutines that never awaits (run_code of a synchronous cell)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a synchronous cell's code awaited")


def _renamed(code: CodeType, name: str) -> CodeType:
    """``code`` (and the functions and classes it defines) as if compiled under ``name``."""
    if code.co_filename == name:  # compiled under it (a cell's name is a hash of its text: usually)
        return code
    consts = code.co_consts
    if any(isinstance(c, CodeType) for c in consts):
        consts = tuple(_renamed(c, name) if isinstance(c, CodeType) else c for c in consts)
        return code.replace(co_filename=name, co_consts=consts)
    return code.replace(co_filename=name)


class WorkerShell(InteractiveShell):
    """Runs cells like a kernel would, with outputs turned into events."""

    emitter: Emitter = None
    last_error: BaseException | None = None
    _transformed: dict = {}  # raw cell -> (its static transforms' result, whether it is one line)
    _compiled: dict = {}  # (transformed source, __future__ flags) -> its statements' code objects
    running_cell: str | None = None  # the running cell's source, transformed (EventDisplayHook.quiet)
    compiler_class = Type(CellCompiler)  # names a cell as ipykernel names a local one (compiler.py)

    def init_history(self):
        self.history_manager = history.WorkerHistory(shell=self, parent=self)
        self.configurables.append(self.history_manager)

    def locate(self, code: str, file: str | None = None, inputs: dict | None = None) -> None:
        """Where the next cell, ``code``, says it is: its file name (``file``: what the kernel
        names the same text run as a local cell; None: IPython's naming), and the notebook's
        input history, when the kernel sent it (``inputs``: history.sync)."""
        self.compile.name_cell(code, file)
        if inputs is not None:
            history.sync(self, inputs)

    def run_cell_fast(self, raw_cell: str) -> ExecutionResult:
        """``run_cell(raw_cell, store_history=False)``, except that a cell run again is not parsed
        and compiled again: IPython's per-cell work costs ~0.25 ms here with the CPU caches cold
        after the kernel's turn, most of it in the parser.  Everything else is IPython's own: the
        events, the display hook, ``run_code`` (so errors, interrupts and ``SystemExit`` behave
        the same), the cell's name in tracebacks (``Cell In[n]``).  Left out: copying the cell's
        output into the (disabled) history.  What this path does not cover (top-level ``await``,
        AST transformers, another interactivity, a transform or syntax error) takes ``run_cell``."""
        cell = self._transformable(raw_cell)
        self.running_cell = cell if cell is not None else raw_cell
        if cell is None:
            return self.run_cell(raw_cell, store_history=False)
        n = self.execution_count
        name = self.compile.cache(cell, n, raw_code=raw_cell)
        steps = self._steps(cell, name)
        if steps is None:
            return self.run_cell(raw_cell, store_history=False)
        info = _execution_info(raw_cell, cell)
        result = ExecutionResult(info)
        result.execution_count = n
        failed = False
        try:
            self.events.trigger("pre_execute")
            self.events.trigger("pre_run_cell", info)
            self.logger.log(cell, raw_cell)
            with self.builtin_trap, self.display_trap:
                self.displayhook.exec_result = result
                for code in steps:
                    failed = _run(self.run_code(_renamed(code, name), result))
                    if failed:
                        break
                self.last_execution_succeeded = not failed
                self.last_execution_result = result
                self.displayhook.exec_result = None
        finally:
            self.events.trigger("post_execute")
            self.events.trigger("post_run_cell", result)
        return result

    def _transformable(self, raw_cell: str) -> str | None:
        if not raw_cell or raw_cell.isspace() or self.ast_transformers or self.ast_node_interactivity != "last_expr":
            return None
        try:
            cell = self.transform_cell(raw_cell)
        except Exception:
            return None  # run_cell shows the transform's error
        if self.should_run_async(raw_cell, transformed_cell=cell):
            return None
        return cell

    def _steps(self, cell: str, name: str) -> list | None:
        """The cell's statements compiled as ``run_ast_nodes`` compiles them (a last expression
        in "single" mode, so the display hook shows it); None when it does not compile."""
        key = (cell, self.compile.flags)  # a __future__ import changes how the same text compiles
        steps = self._compiled.get(key)
        if steps is not None:
            return steps
        try:
            body = self.compile.ast_parse(cell, filename=name).body
            last = len(body) - 1 if body and isinstance(body[-1], ast.Expr) else len(body)
            steps = [self.compile(ast.Interactive([node]), name, "single") if k == last
                     else self.compile(ast.Module([node], []), name, "exec") for k, node in enumerate(body)]
        except Exception:
            return None  # run_cell reports it with the cell's name and line numbers
        if len(self._compiled) >= 256:
            self._compiled.clear()
        self._compiled[key] = steps
        return steps

    def transform_cell(self, raw_cell):
        # IPython's transform_cell, with the static input transforms (a pure function of the text,
        # ~0.12 ms a cell here) remembered per text; a one-line cell still gets prefilter's dynamic
        # transforms at every run (~0.02 ms: automagic, macros, autocall read the namespace), as
        # locally: a cell's body is sent as it is, so `x = 1` is such a cell
        known = self._transformed.get(raw_cell)
        if known is None:
            if len(self._transformed) >= 256:
                self._transformed.clear()
            cell = self.input_transformer_manager.transform_cell(raw_cell)
            known = self._transformed[raw_cell] = (cell, len(cell.splitlines()) == 1)
        cell, one_line = known
        if one_line:
            with self.builtin_trap:
                cell = self.prefilter_manager.prefilter_lines(cell) + "\n"  # restores the line end
        if self.input_transformers_post:
            lines = cell.splitlines(keepends=True)
            for transform in self.input_transformers_post:
                lines = transform(lines)
            cell = "".join(lines)
        return cell

    def showtraceback(self, exc_tuple=None, filename=None, tb_offset=None, exception_only=False,
                      running_compiled_code=False):
        # IPython prints an exception group with traceback.print_exc, to stderr and past
        # _showtraceback; the kernel would then print it again, with its own frames.  Here it
        # becomes the cell's error like any other, with the group's standard formatting.
        try:
            etype, value, tb = self._get_exc_info(exc_tuple)
        except ValueError:
            etype = value = None
        if value is not None and not exception_only and in_group(value):
            import traceback

            self._showtraceback(etype, value, [s.rstrip("\n") for s in traceback.format_exception(etype, value, tb)])
            return
        try:
            super().showtraceback(exc_tuple, filename, tb_offset, exception_only, running_compiled_code)
        except Exception:
            # showing it failed: out of memory, typically (IPython's fallback allocates too, and then
            # raised SystemError, which hid the cell's MemoryError); the cell's error is still its own
            if value is None:
                raise
            self._showtraceback(etype, value, [f"{getattr(etype, '__name__', etype)}: {value}"])

    def _showtraceback(self, etype, evalue, stb):
        if _shown_by_library():
            # ipywidgets' callbacks, `with out:` of an Output widget, code calling showtraceback():
            # shown where it is (an Output widget captures it), and the cell goes on, as locally
            self.kernel.publish("error", {"ename": getattr(etype, "__name__", str(etype)),
                                          "evalue": clip(str(evalue)), "traceback": [clip(x) for x in stb]}, {})
            return
        self.last_error = evalue
        self.emitter.event(
            {
                "type": messages.ERROR,
                "ename": getattr(etype, "__name__", str(etype)),
                "evalue": clip(str(evalue)),
                "traceback": [clip(line) for line in stb],
            }
        )

    def should_run_async(self, raw_cell, *, transformed_cell=None, preprocessing_exc_tuple=None):
        # IPython compiles every cell once more just to look for a top-level await; a cell that
        # does not even contain the words cannot have one
        text = transformed_cell if transformed_cell is not None else raw_cell
        if "await" not in text and "async" not in text:
            return False
        return super().should_run_async(
            raw_cell, transformed_cell=transformed_cell, preprocessing_exc_tuple=preprocessing_exc_tuple
        )

    def enable_gui(self, gui=None):
        kernel_shell.enable_gui(self, gui)  # a kernel's checks; no event loop on a worker

    # `!cmd`: IPython's own system_piped, in a pseudo-terminal, printing to the cell's stdout, as
    # ipykernel's (kernel_shell.py)

    def show_usage_error(self, exc):
        # the cell's own UsageError (`%nosuchmagic`) comes back with its `done` and the kernel
        # shows it as it raises it again: shown here too, it showed twice
        if _shown_by_library():
            super().show_usage_error(exc)
        else:
            self.last_error = exc

    def run_line_magic(self, magic_name, line, _stack_depth=1):
        if magic_name in kernel_shell.KERNEL_ONLY and self.find_line_magic(magic_name) is None:
            raise kernel_shell.not_here(magic_name)  # says where it runs, not just "not found"
        return super().run_line_magic(magic_name, line, _stack_depth + 1)  # ($var: the caller's frame)


def create_shell() -> WorkerShell:
    """The worker's shell, created once (a zygote creates it before forking its workers)."""
    if WorkerShell.initialized():
        return WorkerShell.instance()
    cfg = Config()
    cfg.HistoryManager.enabled = False  # no SQLite writes per cell (~0.5 ms), and no thread
    # colors: IPython's default, as a kernel's (the pager's text and tracebacks are the local cell's)
    cfg.InteractiveShell.xmode = "Context"
    # the section a kernel's shell is configured with: libraries look for it to know they run in a
    # notebook's kernel (tqdm.auto picks its widget bar by it), and here they do (kernel.py)
    cfg.IPKernelApp = Config()
    shell = WorkerShell.instance(
        config=cfg,
        display_pub_class=EventDisplayPublisher,
        displayhook_class=EventDisplayHook,
    )
    kernel_shell.install(shell)  # a kernel's pager, magics, `!cmd` environment
    return shell


def make_shell(emitter: Emitter, ask_user=None) -> WorkerShell:
    """The shell with every output routed to ``emitter``; ``input()`` and ``getpass()`` in a cell
    call ``ask_user(prompt, password)`` (the kernel asks the notebook's user, as ipykernel does)."""
    shell = create_shell()
    if ask_user is not None:
        import builtins
        import getpass

        builtins.input = lambda prompt="": ask_user(str(prompt), False)
        getpass.getpass = lambda prompt="Password: ", stream=None: ask_user(str(prompt), True)
    EventDisplayPublisher.emitter = emitter
    EventDisplayHook.emitter = emitter
    WorkerShell.emitter = emitter
    sys.stdout = EventStream(emitter, "stdout")
    sys.stderr = EventStream(emitter, "stderr")
    from jupyter_gpu_worker import kernel

    kernel.install(shell, emitter)  # get_ipython().kernel, and comms through it
    return shell
