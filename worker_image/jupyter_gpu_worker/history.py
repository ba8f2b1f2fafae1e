"""The notebook's input history on the worker: ``In``, ``_ih``, ``_i``, ``_ii``, ``_iii``, ``_iN``
and ``%history`` as the kernel numbered them.

The worker sees only the `%%gpu` cells, and keeps no history of its own (storing a cell costs
~0.1 ms; the shell's HistoryManager is disabled).  The kernel sends its whole input history
(``Execute.history``) with a cell whose text reads it (notebook/cell_code.py), and ``sync``
makes the worker's lists and ``_i`` names those of the kernel, as HistoryManager.store_inputs
leaves them.  ``%history -l`` and ``-g`` read the in-memory lists (there is no database here).
"""
from __future__ import annotations

import fnmatch

from IPython.core.history import HistoryManager


class WorkerHistory(HistoryManager):
    """The shell's HistoryManager (disabled: nothing written), answering from its lists."""

    def get_tail(self, n=10, raw=True, output=False, include_latest=False):
        # the kernel's reads its database, whose latest entry is the running cell: left out unless asked
        n = 10 if n is None else n
        lines = list(self._get_range_session(1, None, raw, output))
        if not include_latest:
            lines = lines[:-1]
        return lines[-n:] if n > 0 else []

    def search(self, pattern="*", raw=True, search_raw=True, output=False, n=None, unique=False):
        source = self.input_hist_raw if search_raw else self.input_hist_parsed
        found = [i for i in range(1, len(source)) if fnmatch.fnmatch(source[i], pattern)]
        shown = self.input_hist_raw if raw else self.input_hist_parsed
        seen, lines = set(), []
        for i in reversed(found):  # the latest first, as the database's query orders them
            if unique and shown[i] in seen:
                continue
            seen.add(shown[i])
            lines.append((0, i, (shown[i], self.output_hist_reprs.get(i)) if output else shown[i]))
        return list(reversed(lines[:n] if n else lines))


def sync(shell, history: dict) -> None:
    """Make the worker's input history the kernel's: ``history`` is ``{"raw": [...], "parsed":
    [...]}``, the kernel's two lists (index 0 is IPython's empty entry), a parsed entry null where
    it is the raw one."""
    hm = shell.history_manager
    raw = history.get("raw") or [""]
    parsed = [r if p is None else p for r, p in zip(raw, history.get("parsed") or [None] * len(raw))]
    hm.input_hist_raw[:] = raw  # in place: the namespace's In and _ih are the same list
    hm.input_hist_parsed[:] = parsed
    # store_inputs keeps _i00 = the last entry, then _i, _ii, _iii the three before it
    last = [raw[-k] if len(raw) > k else "" for k in (1, 2, 3, 4)]
    hm._i00, hm._i, hm._ii, hm._iii = last
    names = {f"_i{n}": raw[n] for n in range(1, len(raw))}
    names.update(_i=hm._i, _ii=hm._ii, _iii=hm._iii)
    shell.push(names, interactive=False)  # hidden from %who, as in the kernel


def forget(shell) -> None:
    """A new session: no history."""
    hm = shell.history_manager
    del hm.input_hist_raw[1:], hm.input_hist_parsed[1:]
    hm._i00 = hm._i = hm._ii = hm._iii = ""
