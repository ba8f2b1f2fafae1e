"""Where a `%%gpu` cell's code says it is, as a local cell's would: the request's ``file`` and
``history`` fields (pack), and the cell's source kept here under that file name.

- ``file``: the name the kernel's compiler gives the body's text run as a local cell (ipykernel:
  a hash of the text, ``<tmp>/ipykernel_<pid>/<n>.py``).  The worker compiles the cell under it
  (jupyter_gpu_worker/compiler.py), so SyntaxErrors, tracebacks, ``inspect`` and pdb say what the
  same local cell says.  The kernel keeps the body's lines in linecache under it and numbers it
  ``In[n]``, so a function the cell defined and brought back (pickles keep their code's file
  name: _wire/serialization.py) shows its source here too (``inspect.getsource``, ``%psource``)
  and "Cell In[n], line k" in the tracebacks of calls made here.  A kernel whose compiler is
  IPython's own sends none: the worker's names then have the same form.
- ``history``: the kernel's input history (``In``, ``_i``, ``%history``), sent only with a cell
  whose text reads it: storing inputs on the worker at every cell would cost ~0.1 ms, and the
  lists grow with the notebook.  What a cell reads is found once per text (a cell is mostly run
  again as it is); a name read from code the text does not show (a function of an earlier cell)
  sees the history as the last cell that sent it left it.
"""
from __future__ import annotations

import linecache
import re

from IPython.core.compilerop import CachingCompiler

# the input history's names, and the magics that read it (also without `%`: automagic), except
# as a plain name (`history = model.fit(...)`, `plt.hist(x)`); `In` except as an English word
_READS_HISTORY = re.compile(
    r"\b(?:_i{1,3}|_i\d+|_ih|history_manager)\b|\bIn\b(?!\s+[A-Za-z_])"
    r"|(?m:^\s*%{0,2}(?:hist|history|recall|rep|rerun|macro|save|load|pastebin|notebook)\b(?!\s*[=(.\[,)]))")
_SEEN: dict = {}  # (the body as typed, the compiler's naming) -> (its file name or None, whether it reads the history)


def fields(shell, body: str, number: int) -> dict:
    """The request's fields for the body ``body`` of cell ``number`` (In[number])."""
    raw = _typed(shell, body)
    naming = type(shell.compile).get_code_name
    key = (raw, naming)
    known = _SEEN.get(key)
    if known is None:
        file = None if naming is CachingCompiler.get_code_name else shell.compile.get_code_name(raw, body, number)
        if len(_SEEN) >= 256:
            _SEEN.clear()
        known = _SEEN[key] = (file, _READS_HISTORY.search(body) is not None)
    file, reads = known
    out = {}
    if file is not None:
        out["file"] = file
        if file not in linecache.cache:  # a local cell of the same text may have put it there
            linecache.cache[file] = (len(raw), None, [line + "\n" for line in raw.splitlines()], file)
        shell.compile._filename_map[file] = number  # its tracebacks here say "Cell In[number]"
    if reads:
        out["history"] = history(shell, number)
    return out


def _request(shell) -> dict:
    get_parent = getattr(getattr(shell, "kernel", None), "get_parent", None)
    return (get_parent() or {}).get("content") or {} if get_parent is not None else {}


def _typed(shell, body: str) -> str:
    """The body as the user typed it: IPython hands a cell magic its body with a line end added
    where the cell had none; a local cell's name is the hash of its text as typed."""
    code = _request(shell).get("code") or ""
    first, _, rest = code.lstrip("\n").partition("\n")
    if first.startswith("%%gpu") and (rest == body or rest + "\n" == body):
        return rest
    return body[:-1] if body.endswith("\n") else body


def history(shell, number: int) -> dict:
    """The kernel's input history as cell ``number`` sees it: IPython stores a cell's input before
    running it, so it holds this cell, except when it is sent as its request arrives (early.py),
    before IPython stored it; then it is added as IPython will store it."""
    hm = shell.history_manager
    raw, parsed = list(hm.input_hist_raw), list(hm.input_hist_parsed)
    request = _request(shell)
    code = request.get("code")
    if len(raw) <= number and code and request.get("store_history", True):
        raw.append(code.rstrip("\n"))
        parsed.append(shell.transform_cell(code).rstrip("\n"))
    return {"raw": raw, "parsed": [None if p == r else p for r, p in zip(raw, parsed)]}
