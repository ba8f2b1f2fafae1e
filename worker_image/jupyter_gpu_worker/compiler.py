"""The file names a cell's code is compiled under on the worker: those ipykernel gives a local cell.

ipykernel names a cell's code after a hash of its text, ``<tmp>/ipykernel_<pid>/<murmur2>.py``
(its ``XCachingCompiler``).  The kernel sends the name its own compiler gives the `%%gpu` cell's
body (``Execute.file``: the name the same text run as a local cell has), so a SyntaxError, a
traceback, ``inspect.getsource``, ``%psource`` and pdb name and list the code as they do locally.
Code a cell runs as a cell of its own (``%%capture``'s body, ``%rerun``) is named by ipykernel's
rule in the same directory.  Without ``file`` (a kernel that is not ipykernel): IPython's own
``<ipython-input-N-hash>``.
"""
from __future__ import annotations

import os
import struct

from IPython.core.compilerop import CachingCompiler

SEED = 0xC70F6907  # ipykernel.compiler.get_tmp_hash_seed()


def murmur2_x86(data: str, seed: int) -> int:
    """ipykernel's cell-name hash (``ipykernel/compiler.py``, BSD-3-Clause, (c) IPython Development
    Team), the same function written over bytes: the worker does not import ipykernel (a kernel's
    machinery, costly to import) and may not have it."""
    b = data.encode("utf8")
    m = 0x5BD1E995
    length = len(b)
    h = seed ^ length
    end = length & 0xFFFFFFFC
    for k in struct.unpack_from(f"<{end >> 2}I", b):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length & 3
    if rest:
        h ^= int.from_bytes(b[end:], "little")
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


class CellCompiler(CachingCompiler):
    """IPython's compiler (it caches each cell's text in linecache under its name), naming the
    running cell ``cell_file``, as the kernel asked."""

    cell_code: str | None = None  # the running cell's text, as it came
    cell_file: str | None = None  # its name, from the kernel; None: IPython's naming

    def name_cell(self, code: str, file: str | None) -> None:
        self.cell_code, self.cell_file = code, file

    def get_code_name(self, raw_code, transformed_code, number):
        file = self.cell_file
        if file is None:
            return super().get_code_name(raw_code, transformed_code, number)
        if raw_code == self.cell_code:  # the same object: the identity test, no comparison
            return file
        return os.path.join(os.path.dirname(file), f"{murmur2_x86(raw_code or '', SEED)}.py")
