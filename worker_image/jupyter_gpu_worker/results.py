"""What a cell sends back with its ``done``: the names it bound, the inputs it changed in place or
deleted, and the values that stay here instead (refs).  The names it bound are those the kernel's
analysis of its text found, and any other the namespace shows bound or deleted after it
(``from m import *``, ``exec``, ``globals()[k] = v``, ``%run``).  It also keeps, per name, what the
kernel holds (``held``: the hash it will name in a later cell's ``keep``) and what this worker last
saw (``seen``: the hash of this worker's own pickle of its value).

An input changed in place (``lst.append(3)``, ``df['z'] = ...``, ``arr[:] = 0``) comes back like a
bound name, because a local cell would have left it changed; without that, the kernel's copy would
be stale and a local value equal to the old one would be taken for the worker's changed copy.  A
change is found by pickling the input again after the cell and comparing with ``seen``.  ``seen`` is
this worker's own pickle, not the kernel's, because many values pickle differently in another
process (a set of strings in another order, a CUDA tensor, a strided numpy view that arrives
contiguous): compared with the kernel's hash they would look changed after every cell.  A plain
contiguous numpy array or a CPU torch tensor (``jupyter_gpu._wire.tensors``) that came with its memory
out of band pickles exactly as it did in the kernel, so for it (the large inputs) the kernel's hash
is used and nothing is pickled as it arrives.

Names whose values share objects (``a = b = lst``, a numpy view of another name's array, ``fig``
and its ``ax``) come back together, pickled as one group so they share again in the kernel
(``jupyter_gpu._wire.sharing``); a value the cell changed in place (the same object as before it)
is marked ``i``, and the kernel copies it into its own object.  A module comes back as its name
(with the dotted submodules the cell imported, ``import a.b.c``), and the kernel imports it.
"""
from __future__ import annotations

import re
import types

from jupyter_gpu._wire import serialization, sharing, tensors
from jupyter_gpu._wire.serialization import SHELL_NAMES
from jupyter_gpu.errors import SerializationError


class Holdings:
    def __init__(self):
        self.held: dict[str, str] = {}  # name -> hash of the value the kernel side also has
        self.seen: dict[str, str] = {}  # name -> hash of this worker's pickle of its value, unchanged since

    def clear(self) -> None:
        self.held.clear()
        self.seen.clear()

    def arrived(self, name: str, obj, spec: dict) -> None:
        """An input was unpacked into the namespace (``spec``: how it came, with the kernel's hash)."""
        kernel_hash = self.held[name] = spec["h"]
        if "g" not in spec and len(spec.get("b", ())) == 1 and (_plain_array(obj) or tensors.portable(obj)):
            # pickled as there (a group's names have the group's hash, not their own)
            self.seen[name] = kernel_hash
            return
        try:
            self.seen[name] = serialization.pickle_value(name, obj).hash
        except SerializationError:
            self.seen.pop(name, None)  # not pickled here: a change to it cannot be seen

    def changed(self, name: str, obj, watch: dict | None = None) -> tuple[bool, "serialization.Pickled | SerializationError | None"]:
        """Whether an input the cell did not rebind was changed in place; with its new pickle (or
        why it no longer pickles).  A value never pickled here is taken as unchanged."""
        before = self.seen.get(name)
        if before is None:
            return False, None
        try:
            p = serialization.pickle_value(name, obj, device_memory_stays=True, watch=watch)
        except SerializationError as e:
            return True, e
        return p.hash != before, p


def take_inputs(h: dict, buffers: list, shm_reader, ns: dict, holdings: Holdings) -> None:
    """Unpack a cell's inputs into ``ns`` (a group's names from one unpickler, sharing again);
    raises the first SerializationError."""
    specs = h.get("inputs", {})
    for name, value in sharing.unpack_values(specs, buffers, shm_reader, ns).items():
        if isinstance(value, SerializationError):
            raise value
        ns[name] = value
        holdings.arrived(name, value, specs[name])


