"""Names flow between the local namespace and the worker's namespace."""
from __future__ import annotations

import pytest
from nbclient.exceptions import CellExecutionError

from .helpers import LOAD, error_output, last_footer, stream_text


@pytest.mark.timeout(120)
def test_local_input_goes_in_and_bound_name_comes_back(run_notebook):
    nb = run_notebook([LOAD, "a = 5", "%%gpu\nb = a * 2", "print(b)"])
    assert stream_text(nb.cells[3]) == "10\n"


@pytest.mark.timeout(120)
def test_consecutive_gpu_cells_share_one_remote_namespace(run_notebook):
    nb = run_notebook(
        [
            LOAD,
            "%%gpu --no-out\nkept_remote = 7",
            "print('kept_remote' in globals())",
            "%%gpu\nprint(kept_remote * 6)",
        ]
    )
    assert stream_text(nb.cells[2]) == "False\n", "--no-out still brought the name back"
    assert stream_text(nb.cells[3]) == "42\n"


@pytest.mark.timeout(120)
def test_out_option_brings_back_only_the_named_variables(run_notebook):
    nb = run_notebook(
        [
            LOAD,
            "%%gpu --out c\nc = 1\nd = 2",
            "print('c' in globals(), 'd' in globals(), c)",
            "%%gpu --out c2,d2\nc2 = 1\nd2 = 2\ne2 = 3",
            "print('c2' in globals(), 'd2' in globals(), 'e2' in globals())",
        ]
    )
    assert stream_text(nb.cells[2]) == "True False 1\n"
    assert stream_text(nb.cells[4]) == "True True False\n"


@pytest.mark.timeout(120)
def test_in_option_sends_exactly_the_named_variables(run_notebook):
    nb = run_notebook(
        [
            LOAD,
            "x_in = 3\nx_not = 4",
            # x_in is only used through eval (no free name); x_not is a free name but not listed.
            "%%gpu --in x_in\nprint(eval('x_in'))\ntry:\n    x_not\nexcept NameError:\n    print('x_not missing')",
        ]
    )
    assert stream_text(nb.cells[2]) == "3\nx_not missing\n"


@pytest.mark.timeout(120)
def test_no_out_keeps_bound_names_remote(run_notebook):
    nb = run_notebook(
        [
            LOAD,
            "%%gpu --no-out\nonly_remote = 'r'\nalso_remote = 2",
            "print('only_remote' in globals(), 'also_remote' in globals())",
        ]
    )
    assert stream_text(nb.cells[2]) == "False False\n"


@pytest.mark.timeout(300)
def test_big_array_round_trip_and_unchanged_input_is_not_resent(run_notebook):
    nb = run_notebook(
        [
            "import numpy as np\nimport jupyter_gpu\n"
            "big = np.random.default_rng(0).random(32 * 1024 * 1024)\nprint(big.nbytes)",
            LOAD,
            "%%gpu\nbig_back = big[::-1].copy()",
            "t1 = dict(jupyter_gpu.last_cell()['transfer'])\n"
            "print(np.array_equal(big_back[::-1], big), big_back.nbytes)\n"
            "print(t1['sent_bytes'], t1['received_bytes'])",
            "%%gpu\ntotal = float(big.sum())",
            "t2 = dict(jupyter_gpu.last_cell()['transfer'])\n"
            "print(total == float(big.sum()))\nprint(t2['sent_bytes'])",
        ],
        timeout=240,
    )
    size = 256 * 1024 * 1024
    assert stream_text(nb.cells[0]) == f"{size}\n"
    equal_line, sizes_line = stream_text(nb.cells[3]).splitlines()
    assert equal_line == f"True {size}", "the array did not come back equal"
    sent1, received1 = map(int, sizes_line.split())
    assert sent1 >= size and received1 >= size, (sent1, received1)
    same_line, sent2_line = stream_text(nb.cells[5]).splitlines()
    assert same_line == "True", "the worker computed on a different array"
    assert int(sent2_line) <= 1024, f"unchanged 256 MiB input was sent again ({sent2_line} bytes)"


@pytest.mark.timeout(300)
def test_a_torch_tensor_goes_in_once_and_one_that_came_back_is_not_sent_again(run_notebook):
    """torch pickles a tensor naming its storage by address, so a tensor that came back used to
    differ from the worker's copy and was sent again by every cell that read it (jupyter_gpu._wire.tensors)."""
    pytest.importorskip("torch")
    size = 32 * 1024 * 1024
    nb = run_notebook(
        [
            "import torch\nimport jupyter_gpu\nt = torch.rand(8 * 1024 * 1024)",
            LOAD,
            "%%gpu\ndoubled = t * 2",
            "print(jupyter_gpu.last_cell()['transfer']['sent_bytes'], torch.equal(doubled, t * 2))",
            "%%gpu\nprint(bool((doubled == t * 2).all()))",
            "print(jupyter_gpu.last_cell()['transfer']['sent_bytes'])",
        ],
        timeout=240,
    )
    sent_first, equal = stream_text(nb.cells[3]).split()
    assert int(sent_first) >= size and equal == "True"
    assert stream_text(nb.cells[4]) == "True\n"
    assert int(stream_text(nb.cells[5])) <= 1024, "a tensor already on the worker was sent again"


