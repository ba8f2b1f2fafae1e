"""The worker names a cell's code as ipykernel names a local cell (jupyter_gpu_worker/compiler.py)."""
from __future__ import annotations

import random

from ipykernel.compiler import get_tmp_hash_seed, murmur2_x86 as ipykernel_murmur2

from jupyter_gpu_worker.compiler import SEED, CellCompiler, murmur2_x86


def test_the_cell_name_hash_is_ipykernels():
    rng = random.Random(7)
    assert SEED == get_tmp_hash_seed()
    for n in range(70):  # every length modulo 4, ASCII and multi-byte text
        for text in ("x" * n, "é" * n, "".join(chr(rng.randint(1, 0x3000)) for _ in range(n))):
            assert murmur2_x86(text, SEED) == ipykernel_murmur2(text, SEED), text


def test_the_running_cell_has_the_kernels_name_and_a_cell_it_runs_ipykernels():
    compiler = CellCompiler()
    code = "x = 1\n"
    compiler.name_cell(code, "/tmp/ipykernel_9/123.py")
    assert compiler.cache(code, 3, raw_code=code) == "/tmp/ipykernel_9/123.py"
    assert compiler.format_code_name("/tmp/ipykernel_9/123.py") == ("Cell", "In[3]")
    nested = "y = 2"  # %%capture's body, %rerun's cells
    assert compiler.cache(nested, 3, raw_code=nested) == f"/tmp/ipykernel_9/{ipykernel_murmur2(nested, SEED)}.py"
    compiler.name_cell(code, None)  # a kernel that is not ipykernel: IPython's own names
    assert compiler.cache(code, 4, raw_code=code).startswith("<ipython-input-4-")
