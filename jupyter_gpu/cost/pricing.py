"""The price catalog: sourced public list prices shipped in `prices.toml`, plus a team's own file.

Every figure carries its provider, date and source (see ../shared/pricing-sources.md).  A team's
file (``JUPYTER_GPU_PRICES``, else ``~/.jupyter/jupyter-gpu/prices.toml``) in the same format
replaces entries with the same (kind, gpu, provider) and adds new ones (a negotiated rate, their own
box at $0/h); a team's entry for a device type is "the" price of that type (its ``[defaults]``
choose among several), else the shipped ``[defaults]`` provider's.

The `cpu` device is priced as CPU, never as a GPU: its entries say ``per = "core"`` (a list price
per core), and ``price_for("cpu", device="cpu (N cores)")`` scales them by the N cores the worker
really has (without a device string: this machine's cores, as a local worker has).  A team's file
can still price `cpu` at zero.

``price_for(gpu)`` and ``PRICES`` (gpu -> Price) are what the footer and the JupyterLab sidebar
use; ``catalog()`` lists every entry with where it came from.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from jupyter_gpu._wire import settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SHIPPED = "shipped"


@dataclass(frozen=True)
class Profile:
    """Which phases a platform bills, and what one rounding unit is ("worker" or "cell")."""

    name: str = "none"
    bills_cold_start: bool = True
    bills_keep_warm: bool = True
    unit: str = "worker"
    note: str = ""
    # an image build (jupyter_gpu.Image, %%gpu --pip) runs on the backend's host, not a GPU: billed
    # only where a platform bills it as the worker's time
    bills_build: bool = False


@dataclass(frozen=True)
class Entry:
    """One catalog line: a provider's price of one GPU type."""

    kind: str  # "serverless" (price per second) or "dedicated" (price per hour)
    gpu: str
    provider: str
    provider_name: str
    price: float  # per second (serverless) or per hour (dedicated)
    as_of: str
    source: str
    granularity_s: float = 1.0
    minimum_s: float = 0.0
    profile: Profile = field(default_factory=Profile)
    note: str = ""
    unsourced: str = ""
    origin: str = SHIPPED  # "shipped" or the override file's path
    per: str = "device"  # "core": the price is per CPU core, scaled by the worker's cores (price_for)

    @property
    def per_s(self) -> float:
        return self.price if self.kind == "serverless" else self.price / 3600.0

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("kind", "gpu", "provider", "provider_name", "price", "as_of", "source",
                                           "granularity_s", "minimum_s", "note", "unsourced", "origin", "per")}
        d["unit"] = "second" if self.kind == "serverless" else "hour"
        d["profile"] = vars(self.profile).copy()
        return d


@dataclass(frozen=True)
class Price:
    gpu: str
    serverless_per_s: float
    serverless_provider: str
    serverless_as_of: str
    serverless_source: str
    dedicated_per_h: float
    dedicated_provider: str
    dedicated_as_of: str
    dedicated_source: str
    note: str = ""
    # billing rules of the serverless entry, and of the dedicated one
    granularity_s: float = 1.0
    minimum_s: float = 0.0
    profile: Profile = field(default_factory=Profile)
    dedicated_granularity_s: float = 1.0
    dedicated_minimum_s: float = 0.0
    memory_gib: float | None = None
    unsourced: str = ""
    origin: str = SHIPPED
    # per-core entries (the cpu device): how many cores the prices above are for, the per-core
    # prices they were scaled from, and which sides were scaled; ``basis`` says what was priced
    cores: int | None = None
    per_core_s: float | None = None
    per_core_h: float | None = None
    basis: str = ""

    def as_dict(self) -> dict:
        return {
            "serverless_per_s": self.serverless_per_s,
            "dedicated_per_h": self.dedicated_per_h,
            "provider": self.serverless_provider,
            "as_of": self.serverless_as_of,
            "source": self.serverless_source,
            "dedicated_provider": self.dedicated_provider,
            "dedicated_as_of": self.dedicated_as_of,
            "dedicated_source": self.dedicated_source,
            "note": self.note,
            "granularity_s": self.granularity_s,
            "minimum_s": self.minimum_s,
            "profile": vars(self.profile).copy(),
            "dedicated_granularity_s": self.dedicated_granularity_s,
            "dedicated_minimum_s": self.dedicated_minimum_s,
            "memory_gib": self.memory_gib,
            "unsourced": self.unsourced,
            "origin": self.origin,
            "cores": self.cores,
            "per_core_s": self.per_core_s,
            "per_core_h": self.per_core_h,
            "basis": self.basis,
        }