def _plain_array(obj) -> bool:
    """A numpy array whose pickle is its dtype, shape and one writable, contiguous buffer."""
    t = type(obj)
    if t.__name__ != "ndarray" or t.__module__ != "numpy":
        return False
    flags = obj.flags
    return flags.writeable and (flags.c_contiguous or flags.f_contiguous) and not obj.dtype.hasobject


def before_cell(ns: dict) -> dict:
    """What each name is bound to as the cell starts (identities only: holding the values would
    keep alive what the cell deletes, GPU memory included)."""
    return {k: id(v) for k, v in ns.items()}


def bound_unseen(before: dict, ns: dict, binds) -> tuple[list, list]:
    """Names the cell bound or deleted in ways its text does not show (``from m import *``,
    ``exec(...)``, ``globals()[k] = v``, ``%run script.py``): (bound, deleted).  Names starting with
    ``_`` are left out (the shell's ``_``, ``_5``, ``_i``; a private name bound so stays here)."""
    known = set(binds)
    bound = [k for k, v in ns.items() if before.get(k) != id(v) and k not in known
             and not k.startswith("_") and k not in SHELL_NAMES]
    deleted = [k for k in before if k not in ns and not k.startswith("_") and k not in SHELL_NAMES]
    return bound, deleted


def pack_results(h: dict, cell: str, ns: dict, holdings: Holdings, packer, before: dict | None = None) -> dict:
    """The ``done`` fields that bring the cell's names back: values (into ``packer``), refs for
    what stays here, the inputs it deleted, and ``--out`` names it did not define.  ``before``:
    ``before_cell`` of the namespace, to find names bound or deleted where the text does not show."""
    explicit = set(h.get("out") or ())  # --out: brought back whatever its size
    shipped = [*h.get("inputs", {}), *h.get("keep", {})]
    by_default = not h.get("no_out") and h.get("out") is None  # the bound names, and changed inputs
    unseen, gone = bound_unseen(before, ns, h.get("binds", ())) if before is not None else ([], [])
    if h.get("no_out"):
        names = []
    elif h.get("out") is not None:
        names = list(h["out"])
    else:
        names = [n for n in [*h.get("binds", []), *unseen] if n in ns]  # a module too: by its name
    # who may share objects with whom: only when two names or more could (binding a number pays nothing)
    share = _sharing(names, shipped, ns) if by_default else None
    watch = share.watch if share is not None else None
    picked: dict = {}  # name -> its pickle (or why it has none), already made to look for a change
    unchanged: dict = {}  # name -> its pickle: shipped, not changed (a group may refer to it)
    for name in h.get("references", ()):  # the kernel holds a RemoteValue: this copy is the value
        holdings.seen.pop(name, None)
    deleted = [n for n in shipped if n not in ns] + [n for n in gone if n not in shipped]
    returned = set(names)
    for name in shipped:
        if name in ns and name not in returned:
            was_changed, p = holdings.changed(name, ns[name], watch)
            if not was_changed:
                if p is not None:
                    unchanged[name] = p
                continue
            if not by_default:
                # not brought back: a later cell sends the kernel's value again (it is the one the
                # notebook shows), instead of this changed copy being taken for it
                holdings.held[name] = f"changed:{cell}:{name}"
                holdings.seen.pop(name, None)
                continue
            names.append(name)
            picked[name] = p
    for name in deleted:
        holdings.held.pop(name, None)
        holdings.seen.pop(name, None)
    keep = set(h.get("keep_remote") or ())
    limit = int(h.get("max_return") or serialization.MAX_RETURN)
    values, refs, missing = {}, {}, []
    ready: dict = {}  # name -> its own pickle: it comes back
    for name in names:
        if name not in ns:
            missing.append(name)
            continue
        obj = ns[name]
        why, p = stays(name, obj, keep, None if name in explicit else limit), picked.get(name)
        if why is None:
            if isinstance(p, SerializationError):
                why = str(p)
            elif p is None:
                try:
                    subs = _submodules(obj, h.get("code", "")) if type(obj) is types.ModuleType else ()
                    p = serialization.pickle_value(name, obj, device_memory_stays=True, watch=watch, submodules=subs)
                except SerializationError as e:
                    why = str(e)
            if why is None:
                size = len(p.data) + sum(memoryview(b).nbytes for b in p.buffers)
                if name not in explicit and size > limit:
                    why = too_large(name, size, limit)
        if why is not None:
            ref_hash = f"ref:{cell}:{name}"
            holdings.held[name] = ref_hash
            holdings.seen.pop(name, None)  # the kernel holds a reference: this copy is the value
            refs[name] = {"h": ref_hash, "t": serialization.describe(obj), "why": why}
            continue
        ready[name] = p
    joint = _groups(share, ready, unchanged) if share is not None else {}
    if joint:  # an unchanged input that must go with its group comes back too
        ready.update((n, unchanged[n]) for n in joint if n not in ready)
    shipped_here = set(shipped) if before is not None else ()
    for name, own in ready.items():
        in_group, where = joint.get(name, (own, None)) if joint else (own, None)
        spec = values[name] = packer.pack(in_group)
        if where is not None:
            spec["g"] = where
        if name in shipped_here and before.get(name) == id(ns[name]) and sharing.shareable(ns[name]):
            spec["i"] = True  # changed in place: the kernel copies it into its own object, as a local cell would have
        holdings.held[name], holdings.seen[name] = spec["h"], own.hash
    return {"values": values, "refs": refs, "missing": missing, **({"deleted": deleted} if deleted else {})}


