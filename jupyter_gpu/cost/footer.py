"""The cell footer: one display output whose JSON is the cell's cost record in the notebook."""
from __future__ import annotations

import html
import time

from jupyter_gpu.cost import billing
from jupyter_gpu.cost.pricing import price_for
from jupyter_gpu._wire.serialization import human_size

MIME = "application/vnd.jupyter-gpu.execution+json"
# JupyterLab typesets `$...$` in an HTML output as LaTeX math (MathJax over the whole output), so
# two prices on one line came out as italic math; MathJax skips an element with one of these
# classes (MathJax 3's default, the classic notebook's MathJax 2).  A `\$` would show elsewhere.
NO_MATH = "mathjax_ignore tex2jax_ignore"


def build(done: dict, wall: float, transfer: dict, previous: list | None = None) -> dict:
    """Footer JSON from the cell's final event, the wall time the kernel measured, and bytes moved.
    ``previous``: the session's earlier footers, in order: the keep-warm idle this cell ended
    (`billing.idle_before`) is billed in its footer, so the footers add up to the session's cost."""
    ended = time.time()  # as close to ``wall``'s end as can be: ``started_at`` dates the cell
    t = done.get("timings", {})
    # the worker's device sizes a per-core price: "cpu (2 cores)" is two cores' worth
    price = price_for(done.get("gpu") or "cpu", done.get("device")).as_dict()
    timings = {k: t.get(k, 0.0) for k in ("queue", "cold_start", "load", "exec", "post", "run")}
    if t.get("build"):  # its jupyter_gpu.Image was built for it (a phase of its own, billed per the profile)
        timings["build"] = t["build"]
    pool = done.get("pool") or "serverless"  # hybrid pools: dedicated cells are billed per hour (billing.py)
    c = billing.cell({**timings, "wall": wall}, price, pool)
    f = {
        "version": 1,
        "status": done.get("status", "ok"),
        "gpu": done.get("gpu"),
        "device": done.get("device"),
        "worker": done.get("worker"),
        "cold": bool(done.get("cold")),
        "start_method": done.get("start_method"),  # a cold worker: forked from the zygote, or spawned
        "route": done.get("route", "backend"),  # "lane": a warm cell that went straight to its worker
        "pool": pool,  # "dedicated": a worker of the backend's always-on pool (hybrid pools)
        "image": done.get("image") or "default",  # the worker image (%%gpu --image; _wire/pools.py)
        "timings": {**timings, "wall": wall},
        "started_at": ended - wall,  # unix time: the session's timeline and keep-warm gaps
        "worker_ended_at": t.get("ended_at"),  # the worker's clock: the keep-warm idle it billed
        "keep_warm": done.get("keep_warm"),
        "billed": c["billed"],  # billed seconds by phase, per the price's profile (see billing.py)
        "billed_seconds": c["billed_seconds"],
        "cost_usd": c["cost_usd"],
        "dedicated_usd": c["dedicated_usd"],
        "price": price,
        "transfer": transfer,
        **({"telemetry": done["telemetry"]} if done.get("telemetry") else {}),
    }
    idle, prev = billing.idle_before(previous or [], f) if previous else (0.0, None)
    idle_s, idle_usd = billing.idle_cost(idle, prev)
    f["keep_warm_idle_s"] = idle_s  # billed on the worker of the pool's previous cell, before this one
    if idle_s:
        f["billed"] = {**c["billed"], "keep_warm_idle": idle_s}
        f["billed_seconds"] = c["billed_seconds"] + idle_s
        f["cost_usd"] = c["cost_usd"] + idle_usd
    return f


def summed(footers: list) -> dict:
    """One footer for the function calls a cell made: the last call's worker and price, every
    call's time, billed seconds, cost and bytes added up, ``calls`` how many."""
    last = footers[-1]
    add = lambda key: sum(f.get(key) or 0.0 for f in footers)  # noqa: E731
    f = dict(last)
    f["status"] = next((x["status"] for x in footers if x.get("status") != "ok"), "ok")
    f["cold"] = any(x.get("cold") for x in footers)
    f["timings"] = {k: sum((x.get("timings") or {}).get(k, 0.0) for x in footers) for k in last.get("timings", {})}
    billed: dict = {}
    for x in footers:
        for k, v in (x.get("billed") or {}).items():
            billed[k] = billed.get(k, 0.0) + v
    f.update(billed=billed, billed_seconds=add("billed_seconds"), cost_usd=add("cost_usd"),
             dedicated_usd=add("dedicated_usd"), keep_warm_idle_s=add("keep_warm_idle_s"), calls=len(footers),
             started_at=footers[0].get("started_at"),
             transfer={k: sum((x.get("transfer") or {}).get(k) or 0 for x in footers)
                       for k in ("sent_bytes", "received_bytes")})
    return f