@pytest.mark.timeout(180)
def test_a_value_in_device_memory_stays_on_its_worker_and_says_what_it_is(run_notebook):
    """torch's `meta` device stands for any device but the CPU here (it holds no memory, needs no
    GPU); tests/gpu has the same with CUDA.  Nothing of it is copied back; later cells use it."""
    pytest.importorskip("torch")
    nb = run_notebook(
        [
            LOAD + "\nimport jupyter_gpu",
            "%%gpu\nimport torch\nt = torch.empty(2, 3, device='meta')\nnet = torch.nn.Linear(3, 4).to('meta')\nn = 5",
            "print(repr(t))\nprint(type(net).__name__, n)",
            "%%gpu\nprint(net(t).shape, t.device)",
            "try:\n    t.shape\nexcept AttributeError as e:\n    print(e)",
        ]
    )
    rep, kinds = stream_text(nb.cells[2]).splitlines()
    assert rep.startswith("<remote torch.Tensor [2, 3] meta on "), rep
    assert kinds == "RemoteValue 5"
    assert stream_text(nb.cells[3]) == "torch.Size([2, 4]) meta\n"
    said = stream_text(nb.cells[4])  # used here, it says where it is, why, and what to do
    assert said.startswith("'t' is <remote torch.Tensor [2, 3] meta on ") and "meta memory" in said, said
    assert ".cpu()" in said and "%%gpu cell" in said, said


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "setup, name",
    [
        ("import threading\nlock_in = threading.Lock()", "lock_in"),
        ("gen_in = (i for i in range(3))", "gen_in"),
    ],
    ids=["lock", "generator"],
)
def test_unpicklable_input_raises_an_error_naming_the_variable(run_notebook, setup, name):
    with pytest.raises(CellExecutionError):
        run_notebook([LOAD, setup, f"%%gpu\nprint({name})"])
    err = error_output(run_notebook.last.cells[2])
    assert err["ename"] == "SerializationError", err
    assert name in err["evalue"], err["evalue"]


@pytest.mark.timeout(120)
def test_unpicklable_result_stays_remote_and_is_usable_later(run_notebook):
    nb = run_notebook(
        [
            LOAD,
            "%%gpu\ngen_out = (i * 2 for i in range(3))",
            "print(repr(gen_out))\nprint(type(gen_out).__name__)",
            "%%gpu\nprint(list(gen_out))",
        ]
    )
    assert last_footer(nb.cells[1])["status"] == "ok"
    rep, typename = stream_text(nb.cells[2]).splitlines()
    assert rep.startswith("<remote"), rep
    assert "generator" in rep, rep
    assert typename == "RemoteValue"
    assert stream_text(nb.cells[3]) == "[0, 2, 4]\n"


@pytest.mark.timeout(120)
def test_a_cell_run_again_sends_what_the_namespace_holds_now(run_notebook):
    """The kernel remembers what a cell's text reads (not what the namespace held): the same cell
    run again sends a value changed since, and a name that exists only now."""
    same = "%%gpu\ntry:\n    seen = (a, late)\nexcept NameError as e:\n    seen = str(e)\nprint(seen)"
    nb = run_notebook([LOAD, "a = 1", same, "a = 2\nlate = 'here'", same])
    assert stream_text(nb.cells[2]) == "name 'late' is not defined\n"
    assert stream_text(nb.cells[4]) == "(2, 'here')\n"


