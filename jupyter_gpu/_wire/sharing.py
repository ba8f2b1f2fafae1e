"""Names whose values share objects go on sharing on the other side, in both directions.

Locally, ``a = b = lst``, ``b = a[:2, :2]`` (a numpy view) and ``fig, ax = plt.subplots()`` leave
names that refer to one object, to one buffer, or to objects inside one another: a change made
through one name shows through the others.  Pickled one name at a time they would arrive as
copies, and the change would silently not show.  So, for one transfer (a cell's inputs, or what it
sends back), ``Sharing`` finds the names that share, and each such group is pickled by one pickler,
one name after the other (one memo: an object met twice is sent once, and is one object again
where it arrives).

- Sharing is found between names' values: the same object; exact numpy arrays whose memory
  overlaps, or tensors on one storage; a value whose pickle met another name's value
  (``serialization.pickle_value``'s ``watch``: instances, arrays, tensors - not a list or dict held
  inside another value, which cloudpickle does not show; those keep their sharing in the kernel by
  ``in_place``).
- A name the receiver holds unchanged is referred to, not sent (a *ref*): its value is put in the
  pickler's memo before the first name, and the receiver puts its own object at the same index
  (``_seed``).  ``b = big[:10]`` comes back as a view of the kernel's ``big``, without ``big``'s bytes.
- An array inside the memory of another name's contiguous array (a *root*) is pickled as a view of
  it (``_view``: offset, shape, strides, dtype).
- What must go again with a name that does (``Sharing.split``): the same object, a value holding
  it, an array inside its memory (unless it is the root that one is inside), a tensor on its storage.

Every name of a group gets the group's hash (``g`` + xxh3-128 of the refs' names and each name with
its pickle and buffers), so a sender keeps a group its receiver holds as it keeps one value; each
name's own hash still tells a change on the worker (``results.Holdings.seen``).  Only a transfer
with two or more names that could share (not numbers, strings or modules) pays for any of it.
"""
from __future__ import annotations

import io
import pickle
import sys
import types

import xxhash

from jupyter_gpu._wire import serialization, tensors
from jupyter_gpu.errors import SerializationError

GROUP = "g"  # a group's hash starts with it (a value's own hash is hex)


_ALONE = serialization._PLAIN | {types.ModuleType}


def shareable(obj) -> bool:
    """Whether sharing ``obj`` could show: not a number, a string or None; not a module (one per name)."""
    return type(obj) not in _ALONE


def _array(obj) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and type(obj) is np.ndarray


def _span(obj):
    """(kind, lo, hi): the bytes an exact numpy array spans ("a"), or a tensor's whole storage
    ("t:<device>"); None for anything else (and for an empty array or one of Python objects)."""
    if _array(obj):
        if obj.size == 0 or obj.dtype.hasobject:
            return None
        lo = hi = obj.__array_interface__["data"][0]
        for n, stride in zip(obj.shape, obj.strides):
            if stride < 0:
                lo += (n - 1) * stride
            else:
                hi += (n - 1) * stride
        return "a", lo, hi + obj.itemsize
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        try:
            storage = obj.untyped_storage()
            lo, n = storage.data_ptr(), storage.nbytes()
        except Exception:  # no storage to share (meta, sparse, a subclass of its own)
            return None
        return (f"t:{obj.device}", lo, lo + n) if n else None
    return None


def _memory(obj):
    """Whose memory an exact numpy array (the object its chain of bases ends at) or a tensor (its
    storage) is on; None for anything else.  Values on different memory share none of it, and this
    costs ~0.2 us where a span costs ~2.5 (``__array_interface__`` makes a dict)."""
    np = sys.modules.get("numpy")
    if np is not None and type(obj) is np.ndarray:
        while isinstance(obj.base, np.ndarray):
            obj = obj.base
        return "a", id(obj if obj.base is None else obj.base)
    span = _span(obj)  # a tensor: its storage
    return None if span is None else span[:2]


def _overlap(s, t) -> bool:
    return s[0] == t[0] and s[1] < t[2] and t[1] < s[2]


