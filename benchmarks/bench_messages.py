"""Typed messages: which representation to keep (issue 18), measured on the headers a warm cell
sends most: an ``execute`` and a ``done``.

Each variant encodes the header, decodes it and validates its fields' types, in one process:

- ``today``: dicts + the stdlib ``json`` (the code before typed messages): no validation at all;
- ``dict_json``: dicts + ``json`` + a validator in Python over a field table;
- ``struct``: msgspec Structs with a tagged union (validation in C; readers get attributes);
- ``typeddict``: dicts validated by msgspec against a ``TypedDict`` per type, the type read off the
  header's first key (what ``jupyter_gpu/_wire/messages.py`` does);
- ``kept``: ``framing.encode`` + ``framing.parse_first`` of the project itself (framing included).

Rounds interleave the variants; each sample is the mean of N encode+decode+validate in microseconds.

    python benchmarks/bench_messages.py [--rounds 30] [--n 5000]
"""
from __future__ import annotations

import argparse
import json
import time

from common import banner, fmt_stats, ratio, stats, write_result

from typing import Optional, TypedDict, Union
import msgspec  # noqa: E402

H = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
EXECUTE = {"type": "execute", "cell": "abcd1234-ef567890-12.0", "code": "# %%gpu \nx = 1\n", "gpu": "cpu",
           "image": "default", "exec_count": 12, "inputs": {}, "keep": {"a": H}, "expect_worker": "w-1234",
           "binds": ["x"], "out": None, "no_out": False, "shm": True, "keep_warm": None, "returned": [],
           "session": "abcd1234-ef567890"}
DONE = {"type": "done", "cell": "abcd1234-ef567890-12.0", "status": "ok",
        "timings": {"load": 1.2e-5, "exec": 3.1e-4, "post": 4.0e-5, "run": 0.0012},
        "returned": [], "values": {"x": {"h": H, "t": "int", "p": {"w": 0}, "b": []}}, "buffers": [25],
        "seq": 5, "worker": "w-1234", "gpu": "cpu", "device": "cpu (2 cores)", "cold": False, "image": "default",
        "keep_warm": 300.0, "pool": "serverless"}

# ---- B: msgspec Structs
class Ref(msgspec.Struct, omit_defaults=True):
    w: Optional[int] = None
    shm: Optional[str] = None
    n: Optional[int] = None
class Value(msgspec.Struct):
    h: str
    t: str
    p: Ref
    b: list[Ref]
class Base(msgspec.Struct, tag_field="type", omit_defaults=True):
    buffers: list[int] = []
    nframes: int = 0
    seq: Optional[int] = None
class Execute(Base, tag="execute"):
    cell: str = ""
    code: str = ""
    gpu: str = ""
    image: Optional[str] = None
    exec_count: int = 0
    inputs: dict[str, Value] = {}
    keep: dict[str, str] = {}
    expect_worker: Optional[str] = None
    binds: list[str] = []
    out: Optional[list[str]] = None
    no_out: bool = False
    shm: bool = False
    keep_warm: Optional[float] = None
    returned: list[str] = []
    session: Optional[str] = None
class Done(Base, tag="done"):
    cell: str = ""
    status: str = "ok"
    timings: dict[str, float] = {}
    returned: list[str] = []
    values: dict[str, Value] = {}
    refs: dict[str, dict] = {}
    deleted: list[str] = []
    worker: Optional[str] = None
    gpu: Optional[str] = None
    device: Optional[str] = None
    cold: bool = False
    image: Optional[str] = None
    keep_warm: Optional[float] = None
    pool: Optional[str] = None
Msg = Union[Execute, Done]
enc = msgspec.json.Encoder()
dec = msgspec.json.Decoder(Msg)

# ---- C: TypedDict via msgspec, dicts stay dicts
class TRef(TypedDict, total=False):
    w: int
    shm: str
    n: int
class TValue(TypedDict):
    h: str
    t: str
    p: TRef
    b: list[TRef]
class TExecute(TypedDict, total=False):
    type: str; cell: str; code: str; gpu: str; image: Optional[str]; exec_count: int
    inputs: dict[str, TValue]; keep: dict[str, str]; expect_worker: Optional[str]; binds: list[str]
    out: Optional[list[str]]; no_out: bool; shm: bool; keep_warm: Optional[float]; returned: list[str]
    session: Optional[str]; buffers: list[int]; nframes: int; seq: int
class TDone(TypedDict, total=False):
    type: str; cell: str; status: str; timings: dict[str, float]; returned: list[str]
    values: dict[str, TValue]; refs: dict[str, dict]; deleted: list[str]; worker: Optional[str]
    gpu: Optional[str]; device: Optional[str]; cold: bool; image: Optional[str]; keep_warm: Optional[float]
    pool: Optional[str]; buffers: list[int]; nframes: int; seq: int
TD = {"execute": msgspec.json.Decoder(TExecute), "done": msgspec.json.Decoder(TDone)}
TDC = {"execute": TExecute, "done": TDone}
raw_dec = msgspec.json.Decoder()

