"""Which names a cell reads from its namespace, and which it binds there.

Only the top level of the cell matters for binding (names bound inside a function body are local
to it), but reads count everywhere: a function defined in the cell may use a global.
"""
from __future__ import annotations

import ast
import builtins
import re
import string

from jupyter_gpu._wire.serialization import SHELL_NAMES
from jupyter_gpu.notebook.cell_options import nested_binds, nested_magic

_BUILTINS = set(dir(builtins))
# line magics whose argument is Python run in the user's namespace (`%time b = a * 2`): the option
# letters that take a value, those that do not, and whether its assignments stay in the namespace
# (%timeit runs its statement in a namespace of its own)
_CODE_MAGICS = {"time": ("", "", True), "timeit": ("nrp", "tcqo", False), "prun": ("lsTD", "rq", True)}
_DOLLAR = re.compile(r"(?<!\$)\$([A-Za-z_]\w*)")
# the shell's calls whose text IPython expands with the namespace's values: argument index
_EXPANDED = {"system": 0, "getoutput": 0, "run_line_magic": 1, "run_cell_magic": 1}
_OPTION = re.compile(r"-([A-Za-z])\s*")
_VALUED_OPTION = re.compile(r"-[A-Za-z]\s*\S+\s*")


def expanded_reads(text: str) -> set[str]:
    """The names IPython's expansion of ``!echo {pkg} $n`` (and of a magic's line) reads."""
    reads = set(_DOLLAR.findall(text))
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field]
    except ValueError:  # an unbalanced brace: IPython leaves the text as it is
        return reads
    for field in fields:
        try:
            tree = ast.parse(field, mode="eval")
        except SyntaxError:  # `!awk '{print $1}'`: not an expression, left as it is
            continue
        reads.update(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
    return reads


def magic_statement(magic: str, line: str) -> tuple[str, bool] | None:
    """The Python a line magic such as %time runs (its options left out), and whether what it
    binds stays in the namespace; None for any other magic."""
    spec = _CODE_MAGICS.get(magic)
    if spec is None:
        return None
    valued, flags, binds = spec
    rest = line.lstrip()
    while rest.startswith("-"):
        m = _OPTION.match(rest)
        if m is None or m.group(1) not in valued + flags:
            break  # not an option: a statement that starts with a minus
        if m.group(1) in valued:
            m = _VALUED_OPTION.match(rest)
        rest = rest[m.end():]
    return rest, binds


class _Collector(ast.NodeVisitor):
    def __init__(self):
        self.loads: set[str] = set()
        self.stores: set[str] = set()
        self._depth = 0  # > 0 inside a function, lambda or comprehension scope

    def visit_Name(self, node: ast.Name):
        if isinstance(node.ctx, ast.Load):
            self.loads.add(node.id)
        elif self._depth == 0:
            self.stores.add(node.id)
            if isinstance(node.ctx, ast.Del):  # `del x` needs x there, and a local cell's x goes too
                self.loads.add(node.id)

    def visit_AugAssign(self, node: ast.AugAssign):
        if isinstance(node.target, ast.Name):
            self.loads.add(node.target.id)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global):
        self.stores.update(node.names)  # `global x` inside a function binds x at top level

    def _import(self, node):
        if self._depth == 0:
            for alias in node.names:
                if alias.name != "*":
                    self.stores.add(alias.asname or alias.name.split(".")[0])

    visit_Import = visit_ImportFrom = _import

    def _scoped(self, node):
        if self._depth == 0 and not isinstance(node, (ast.Lambda, ast.comprehension)):
            name = getattr(node, "name", None)
            if name:
                self.stores.add(name)
        for deco in getattr(node, "decorator_list", ()):
            self.visit(deco)
        args = getattr(node, "args", None)
        if isinstance(args, ast.arguments):
            for d in args.defaults + [d for d in args.kw_defaults if d is not None]:
                self.visit(d)
        if isinstance(node, ast.ClassDef):
            for b in node.bases + [k.value for k in node.keywords]:
                self.visit(b)
        self._depth += 1
        body = node.body if isinstance(node.body, list) else [node.body]
        for stmt in body:
            self.visit(stmt)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _scoped

    def _comp(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comp

    def visit_NamedExpr(self, node: ast.NamedExpr):
        # a walrus inside a comprehension binds in the enclosing (here: top-level) scope
        self.stores.add(node.target.id)
        self.visit(node.value)

    def visit_Call(self, node: ast.Call):
        # `%time b = a * 2` is `get_ipython().run_line_magic('time', 'b = a * 2')` by now: its
        # statement reads a and binds b in the cell's namespace
        f, args = node.func, node.args
        shell_call = (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and not f.value.args
                      and isinstance(f.value.func, ast.Name) and f.value.func.id == "get_ipython")
        expanded = _EXPANDED.get(f.attr) if shell_call else None
        if expanded is not None and len(args) > expanded and isinstance(args[expanded], ast.Constant) \
                and isinstance(args[expanded].value, str):
            self.loads.update(expanded_reads(args[expanded].value))
        if (shell_call and f.attr == "run_line_magic" and len(args) == 2
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args)):
            found = magic_statement(args[0].value, args[1].value)
            if found is not None:
                try:
                    tree = ast.parse(found[0])
                except SyntaxError:
                    tree = None  # the magic itself says what is wrong with it
                if tree is not None:
                    own_namespace = 0 if found[1] else 1  # %timeit: what it binds stays in its own
                    self._depth += own_namespace
                    self.visit(tree)
                    self._depth -= own_namespace
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler):
        if node.type is not None:
            self.visit(node.type)
        for stmt in node.body:
            self.visit(stmt)  # the `as e` name is deleted at the end of the handler