def _root(obj) -> bool:
    """An array other arrays can be rebuilt as views of: contiguous, writable, of plain values."""
    if not _array(obj) or obj.size == 0 or obj.dtype.hasobject:
        return False
    flags = obj.flags
    return flags.writeable and (flags.c_contiguous or flags.f_contiguous)


class Sharing:
    """Which of one transfer's names share objects.  ``values``: name -> value, the names of the
    transfer and those the receiver holds that it could refer to (only ``shareable`` ones)."""

    def __init__(self, values: dict):
        self.values = values
        self.watch = {id(v): n for n, v in values.items()}  # for pickle_value: what each one holds
        self.reached: dict[str, frozenset] = {}
        self._spans: dict = {}  # name -> its span (None: not an array or tensor), made when first asked
        self._memory: dict = {}  # name -> _memory of its value, made when first asked
        self._on: dict | None = None  # id of a value, or a memory -> the names on it (related's index)
        self._reached_by: dict = {}  # name -> the names whose pickles reached its value
        self.links = False  # whether related() found any

    def memory(self, name: str):
        try:
            return self._memory[name]
        except KeyError:
            found = self._memory[name] = _memory(self.values[name])
            return found

    def span(self, name: str):
        """The memory ``name``'s array or tensor spans (~2 us an array, so only when asked)."""
        try:
            return self._spans[name]
        except KeyError:
            found = self._spans[name] = _span(self.values[name])
            return found

    def note(self, name: str, p: "serialization.Pickled") -> None:
        """``p``: ``name``'s own pickle, made with ``watch``."""
        self.reached[name] = p.reached - {name}
        for other in self.reached[name]:
            self._reached_by.setdefault(other, set()).add(name)

    def _linked(self, x: str, y: str) -> bool:
        if self.values[x] is self.values[y] or y in self.reached.get(x, ()) or x in self.reached.get(y, ()):
            return True
        mx = self.memory(x)
        if mx is None or mx != self.memory(y):
            return False
        sx, sy = self.span(x), self.span(y)
        return sx is not None and sy is not None and _overlap(sx, sy)

    def related(self, name: str, held: dict | None = None) -> list:
        """The names found sharing with ``name`` so far; with ``held`` (name -> the hash the
        receiver holds), also those it was last sent in one group with."""
        if name not in self.values:
            return []
        if self._on is None:  # once a transfer: then each name costs a few lookups, not one per name
            self._on = {}
            for n, v in self.values.items():
                self._on.setdefault(id(v), []).append(n)
                if (m := self.memory(n)) is not None:
                    self._on.setdefault(m, []).append(n)
        out = {*self._on[id(self.values[name])], *self.reached.get(name, ()), *self._reached_by.get(name, ())}
        memory = self.memory(name)
        if memory is not None:
            out.update(m for m in self._on[memory] if m != name and self._linked(name, m))
        group = (held or {}).get(name)
        if group is not None and group.startswith(GROUP):
            out.update(m for m, h in held.items() if h == group and m in self.values)
        out.discard(name)
        self.links = self.links or bool(out)
        return sorted(out)

    def groups(self, names) -> list:
        """The groups (two names or more, each sorted) the names ``names`` make."""
        names = sorted(n for n in names if n in self.values)
        parent = {n: n for n in names}

        def find(n):
            while parent[n] != n:
                parent[n] = n = parent[parent[n]]
            return n

        def union(a, b):
            parent[find(a)] = find(b)

        first: dict = {}
        for n in names:
            union(n, first.setdefault(id(self.values[n]), n))
            for m in self.reached.get(n, ()):
                if m in parent:
                    union(n, m)
        on: dict = {}  # memory -> the names on it
        for n in names:
            if (m := self.memory(n)) is not None:
                on.setdefault(m, []).append(n)
        for same in on.values():
            block = None  # the sweep's current run of overlapping memory: (its end, a name in it)
            for span, n in sorted((s, n) for n in same if len(same) > 1 and (s := self.span(n)) is not None):
                if block is not None and span[1] < block[0]:
                    union(n, block[1])
                    block = (max(block[0], span[2]), block[1])
                else:
                    block = (span[2], n)
        found: dict = {}
        for n in names:
            found.setdefault(find(n), []).append(n)
        return [g for g in found.values() if len(g) > 1]

    def _follows(self, x: str, y: str) -> bool:
        """Whether ``x`` must be sent again because ``y`` is: ``x`` is ``y``, holds it, or shares its
        memory - unless ``x`` is the root array ``y`` is inside (``y`` arrives as a view of it)."""
        vx = self.values[x]
        if vx is self.values[y] or y in self.reached.get(x, ()):
            return True
        sx, sy = self.span(x), self.span(y)
        if sx is None or sy is None or not _overlap(sx, sy):
            return False
        return not (sx[0] == "a" and _root(vx) and sx[1] <= sy[1] and sy[2] <= sx[2])

    def split(self, group: list, changed) -> tuple[list, list]:
        """(members, refs) of a group whose names ``changed`` must be sent: what must go with them
        is sent too; the rest is referred to.  Nothing changed: all of it is sent (the receiver
        holds each name, but not as one group)."""
        members = set(changed) or set(group)
        rest = [n for n in group if n not in members]
        grew = True
        while grew:
            grew = False
            for x in list(rest):
                if any(self._follows(x, y) for y in members):
                    members.add(x)
                    rest.remove(x)
                    grew = True
        return sorted(members), rest