def _s(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def usd(x: float) -> str:
    return f"${x:.6f}" if x < 0.01 else f"${x:.4f}"


def _gpu_use(f: dict) -> str:
    """" · peak 11.2 GiB, 87 % busy" when the worker sampled its GPU (NVML), else nothing."""
    tm = f.get("telemetry") or {}
    if not tm.get("peak_memory_bytes"):
        return ""
    return f" · peak {tm['peak_memory_bytes'] / 2**30:.1f} GiB, {tm.get('mean_utilisation', 0) * 100:.0f} % busy"


def _files(f: dict) -> str:
    """" · synced 3 files in, 1 out, 4.2 MiB": the notebook's directory, to a worker that cannot see it."""
    moved = f.get("files")
    if not moved:
        return ""
    return f" · synced {moved['in']} file{'s' if moved['in'] != 1 else ''} in, {moved['out']} out, {human_size(moved['bytes'])}"


def text(f: dict) -> str:
    return _text(f) + _gpu_use(f) + _files(f)


def _image(f: dict) -> str:
    """" · image: a" for a named worker image; nothing for the default one (or a footer from before images)."""
    image = f.get("image") or "default"
    return "" if image == "default" else f" · image: {image}"


def _text(f: dict) -> str:
    t = f["timings"]
    start = f"cold start {_s(t['cold_start'])}" if f["cold"] else "warm"
    if t.get("build"):
        start = f"build {_s(t['build'])} · {start}"
    p = f["price"]
    price_note = p["note"] if not p["serverless_per_s"] else p.get("basis") or f"{p['provider']} {p['as_of']}"
    # a cpu worker's seconds are not GPU-seconds: nothing may pretend the CPU is a GPU
    unit = "worker-s" if f.get("gpu") == "cpu" or p.get("cores") else "GPU-s"
    idle = f.get("keep_warm_idle_s") or 0.0
    idle_note = f" incl. {_s(idle)} keep-warm idle" if idle else ""
    if f.get("pool") == "dedicated":  # nothing billed per second: the cell's share of the pool's hourly price
        p = f["price"]
        note = f"{p.get('dedicated_provider')} {p.get('dedicated_as_of')}" if p.get("dedicated_per_h") else p["note"]
        return (f"gpu: {f['device']} [{f['status']}]{_image(f)} · pool: dedicated · {start} · run {_s(t['run'])}"
                f" · wall {_s(t['wall'])} · {usd(f['cost_usd'])} share of the dedicated pool ({note})")
    calls = f" · {f['calls']} function call{'s' if f['calls'] != 1 else ''}" if f.get("calls") else ""
    return (
        f"gpu: {f['device']} [{f['status']}]{_image(f)}{calls} · pool: {f.get('pool', 'serverless')} · {start} · run {_s(t['run'])} · wall {_s(t['wall'])}"
        f" · {f['billed_seconds']:.3f} {unit}{idle_note} · {usd(f['cost_usd'])} serverless"
        f" vs {usd(f['dedicated_usd'])} dedicated ({price_note})"
    )


def to_html(f: dict) -> str:
    return (
        f'<div class="jupyter-gpu-footer {NO_MATH}" style="font:12px monospace;color:#555;'
        'border-top:1px solid #ddd;padding-top:2px">'
        f"{html.escape(text(f))}</div>"
    )


def bundle(f: dict) -> dict:
    return {MIME: f, "text/plain": text(f), "text/html": to_html(f)}


def live_bundle(phase: str, gpu: str, elapsed: float, position: int | None = None, detail: str = "") -> dict:
    data = {"version": 1, "live": True, "phase": phase, "gpu": gpu, "elapsed": elapsed, "position": position}
    if detail:
        data["detail"] = detail  # what the wait is for (a Ray actor that no node has room for yet)
    where = f" #{position}" if position else ""
    line = f"gpu: {phase.replace('_', ' ')}{where} on {gpu} · {elapsed:.1f} s" + (f" · {detail}" if detail else "")
    return {MIME: data, "text/plain": line, "text/html": f'<div style="font:12px monospace;color:#888">{html.escape(line)}</div>'}