# top-level statements that always bind their names before the next statement runs; a bind inside
# an `if`, a loop, a `with` or a `try` may not happen, so it does not hide the kernel's value
_UNCONDITIONAL = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Import, ast.ImportFrom, ast.FunctionDef,
                  ast.AsyncFunctionDef, ast.ClassDef)


def _sequence(stmts: list, loads: set, stores: set, bound_before: set) -> None:
    """Top-level statements in order: what each reads that is not bound before it, what it binds.
    A `with` binds its `as` targets before its body runs (`with open(p) as f: f.read()` does not
    read the kernel's `f`), its body is a sequence of its own, and what the body binds may not be
    bound after it (a context manager may swallow the body's exception)."""
    for stmt in stmts:
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            inner = set(bound_before)
            for item in stmt.items:  # in order: a later item's expression may use an earlier's target
                for part in (item.context_expr, item.optional_vars):
                    if part is not None:
                        c = _Collector()
                        c.visit(part)
                        loads |= c.loads - inner
                        stores |= c.stores
                        inner |= c.stores
            bound_before |= inner  # (the targets: bound once the with began)
            _sequence(stmt.body, loads, stores, set(inner))
            continue
        c = _Collector()
        c.visit(stmt)
        loads |= c.loads - bound_before
        stores |= c.stores
        if isinstance(stmt, _UNCONDITIONAL):
            bound_before |= c.stores


def analyse(python_source: str) -> tuple[set[str], set[str]]:
    """Return (names read before the cell binds them, names bound at top level) of
    already-transformed Python source.  A name the cell binds unconditionally at top level before
    any statement reads it is not read from the namespace (`cap = Output()` then `with cap:`): the
    kernel's value of it is not needed, and may not even be one that can be sent.

    Raises SyntaxError as Python would; the caller lets the worker report it with line numbers.
    """
    tree = ast.parse(python_source)
    loads, stores = set(), set()
    _sequence(tree.body, loads, stores, set())
    reads = {n for n in loads if n not in SHELL_NAMES and not n.startswith("_")}
    binds = {n for n in stores if n not in SHELL_NAMES and not n.startswith("_")}
    return reads, binds


def inputs_for(reads: set[str], user_ns: dict) -> list[str]:
    """The read names that exist locally and are not plain builtins."""
    return sorted(n for n in reads if n in user_ns and not (n in _BUILTINS and user_ns[n] is getattr(builtins, n)))


def cell_names(shell, cell_source: str, memo: dict) -> tuple[frozenset, frozenset]:
    """(names read, names bound) of a `%%gpu` cell's body, as ``shell`` transforms it.  Its static
    input transforms are a pure function of the text, so a cell run again is not tokenised and
    parsed again (~0.15 ms): ``memo`` (the kernel's, text -> answer) keeps it; a one-line cell may
    also get prefilter's dynamic transforms (autocall), which read the namespace."""
    found = memo.get(cell_source)
    if found is not None:
        return found
    # under a nested cell magic, the names are those of its body (Python for %%time, %%timeit,
    # %%capture; anything else does not parse and has none) and any its line binds
    nested = nested_magic(cell_source)
    python = cell_source.lstrip(" \t\n").partition("\n")[2] if nested else cell_source
    try:
        reads, binds = analyse(shell.transform_cell(python))
    except Exception:  # SyntaxError or a failing IPython transform
        reads, binds = (), ()  # the worker reports the error with the cell's line numbers
    found = frozenset(reads), frozenset(binds) | (nested_binds(cell_source) if nested else frozenset())
    if "\n" in cell_source.strip() or not shell.autocall:
        if len(memo) >= 256:
            memo.clear()
        memo[cell_source] = found
    return found
