"""Git's ignore rules for a tree that filetree.py keeps: .gitignore files read as git reads them (a nested
one applies below its directory, the deeper one wins), .jupyter-gpu-ignore files after them, jupyter-gpu's
own rules before all; each pattern translated to a regex once.  Stdlib only (the worker imports it).
"""
from __future__ import annotations

import os
import re

# Evaluated first, as if they opened the root's .gitignore, so a project's own `!node_modules/` can bring one
# back.  .git and caches never help a cell and are big; .jupyter-gpu/ is jupyter-gpu's own state; an
# unfinished apply()'s temp file (*.jupyter-gpu-part) must never travel back.
ALWAYS_IGNORED = (".git/", "__pycache__/", ".ipynb_checkpoints/", ".jupyter-gpu/", "*.pyc", ".venv/",
                  "node_modules/", "*.jupyter-gpu-part")
IGNORE_FILES = (".gitignore", ".jupyter-gpu-ignore")  # read in this order: the second wins

_POSIX = {"alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
          "space": " \\t\\n\\r\\f\\v", "xdigit": "0-9A-Fa-f", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")}


def _translate(pat: str) -> str:
    """A gitignore glob (no leading '/', no trailing '/') as a regex over a '/'-separated path."""
    out, i, n = [], 0, len(pat)
    while i < n:
        c = pat[i]
        at_sep = i == 0 or pat[i - 1] == "/"
        if pat.startswith("**/", i) and at_sep:  # leading or middle `**/`: zero or more directories
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i) and at_sep and i + 2 == n and i > 0:  # trailing `/**`: all inside
            out.append(".+")
            i += 2
        elif c == "*":  # any other run of stars is a `*`: never crosses a '/'
            while i < n and pat[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls, i = _bracket(pat, i)
            out.append(cls)
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _bracket(pat: str, i: int) -> tuple[str, int]:
    """`[...]` at pat[i] -> (regex class, index after it); an unclosed `[` is a literal."""
    j, n, items = i + 1, len(pat), []
    neg = j < n and pat[j] in "!^"
    j += neg
    first = True
    while j < n and (pat[j] != "]" or first):
        first = False
        if pat.startswith("[:", j) and (k := pat.find(":]", j + 2)) > 0 and pat[j + 2:k] in _POSIX:
            items.append(_POSIX[pat[j + 2:k]])
            j = k + 2
            continue
        c, j = (pat[j + 1], j + 2) if pat[j] == "\\" and j + 1 < n else (pat[j], j + 1)
        if j + 1 < n and pat[j] == "-" and pat[j + 1] != "]":
            hi, j = (pat[j + 2], j + 3) if pat[j + 1] == "\\" and j + 2 < n else (pat[j + 1], j + 2)
            items.append(f"{_esc(c)}-{_esc(hi)}")
        else:
            items.append(_esc(c))
    if j >= n:
        return re.escape("["), i + 1
    return ("[^/" if neg else "[") + "".join(items) + "]", j + 1  # a class never matches '/' (git's FNM_PATHNAME)


def _esc(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def _rule(line: str):
    """One line of a .gitignore -> (regex body, negate, dir_only), or None for blanks and comments."""
    line = line.rstrip("\r\n")
    end = len(line)
    while end and line[end - 1] == " " and not (end > 1 and line[end - 2] == "\\"):
        end -= 1  # trailing spaces are dropped unless escaped with a backslash
    line = line[:end]
    if not line or line.startswith("#"):
        return None
    negate = line.startswith("!")
    line = line[negate:]
    dir_only = line.endswith("/") and not line.endswith("\\/")
    line = line.rstrip("/") if dir_only else line
    if not line:
        return None
    anchored = "/" in line  # a '/' at the start or in the middle ties the pattern to its .gitignore's directory
    body = _translate(line[1:] if line.startswith("/") else line)
    return (body if anchored else "(?:.*/)?" + body), negate, dir_only


def _compile(lines) -> list:
    """Rules in file order -> [(regex, negate, dir_only)] in evaluation order (last rule first).  A run of
    consecutive rules with the same flags becomes one alternation: the first of them to match decides the
    same, and a path tests a few regexes instead of one per line."""
    out, run, flags = [], [], None
    for r in reversed([r for r in map(_rule, lines) if r]):
        if (r[1], r[2]) != flags and run:
            out.append((re.compile("|".join(f"(?:{b})" for b in run), re.DOTALL), *flags))
            run = []
        run.append(r[0])
        flags = (r[1], r[2])
    if run:
        out.append((re.compile("|".join(f"(?:{b})" for b in run), re.DOTALL), *flags))
    return out


class Ignore:
    """The ignore rules of one root: ALWAYS_IGNORED, then every .gitignore in the tree (a nested
    .gitignore applies below its directory, as git does) and .jupyter-gpu-ignore files (same syntax,
    read after .gitignore so they can add or re-include with !).

    A directory's files are read the first time a path below it is asked about; ``stale()`` says when
    one of the files read since changed (the no-inotify path checks it before each rescan)."""

    def __init__(self, root: str):
        self.root = root
        self._always = _compile(ALWAYS_IGNORED)
        self._chains: dict[str, list] = {}  # dir rel -> [(len of its prefix, rules)] deepest first
        self._dirs: dict[str, bool] = {"": False}  # dir rel -> ignored (itself or a parent)
        self._seen: dict[str, tuple] = {}  # dir rel -> its ignore files' (size, mtime_ns, ino) or None

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether ``rel`` ('/'-separated, relative to root) is ignored, or lies in an ignored directory."""
        rel = rel.strip("/")
        parent = rel.rpartition("/")[0]
        return self._dir_ignored(parent) or self.match(parent, rel, is_dir)

    def match(self, parent: str, rel: str, is_dir: bool) -> bool:
        """Whether the rules ignore ``rel`` itself, its directory ``parent`` known not to be ignored
        (what a walk knows: it does not enter an ignored directory)."""
        for off, rules in self._chain(parent):
            sub = rel[off:]
            for rx, negate, dir_only in rules:
                if (is_dir or not dir_only) and rx.fullmatch(sub):
                    return not negate
        return False

    def stale(self) -> bool:
        return any(self._signature(d) != sig for d, sig in list(self._seen.items()))

    def _dir_ignored(self, d: str) -> bool:
        hit = self._dirs.get(d)
        if hit is None:
            parent = d.rpartition("/")[0]
            hit = self._dirs[d] = self._dir_ignored(parent) or self.match(parent, d, True)
        return hit

    def _chain(self, d: str) -> list:
        chain = self._chains.get(d)
        if chain is None:
            rules = self._load(d)
            up = self._chain(d.rpartition("/")[0]) if d else [(0, self._always)]
            chain = self._chains[d] = ([(len(d) + 1 if d else 0, rules)] if rules else []) + up
        return chain

    def _signature(self, d: str) -> tuple:
        sig = []
        for name in IGNORE_FILES:
            try:
                st = os.stat(os.path.join(self.root, d, name))
                sig.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                sig.append(None)
        return tuple(sig)

    def _load(self, d: str) -> list:
        lines = []
        for name in IGNORE_FILES:
            try:
                with open(os.path.join(self.root, d, name), encoding="utf-8", errors="surrogateescape") as f:
                    lines += f.read().splitlines()
            except (OSError, ValueError):
                pass
        self._seen[d] = self._signature(d)
        return _compile(lines)