def override_path() -> Path | None:
    """The team's own catalog, if there is one."""
    env = settings.PRICES.get()
    if env:
        return Path(env).expanduser()
    p = Path.home() / ".jupyter" / "jupyter-gpu" / "prices.toml"
    return p if p.exists() else None


def _entries(doc: dict, origin: str, profiles: dict) -> list[Entry]:
    out = []
    for kind, price_key in (("serverless", "per_s"), ("dedicated", "per_h")):
        for e in doc.get(kind, []):
            missing = [k for k in ("gpu", "provider", price_key) if k not in e]
            if missing:
                raise ValueError(f"{origin}: a [[{kind}]] entry lacks {', '.join(missing)}: {e}")
            prof_name = e.get("profile", "instance" if kind == "dedicated" else "none")
            out.append(Entry(
                kind=kind, gpu=e["gpu"], provider=e["provider"], provider_name=e.get("provider_name", e["provider"]),
                price=float(e[price_key]), as_of=str(e.get("as_of", "")), source=e.get("source", ""),
                granularity_s=float(e.get("granularity_s", 1)), minimum_s=float(e.get("minimum_s", 0)),
                profile=profiles.get(prof_name, Profile(prof_name)), note=e.get("note", ""),
                unsourced=e.get("unsourced", "" if e.get("source") else "no source given"), origin=origin,
                per=_per(e, origin),
            ))
    return out


def _per(e: dict, origin: str) -> str:
    per = e.get("per", "device")
    if per not in ("device", "core"):
        raise ValueError(f"{origin}: per = {per!r} in {e}: use \"device\" (the default) or \"core\"")
    return per


def _profiles(doc: dict, into: dict) -> dict:
    for name, p in doc.get("profiles", {}).items():
        into[name] = Profile(name, bool(p.get("bills_cold_start", True)), bool(p.get("bills_keep_warm", True)),
                             p.get("unit", "worker"), p.get("note", ""), bool(p.get("bills_build", False)))
    return into


class Catalog:
    def __init__(self, override: Path | None = None):
        shipped = tomllib.loads(resources.files("jupyter_gpu.cost").joinpath("prices.toml").read_text())
        docs = [(SHIPPED, shipped)]
        if override is not None:
            try:
                with open(override, "rb") as f:
                    docs.append((str(override), tomllib.load(f)))
            except FileNotFoundError:
                import warnings

                warnings.warn(f"price override file {override} does not exist: using the shipped catalog only")
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"price override file {override}: {e}") from None
        self.profiles: dict = {}
        self.defaults: dict = {}
        self.memory: dict = {}
        entries: dict = {}
        for origin, doc in docs:
            _profiles(doc, self.profiles)
            self.defaults.update(doc.get("defaults", {}))
            self.memory.update({k: float(v) for k, v in doc.get("gpus", {}).items()})
        for origin, doc in docs:
            for e in _entries(doc, origin, self.profiles):
                entries[(e.kind, e.gpu, e.provider)] = e  # a later file replaces the same key
        self.entries: list[Entry] = list(entries.values())

    def pick(self, kind: str, gpu: str) -> Entry | None:
        """The entry that is "the" price of ``gpu``: a team's own entry for it (the default provider's
        among several), else the default provider's, else the first.  A team that prices a type
        (their own box, `cpu` at $0) means that price, whatever the shipped default provider is."""
        cands = [e for e in self.entries if e.kind == kind and e.gpu == gpu]
        if not cands:
            return None
        want = self.defaults.get(kind)
        for pool in ([e for e in cands if e.origin != SHIPPED], cands):
            for e in pool:
                if e.provider == want:
                    return e
            if pool:
                return pool[0]
        return None

    def price(self, gpu: str) -> Price:
        s, d = self.pick("serverless", gpu), self.pick("dedicated", gpu)
        if s is None and d is None:
            why = "no price configured for the cpu device" if gpu == "cpu" else f"no price known for {gpu}"
            return Price(gpu, 0.0, "none", "", "", 0.0, "none", "", "", why, memory_gib=self.memory.get(gpu))
        notes = [f"{k}: {e.note}" for k, e in (("serverless", s), ("dedicated", d)) if e is not None and e.note]
        unsourced = "; ".join(e.unsourced for e in (s, d) if e is not None and e.unsourced)
        if s is None:
            notes.append(f"no serverless price known for {gpu}")
        if d is None:
            notes.append(f"no dedicated price known for {gpu}")
        origins = sorted({e.origin for e in (s, d) if e is not None})
        return Price(
            gpu,
            s.price if s else 0.0, s.provider_name if s else "none", s.as_of if s else "", s.source if s else "",
            d.price if d else 0.0, d.provider_name if d else "none", d.as_of if d else "", d.source if d else "",
            "; ".join(notes),
            granularity_s=s.granularity_s if s else 1.0, minimum_s=s.minimum_s if s else 0.0,
            profile=s.profile if s else Profile(),
            dedicated_granularity_s=d.granularity_s if d else 1.0, dedicated_minimum_s=d.minimum_s if d else 0.0,
            memory_gib=self.memory.get(gpu), unsourced=unsourced, origin=", ".join(origins),
            per_core_s=s.price if s is not None and s.per == "core" else None,
            per_core_h=d.price if d is not None and d.per == "core" else None,
        )

    def gpus(self) -> list[str]:
        return list(dict.fromkeys(e.gpu for e in self.entries))