def _view(root, offset: int, shape: tuple, strides: tuple, dtype):
    """An array on ``root``'s memory (pickle_group's views)."""
    return type(root)(shape, dtype, buffer=root, offset=offset, strides=strides)


class _Views:
    """The numpy reducer of one group's pickler: an array inside a root's memory (the largest root
    that holds it, ranked before it if it is one itself) is pickled as a view of that root."""

    def __init__(self, roots: list):
        ranked = sorted((-(s[2] - s[1]), i) for i, r in enumerate(roots) if (s := _span(r)) is not None)
        self.roots = [(roots[i], _span(roots[i])) for _, i in ranked]

    def reduce(self, arr):
        span = _span(arr)
        if span is not None:
            for root, (_, lo, hi) in self.roots:
                if root is arr:
                    break
                if lo <= span[1] and span[2] <= hi:
                    offset = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
                    return _view, (root, offset, arr.shape, arr.strides, arr.dtype)
        return arr.__reduce_ex__(serialization.PROTOCOL)


def pickle_group(members: list, refs: list, values: dict, *, device_memory_stays: bool = False) -> tuple[dict, list]:
    """Pickle ``members`` (in order) by one pickler that refers to ``refs``' values: (name ->
    Pickled, each with the group's hash; the refs it refers to, in their memo order)."""
    memo, used = {}, []
    for r in refs:  # one object under two refs' names is one memo entry
        obj = values[r]
        if id(obj) not in memo:
            memo[id(obj)] = (len(used), obj)
            used.append(r)
    roots, ids = [], set()
    for n in (*members, *used):
        if _root(values[n]) and id(values[n]) not in ids:
            ids.add(id(values[n]))
            roots.append(values[n])
    more = {type(roots[0]): _Views(roots).reduce} if roots else None
    bufs: list = []
    file = io.BytesIO()
    pickler = serialization._Pickler(file, bufs.append, device_memory_stays, more)
    pickler.memo = memo
    h = xxhash.xxh3_128()
    h.update("\0".join(used).encode() + b"\n")
    parts = []
    for name in members:
        obj = values[name]
        start, first = file.tell(), len(bufs)
        try:
            pickler.dump(obj)
        except tensors.InDeviceMemory as e:
            raise SerializationError(f"variable '{name}' ({serialization.type_name(obj)}) stays on its worker: {e}") from None
        except Exception as e:  # as pickle_value: pickling can raise anything
            raise SerializationError(f"variable '{name}' ({serialization.type_name(obj)}) cannot be pickled: "
                                     f"{type(e).__name__}: {e}") from None
        with file.getbuffer() as whole:
            data = bytes(whole[start:])
        h.update(name.encode() + b"\0")
        h.update(data)
        parts.append((name, data, first, len(bufs)))
    raws = serialization.hash_buffers(h, bufs)
    digest = GROUP + h.hexdigest()
    return {name: serialization.Pickled(data, raws[a:b], digest, serialization.type_name(values[name]))
            for name, data, a, b in parts}, used


