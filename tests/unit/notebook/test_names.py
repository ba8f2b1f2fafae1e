"""Which names a cell reads (sent to the worker) and binds (brought back)."""
from jupyter_gpu.notebook.names import analyse, inputs_for


def test_reads_and_top_level_binds():
    reads, binds = analyse("b = a * 2\nc += 1\nimport numpy as np\nfrom os import path\n")
    assert {"a", "c"} <= reads
    assert binds == {"b", "c", "np", "path"}


def test_function_locals_are_not_bound_but_their_globals_are_read():
    reads, binds = analyse("def f(x):\n    y = x + scale\n    return y\nclass K:\n    z = 1\n")
    assert binds == {"f", "K"}
    assert "scale" in reads and "y" not in binds and "z" not in binds


def test_comprehension_variables_stay_local_but_walrus_binds():
    reads, binds = analyse("s = [i * k for i in range(3)]\nt = [(j := i) for i in data]\n")
    assert binds == {"s", "t", "j"}
    assert {"k", "data"} <= reads and "i" not in binds


def test_loop_with_and_except_targets():
    _, binds = analyse("for i in r:\n    pass\nwith open(p) as fh:\n    pass\ntry:\n    pass\nexcept E as err:\n    pass\n")
    assert {"i", "fh"} <= binds and "err" not in binds


def test_private_and_shell_names_are_ignored():
    reads, binds = analyse("_x = In\n__y = Out\nz = _\n")
    assert binds == {"z"} and reads == set()


def test_inputs_are_the_reads_that_exist_locally_except_builtins():
    ns = {"a": 1, "len": len, "print": 5}
    assert inputs_for({"a", "len", "print", "missing"}, ns) == ["a", "print"]


def test_a_deleted_name_is_read_and_bound():
    """`del x` needs x on the worker, and removes the local x as a local cell would."""
    reads, binds = analyse("del x\ndef f():\n    y = 1\n    del y\n")
    assert "x" in reads and "x" in binds
    assert "y" not in reads and "y" not in binds


def test_the_statement_of_a_time_line_magic_reads_and_binds_in_the_cell():
    """`%time b = a * 2` (as IPython has transformed it): `a` must be sent, `b` comes back; %timeit
    runs in a namespace of its own, so it only reads; options are not names."""
    reads, binds = analyse("get_ipython().run_line_magic('time', 'b = a * 2')\n"
                           "get_ipython().run_line_magic('timeit', '-n 10 -r2 -q c + d')\n"
                           "get_ipython().run_line_magic('prun', '-s cumulative -q e = f()')\n"
                           "get_ipython().run_line_magic('time', '-g')\n")
    assert {"a", "c", "d", "f", "g"} <= reads
    assert binds == {"b", "e"}
    assert not {"n", "r", "q", "s", "cumulative"} & (reads | binds)


def test_names_that_ipython_expands_in_shell_commands_and_magic_lines_are_read():
    """`!echo {pkg} $n`, `x = !ls {path}`, `%cd $where`; braces that are no expression are not."""
    reads, binds = analyse("get_ipython().system('echo {pkg.upper()} $n $$HOME')\n"
                           "x = get_ipython().getoutput('ls {path}')\n"
                           "get_ipython().run_line_magic('cd', '$where')\n"
                           "get_ipython().system(\"awk '{print $1}' {{literal}}\")\n")
    assert {"pkg", "n", "path", "where"} <= reads
    assert not {"HOME", "print", "literal"} & reads
    assert binds == {"x"}


def test_a_name_bound_before_it_is_read_is_not_read_from_the_namespace():
    # `cap = W.Output()` then `with cap:`: the kernel's `cap` (perhaps a widget of its own, which
    # cannot be sent) is not what the cell uses, so it is not an input
    reads, binds = analyse("cap = make()\nwith cap:\n    print(x)")
    assert "cap" not in reads and {"make", "x"} <= reads and binds == {"cap"}
    assert "x" in analyse("x = x + 1")[0]  # read by the statement that binds it
    assert "x" in analyse("x += 1")[0]
    # a bind that may not happen (a branch, a loop, a with, a try) leaves the kernel's value in use
    assert "y" in analyse("if a:\n    y = 1\nprint(y)")[0]
    assert "y" in analyse("for i in r:\n    y = i\nprint(y)")[0]
    # a function body's global is read when it runs, which may be before the bind below it
    assert "z" in analyse("def g():\n    return z\nz = 1\ng()")[0]
    assert analyse("import numpy as np\nnp.zeros(3)")[0] == set()


def test_a_with_binds_its_targets_before_its_body():
    # `with open(p) as f: f.write(...)` after a local cell left a closed file in `f`: the kernel's
    # `f` is not what the cell uses (sending it failed: a closed file cannot be pickled)
    reads, binds = analyse("with open(p, 'w') as f:\n    f.write('1')\nprint(f.closed)")
    assert "f" not in reads and {"p"} <= reads and binds == {"f"}
    # an item's expression may use an earlier item's target; the body is a sequence of its own
    reads, binds = analyse("with a() as x, b(x) as y:\n    z = y\n    print(z)")
    assert not {"x", "y", "z"} & reads and binds == {"x", "y", "z"}
    # what the body binds may not be bound after it: a context manager may swallow its exception
    assert "y" in analyse("with suppress(E):\n    y = 1\nprint(y)")[0]
    # the context expression is evaluated before the target is bound
    assert "f" in analyse("with open(f) as f:\n    pass")[0]