_catalog: Catalog | None = None
PRICES: dict = {}


def reload(override: Path | None | str = "auto") -> Catalog:
    """Read the shipped catalog and the team's file again (``override=None``: shipped only)."""
    global _catalog
    path = override_path() if override == "auto" else (Path(override) if override else None)
    _catalog = Catalog(path)
    PRICES.clear()
    PRICES.update({g: _catalog.price(g) for g in _catalog.gpus()})
    PRICES["cpu"] = _catalog.price("cpu")
    return _catalog


def current() -> Catalog:
    return _catalog if _catalog is not None else reload()


def catalog() -> list[Entry]:
    """Every entry in effect (shipped and overrides), each with its origin."""
    return list(current().entries)


def local_cores() -> int:
    """The CPUs this process may run on (what a local `cpu` worker started from here reports)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cores_of(device: str | None) -> int | None:
    """N of a worker's device string "cpu (N cores)" (worker_image/jupyter_gpu_worker/device.py)."""
    m = _CORES.search(device or "")
    return int(m.group(1)) if m else None


_CORES = re.compile(r"\((\d+) cores?\)")


def price_for(gpu: str, device: str | None = None) -> Price:
    """The price of one worker of ``gpu``; ``device``: what the worker reported ("cpu (2 cores)"),
    which sizes a per-core price (without it: this machine's cores)."""
    current()
    name, _, count = gpu.partition(":")
    if count.isdigit() and int(count) > 1:  # a worker with N devices ("A100:2") is billed N times one
        one, n = price_for(name, device), int(count)
        return replace(one, gpu=gpu, serverless_per_s=one.serverless_per_s * n, dedicated_per_h=one.dedicated_per_h * n,
                       note=f"{n} x {name}" + (f"; {one.note}" if one.note else ""))
    p = PRICES.get(gpu) or _catalog.price(gpu)
    if p.per_core_s is None and p.per_core_h is None:
        return p
    n = cores_of(device) or local_cores()
    s = p.per_core_s * n if p.per_core_s is not None else p.serverless_per_s
    d = p.per_core_h * n if p.per_core_h is not None else p.dedicated_per_h
    what = device if cores_of(device) else f"{gpu} ({n} cores)"
    kind = "CPU " if gpu == "cpu" else ""
    listed = "list price" if p.origin == SHIPPED else "price"
    basis = f"{what} at {p.serverless_provider} {kind}{listed}" + (f" {p.serverless_as_of}" if p.serverless_as_of else "")
    return replace(p, serverless_per_s=s, dedicated_per_h=d, cores=n, basis=basis)


def table(entries: list[Entry] | None = None) -> str:
    """The effective catalog as text, for `jupyter-gpu prices`."""
    cat = current()
    rows = [("kind", "gpu", "provider", "price", "as of", "granularity", "min", "cold/idle billed", "from", "source")]
    for e in sorted(entries or cat.entries, key=lambda e: (e.kind != "serverless", e.gpu, e.provider)):
        chosen = cat.pick(e.kind, e.gpu) is e
        price = f"${e.price:.6f}/s" if e.kind == "serverless" else f"${e.price:.3f}/h"
        if e.per == "core":  # the cpu device: per core, scaled by the worker's cores
            price = f"${e.price:.8f}/core-s" if e.kind == "serverless" else f"${e.price:.4f}/core-h"
        billed = f"{'yes' if e.profile.bills_cold_start else 'no'}/{'yes' if e.profile.bills_keep_warm else 'no'}"
        rows.append((e.kind, e.gpu, e.provider + (" *" if chosen else ""), price, e.as_of or "undated",
                     f"{e.granularity_s:g} s", f"{e.minimum_s:g} s", billed, e.origin,
                     e.source + (f"  [unsourced: {e.unsourced}]" if e.unsourced else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    override = override_path()
    lines.append("")
    lines.append("* = the price the footer uses for that GPU type; override file: "
                 + (str(override) if override else "none (set JUPYTER_GPU_PRICES or ~/.jupyter/jupyter-gpu/prices.toml)"))
    return "\n".join(lines)