# ---- A: dict + json + hand validator
_jenc = json.JSONEncoder(separators=(",", ":")).encode
NONE = type(None)
VALUE = {"h": str, "t": str, "p": dict, "b": list}
SPEC = {
 "execute": {"cell": str, "code": str, "gpu": str, "image": (str, NONE), "exec_count": int, "inputs": ("values",),
             "keep": ("strmap",), "expect_worker": (str, NONE), "binds": ("strlist",), "out": ("strlist", NONE),
             "no_out": bool, "shm": bool, "keep_warm": (int, float, NONE), "returned": ("strlist",), "session": (str, NONE),
             "buffers": ("intlist",), "nframes": int, "seq": int},
 "done": {"cell": str, "status": str, "timings": ("floatmap",), "returned": ("strlist",), "values": ("values",),
          "refs": dict, "deleted": ("strlist",), "worker": (str, NONE), "gpu": (str, NONE), "device": (str, NONE),
          "cold": bool, "image": (str, NONE), "keep_warm": (int, float, NONE), "pool": (str, NONE),
          "buffers": ("intlist",), "nframes": int, "seq": int},
}
def _check(v, t):
    if isinstance(t, tuple) and t and isinstance(t[0], str):
        kind = t[0]
        if len(t) > 1 and v is None: return True
        if kind == "strlist": return isinstance(v, list) and all(isinstance(x, str) for x in v)
        if kind == "intlist": return isinstance(v, list) and all(type(x) is int for x in v)
        if kind == "strmap": return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
        if kind == "floatmap": return isinstance(v, dict) and all(type(x) in (int, float) for x in v.values())
        if kind == "values": return isinstance(v, dict) and all(isinstance(x, dict) and all(isinstance(x.get(k), tt) for k, tt in VALUE.items()) for x in v.values())
    if t is bool: return type(v) is bool
    if t is int: return type(v) is int
    return isinstance(v, t)
def validate(h):
    spec = SPEC[h["type"]]
    for k, v in h.items():
        t = spec.get(k)
        if t is not None and not _check(v, t):
            raise ValueError(k)
    return h



def _variants(label, d):
    from jupyter_gpu._wire import framing
    st = dec.decode(enc.encode(d))
    head = {k: v for k, v in d.items() if k != "buffers"}  # encode lists the buffers itself
    bufs = [b"x" * n for n in d.get("buffers", ())]
    return {
        "today": lambda: json.loads(_jenc(d).encode()),
        "dict_json": lambda: validate(json.loads(_jenc(d).encode())),
        "struct": lambda: dec.decode(enc.encode(st)),
        "typeddict": lambda: TD[label].decode(enc.encode(d)),
        "kept": lambda: framing.parse_first(framing.encode(head, bufs)[0]),
    }


def _refuses(fn, bad) -> bool:
    try:
        fn(bad)
    except Exception:
        return True
    return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.n = 5, 1000
    banner("typed messages: encode + decode + validate, per header")
    from jupyter_gpu._wire import framing
    results, ratios = {}, {}
    for label, d in (("execute", EXECUTE), ("done", DONE)):
        variants = _variants(label, d)
        samples = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                for _ in range(args.n):
                    fn()
                samples[name].append((time.perf_counter() - t0) / args.n * 1e6)
        print(f"{label}:")
        for name in variants:
            results[f"{label}.{name}"] = st = stats(samples[name], "us")
            print(fmt_stats(name, st))
        for name in ("dict_json", "typeddict", "kept"):
            ratios[f"{label}.{name}/struct"] = ratio(results[f"{label}.{name}"]["median"],
                                                     results[f"{label}.struct"]["median"])
        ratios[f"{label}.typeddict/today"] = ratio(results[f"{label}.typeddict"]["median"],
                                                   results[f"{label}.today"]["median"])
    bad = {**EXECUTE, "keep_warm": "300"}
    nested = {**EXECUTE, "inputs": [["a", 1]]}
    refused = {
        "dict_json": _refuses(lambda b: validate(json.loads(_jenc(b))), bad) and _refuses(lambda b: validate(json.loads(_jenc(b))), nested),
        "struct": _refuses(lambda b: dec.decode(enc.encode(b)), bad) and _refuses(lambda b: dec.decode(enc.encode(b)), nested),
        "typeddict": _refuses(lambda b: TD["execute"].decode(enc.encode(b)), bad) and _refuses(lambda b: TD["execute"].decode(enc.encode(b)), nested),
        "kept": _refuses(lambda b: framing.parse_first(framing.encode(b)[0]), bad) and _refuses(lambda b: framing.parse_first(framing.encode(b)[0]), nested),
        "today": _refuses(lambda b: json.loads(_jenc(b)), bad),
    }
    print("refuses a string keep_warm and a list where a dict belongs:", refused)
    for k, v in ratios.items():
        print(f"  {k:<32} {v:6.2f}")
    write_result("messages", {"rounds": args.rounds, "n": args.n, "variants": results, "ratios": ratios,
                              "refuses_wrong_types": refused,
                              "targets": {"kept validates types": {"pass": refused["kept"]}}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