@pytest.mark.timeout(180)
def test_a_value_over_the_size_limit_or_kept_remote_stays_on_its_worker(run_notebook, kernel_env):
    nb = run_notebook([
        LOAD,
        "%%gpu\nimport numpy as np\nbig = np.ones(200_000)\nsmall = 7\nblob = b'x' * 2_000_000",  # over 1 MiB
        "print(type(big).__name__, small, type(blob).__name__)\nprint(big.why)",
        "%%gpu\nprint(big.sum())",  # used where it is, nothing sent
        "%%gpu --out big\npass",  # --out brings it back whatever its size
        "print(type(big).__name__, big.shape)",
        "%%gpu --keep-remote kept\nkept = [1, 2]\nalso = 3",
        "print(type(kept).__name__, also)\n%gpu status",
    ], env={**kernel_env, "JUPYTER_GPU_MAX_RETURN": "1MiB"})
    first, why = stream_text(nb.cells[2]).splitlines()
    assert first == "RemoteValue 7 RemoteValue"  # the array by its size, the bytes once pickled
    assert why == "1.5 MiB is more than the 1.0 MiB a value brings back ($JUPYTER_GPU_MAX_RETURN); " \
                  "`%%gpu --out big` brings it anyway"
    assert stream_text(nb.cells[3]) == "200000.0\n"
    assert last_footer(nb.cells[3])["transfer"]["sent_bytes"] < 1024
    assert stream_text(nb.cells[5]) == "ndarray (200000,)\n"
    assert stream_text(nb.cells[7]).splitlines()[0] == "RemoteValue 3"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("lane", ["1", "0"], ids=["lane", "relayed"])
def test_an_input_changed_in_place_comes_back_as_a_local_cell_would_leave_it(run_notebook, kernel_env, lane):
    """`lst.append(3)`, `d['k'] = v`, `arr[:] = 0`: a value the cell changed without rebinding it
    comes back (and the worker's copy is what the kernel now holds), so a local value equal to
    the old one is sent again rather than mistaken for the worker's changed copy."""
    nb = run_notebook([
        LOAD,
        "import numpy as np\nlst = [1, 2]\nd = {'a': 1}\narr = np.arange(4)\nsame = [9]",
        "%%gpu\nlst.append(3)\nd['k'] = 'v'\narr[:2] = 0\nprint(len(same))",
        "print(lst, d, arr.tolist(), same)",
        "lst = [1, 2]",  # equal to what was first sent: must not be taken for the worker's copy
        "%%gpu\nprint(lst, d)",
        "%%gpu\nprint(len(same))",  # unchanged: nothing comes back, nothing is sent
    ], env={**kernel_env, "JUPYTER_GPU_LANE": lane})
    assert stream_text(nb.cells[3]) == "[1, 2, 3] {'a': 1, 'k': 'v'} [0, 0, 2, 3] [9]\n"
    assert stream_text(nb.cells[5]) == "[1, 2] {'a': 1, 'k': 'v'}\n"
    assert last_footer(nb.cells[6])["transfer"]["sent_bytes"] < 1024
    assert last_footer(nb.cells[6])["transfer"]["received_bytes"] < 1024


@pytest.mark.timeout(180)
def test_del_in_a_gpu_cell_deletes_the_name_locally_too(run_notebook):
    nb = run_notebook([
        LOAD,
        "gone = 5\nkept = 6",
        "%%gpu\ndel gone\nprint(kept)",
        "print('gone' in globals(), kept)",
        "%%gpu\ntry:\n    gone\nexcept NameError:\n    print('gone there too')",
        "%%gpu\nif False:\n    del kept\nprint(kept)",
        "print(kept)",
    ])
    assert stream_text(nb.cells[2]) == "6\n"
    assert stream_text(nb.cells[3]) == "False 6\n"
    assert stream_text(nb.cells[4]) == "gone there too\n"
    assert stream_text(nb.cells[6]) == "6\n"


@pytest.mark.timeout(120)
def test_a_time_line_magic_in_a_gpu_cell_reads_and_binds_like_a_local_one(run_notebook):
    nb = run_notebook([LOAD, "a = 5", "%%gpu\n%time b = a * 2", "print(b)"])
    assert "Wall time" in stream_text(nb.cells[2])
    assert stream_text(nb.cells[3]) == "10\n"


@pytest.mark.timeout(120)
def test_a_shell_command_in_a_gpu_cell_expands_local_names(run_notebook):
    nb = run_notebook([LOAD, "pkg = 'hello'\nn = 3", "%%gpu\n!echo {pkg.upper()} $n"])
    assert stream_text(nb.cells[2]) == "HELLO 3\r\n"  # a terminal's line end, as in a local cell


@pytest.mark.timeout(180)
def test_names_a_cell_binds_where_its_text_does_not_show_come_back_as_locally(run_notebook):
    """A local cell doing `from m import *`, `exec(...)` or `globals()[k] = v` leaves those names
    bound (and `exec("del x")` deletes x); the names' analysis cannot see them, the worker can."""
    nb = run_notebook(
        [
            LOAD,
            "doomed = 1",
            "%%gpu\nfrom math import *\nbase = doomed\nexec('made = base + 1')\nglobals()['put'] = 3",
            "print(sqrt(16), made, put)",
            "%%gpu\nexec('del doomed')",
            "print('doomed' in globals())",
        ]
    )
    assert stream_text(nb.cells[3]) == "4.0 2 3\n"
    assert stream_text(nb.cells[5]) == "False\n"