def _seed(n: int) -> bytes:
    """A pickle that puts persistent ids 0..n-1 at memo indices 0..n-1 (the refs) and gives None."""
    return b"\x80\x05" + b"".join(b"P%d\n\x940" % i for i in range(n)) + b"N."


def unpack_values(specs: dict, wire: list, shm_reader, ns: dict) -> dict:
    """name -> value (or the SerializationError it raised) of a message's ``inputs`` / ``values``;
    a group's names come from one unpickler, its refs taken from ``ns``."""
    out, groups = {}, {}
    for name, spec in specs.items():
        joint = spec.get("g")
        if joint is None:
            try:
                out[name] = serialization.unpack(name, spec, wire, shm_reader)
            except SerializationError as e:
                out[name] = e
        else:
            groups.setdefault(spec["h"], []).append((joint["n"], name, spec))
    for items in groups.values():
        items.sort(key=lambda item: item[0])
        try:
            values = _unpack_group(items, wire, shm_reader, ns)
        except SerializationError as e:
            values = [e] * len(items)
        out.update(zip([name for _, name, _ in items], values))
    return out


def _unpack_group(items: list, wire: list, shm_reader, ns: dict) -> list:
    names = ", ".join(f"'{name}'" for _, name, _ in items)
    refs = items[0][2]["g"].get("r", [])
    missing = [r for r in refs if r not in ns]
    if missing:
        raise SerializationError(f"variables {names} refer to {', '.join(missing)}, which is not here")
    objs = [ns[r] for r in refs]
    data = bytearray(_seed(len(refs)))
    bufs = []
    for _, _, spec in items:
        data += serialization.resolve(spec["p"], wire, shm_reader)
        bufs.extend(serialization.resolve(r, wire, shm_reader) for r in spec["b"])
    unpickler = pickle.Unpickler(io.BytesIO(data), buffers=bufs)
    unpickler.persistent_load = lambda pid: objs[int(pid)]
    try:
        unpickler.load()
        return [unpickler.load() for _ in items]
    except SerializationError:
        raise
    except Exception as e:
        raise SerializationError(f"variables {names} could not be unpickled here: {type(e).__name__}: {e}") from None


def changed_in_place(specs: dict, got: dict) -> list:
    """The names (a value alone, or a whole group) of a ``done`` whose values the cell changed in
    place (``i``) and arrived (``got``: unpack_values' answer)."""
    if not any("i" in spec for spec in specs.values()):
        return []
    sets: dict = {}
    for name, spec in specs.items():
        sets.setdefault(spec["h"] if "g" in spec else name, []).append(name)
    return [names for names in sets.values()
            if all(specs[n].get("i") and not isinstance(got[n], SerializationError) for n in names)]


def _updatable(old, new) -> bool:
    t = type(old)
    if t is not type(new):
        return False
    if t in (list, dict, set, bytearray):
        return True
    return _array(old) and old.shape == new.shape and old.dtype == new.dtype and old.flags.writeable


def in_place(olds: list, news: list) -> bool:
    """Copy each new value into its old object (a value the cell changed in place comes back into
    the same object, so whatever else refers to it sees the change, as it would locally): a list,
    dict, set, bytearray or array of the same shape.  For a group, only when that keeps what it
    shares: one object under several names, or arrays.  All or none; False: rebind instead."""
    if len(olds) > 1 and not (all(map(_array, news)) or (all(n is news[0] for n in news)
                                                           and all(o is olds[0] for o in olds))):
        return False
    if not all(_updatable(old, new) for old, new in zip(olds, news)):
        return False
    for old, new in zip(olds, news):
        if old is new:
            continue
        t = type(old)
        if t is list or t is bytearray:
            old[:] = new
        elif t is dict or t is set:
            old.clear()
            old.update(new)
        else:
            old[...] = new
    return True