def _sharing(names, shipped, ns: dict) -> "sharing.Sharing | None":
    """What finds the names coming back that share objects with one another or with the inputs,
    when two or more of them could."""
    if len(names) + len(shipped) < 2:
        return None
    values = {n: ns[n] for n in (*names, *shipped) if n in ns and sharing.shareable(ns[n])}
    return sharing.Sharing(values) if len(values) > 1 else None


def _groups(share: "sharing.Sharing", ready: dict, unchanged: dict) -> dict:
    """name -> (its pickle in its group, the spec's ``g``) for the names that come back with the
    others they share objects with; an unchanged input of such a group is referred to, unless it
    holds one that comes back (then it comes back too)."""
    if not any(n in share.values for n in ready):
        return {}  # nothing that could share comes back (numbers, strings, modules)
    pickled = {n: p for n, p in {**unchanged, **ready}.items() if n in share.values}
    for name, p in pickled.items():
        share.note(name, p)
    out = {}
    for group in share.groups(pickled):
        changed = [n for n in group if n in ready]
        if not changed:
            continue
        members, refs = share.split(group, changed)
        try:
            joint, used = sharing.pickle_group(members, refs, share.values, device_memory_stays=True)
        except SerializationError:
            continue  # each comes back on its own, as it did alone
        for i, name in enumerate(members):
            out[name] = (joint[name], {"n": i, "r": used})
    return out


# `import a.b.c` (not `as`): binds `a`, and a.b.c must be imported where `a` arrives
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.MULTILINE)


def _submodules(obj, code: str) -> tuple:
    """The dotted submodules of package ``obj`` the cell imports by name."""
    if not (serialization.is_module(obj) and hasattr(obj, "__path__")):
        return ()
    prefix = obj.__name__ + "."
    found = [words[0] for m in _IMPORT.finditer(code) for part in m.group(1).split(",")
             if len(words := part.split()) == 1 and words[0].startswith(prefix)]
    return tuple(dict.fromkeys(found))


def stays(name: str, obj, keep: set, limit: int | None) -> str | None:
    """Why a value stays on the worker before any pickling (None: it may come back)."""
    if name in keep:
        return "kept on the worker (--keep-remote)"
    if isinstance(obj, types.ModuleType):
        return None  # its name comes back (and a module's `nbytes` is anything: numpy's is a dict)
    hint = serialization.size_hint(obj) if limit is not None else None
    return too_large(name, hint, limit) if hint is not None and hint > limit else None


def too_large(name: str, size: int, limit: int) -> str:
    return (f"{serialization.human_size(size)} is more than the {serialization.human_size(limit)} a value brings "
            f"back ($JUPYTER_GPU_MAX_RETURN); `%%gpu --out {name}` brings it anyway")
