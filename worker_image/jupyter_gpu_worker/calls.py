"""A function call on the worker (`Execute.call`, the kernel's jupyter_gpu/functions/): the same
request, worker, shell and events as a cell, the function instead of the cell's code.

The function comes once, pickled by value (a notebook's function), and is kept by its hash, so a
later call sends only the hash (``fn_hash``); a worker that does not hold it asks for the request
again (``resend``).  Its defining cell's text comes with it (``source``: file name, cell number,
text), so a traceback through it names that cell (``Cell In[n], line k``) as in the kernel.  A
call is one item (``args``: a pickled ``(args, kwargs)``) or a batch of a map's items (``items``:
a pickled list of them), each run in turn; a batch's result is a list of (True, value) or (False,
exception) (the kernel returns the exception in place, or raises it naming the item, as
`return_exceptions` asks; an exception that does not pickle comes as a RuntimeError with its
type's name and message).
Output (print, display) goes to the calling cell as a cell's does; the stop button interrupts the
running item, and the rest of the batch is not run.
"""
from __future__ import annotations

import linecache

from jupyter_gpu._wire import handshake, messages, refs, serialization
from jupyter_gpu.errors import SerializationError

MISSING = "<function>"  # what a resend names when the function is not held here


class CallResult:
    """What a call left: like IPython's ExecutionResult, plus the value."""

    def __init__(self):
        self.error_before_exec = None
        self.error_in_exec = None
        self.value = None


class Calls:
    def __init__(self):
        self.functions: dict[str, object] = {}  # hash -> the function (kept for the session)
        self.states: dict[str, object] = {}  # a setup's hash -> its value (made once on this worker)

    def clear(self) -> None:
        self.functions.clear()
        self.states.clear()
        refs.clear()  # another session: the values its calls left here go

    def held(self, call: dict) -> bool:
        """Whether the function of ``call`` (and its setup's value) is here (sent with it, or held
        by its hash)."""
        setup = call.get("setup")
        return ("fn" in call or call.get("fn_hash") in self.functions) and (
            setup is None or "p" in setup or setup.get("h") in self.states)

    def run(self, shell, call: dict, buffers: list, reader) -> CallResult:
        """Run the call (on the main thread); its error is shown as a cell's is."""
        result = CallResult()
        try:
            fn = self._function(shell, call, buffers, reader)
            setup = call.get("setup")
            if setup is not None:  # run once on this worker; its value is every call's first argument
                if setup["h"] not in self.states:
                    make = serialization.unpack("<setup>", setup, buffers, reader)
                    try:
                        self.states[setup["h"]] = make()
                    except Exception as e:
                        result.error_in_exec = e
                        _show(shell, e)
                        return result
                fn = _with_state(fn, self.states[setup["h"]])
            if "items" in call:
                items = serialization.unpack("<map items>", call["items"], buffers, reader)
            else:
                items = [serialization.unpack("<arguments>", call["args"], buffers, reader)]
        except SerializationError as e:
            result.error_before_exec = e
            shell.showtraceback((type(e), e, None), exception_only=True)
            return result
        if call.get("gen"):  # a generator function: each value goes as it is yielded
            return self._stream(shell, fn, items[0], result)
        values = []
        for args, kwargs in items:
            try:
                values.append((True, fn(*args, **kwargs)))
            except KeyboardInterrupt as e:  # the stop button: the rest of the batch is not run
                result.error_in_exec = e
                _show(shell, e)
                if "items" not in call:
                    return result
                break  # the items that ran come back
            except Exception as e:
                if "items" not in call:
                    result.error_in_exec = e
                    _show(shell, e)
                    return result
                values.append((False, _picklable(e)))  # the kernel shows it once, with its item
        result.value = values if "items" in call else values[0][1]
        return result

    def _stream(self, shell, fn, arguments, result: CallResult) -> CallResult:
        args, kwargs = arguments
        try:
            for value in fn(*args, **kwargs):
                p = serialization.pickle_value("<item>", value)  # one that does not pickle ends it, saying so
                packer = serialization.Packer()
                spec = packer.pack(p)
                shell.emitter.event({"type": messages.ITEM, "value": spec}, packer.buffers)
        except BaseException as e:  # the stop button too: the generator is closed where it was
            result.error_in_exec = e
            _show(shell, e)
        return result

    def _function(self, shell, call: dict, buffers: list, reader):
        source = call.get("source")
        if source:  # the defining cell's text: tracebacks through it name "Cell In[n]"
            file, number, text = source
            linecache.cache[file] = (len(text), None, text.splitlines(keepends=True), file)
            shell.compile._filename_map[file] = number
        if "fn" in call:
            differs = handshake.differences(call.get("env") or {})
            name = call.get("name") or "the function"
            if differs:  # said before the call, whether or not the function loads
                shell.emitter.write_stream("stderr", handshake.table(differs, name))
            try:
                fn = serialization.unpack("<function>", call["fn"], buffers, reader)
            except SerializationError as e:
                if differs:  # the table said why: the unpickling traceback would not
                    raise SerializationError(f"{name} could not be loaded on this worker, whose environment "
                                             f"differs (above): {e}") from None
                raise
            self.functions[call["fn"]["h"]] = fn
            return fn
        return self.functions[call["fn_hash"]]


def _with_state(fn, state):
    def call(*args, **kwargs):
        return fn(state, *args, **kwargs)
    return call


def _show(shell, e: BaseException) -> None:
    """The call's exception as a cell's error, from the function's frame on (this module's frame
    that called it is not the user's)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    shell.showtraceback((type(e), e, tb))


def _picklable(e: BaseException) -> BaseException:
    try:
        serialization.pickle_value("<exception>", e)
        return e
    except SerializationError:  # a type that does not pickle: its name and message
        return RuntimeError(f"{type(e).__name__}: {e}")


def pack_value(call: dict, result: CallResult, packer) -> dict:
    """``done`` fields of a call: its value (``result``); a batch's items that ran, when it was stopped."""
    if result.error_before_exec is not None or result.value is None and result.error_in_exec is not None:
        return {}
    value = result.value
    try:
        p = serialization.pickle_value("<result>", value)
    except SerializationError as e:  # it stays here; the kernel gets a reference to it
        if call.get("items") is not None or call.get("job"):  # (a spawned call's value outlives this worker)
            return {"result_error": str(e)}
        return {"result_ref": {"ref": refs.keep(value), "t": type(value).__name__, "why": str(e)}}
    return {"result": packer.pack(p)}
