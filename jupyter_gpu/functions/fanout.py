"""A map over several workers (``max_workers=N``): the kernel's session plus N-1 sessions of its
own on the same backend, each with its own connection and so its own worker of the pool, each
driven by a thread of its own.

Why extra sessions and not N requests on one connection: a session's requests are read in the
thread that sent them (_client/driver.py), one at a time; separate sessions need no demultiplexer
and no change to the backend, whose unit of isolation and keep-warm already is the session.  Their
workers are the kernel's, billed to it: every call's footer is recorded by the kernel's session
(`%gpu cost`, the budget) and summed into the calling cell's footer, and each call is a ledger row
of the user.  The extra sessions stay (warm, as their workers' keep-warm says) for the kernel's next
map, and close with the kernel.

Batches go to whichever session is free; at most 2 x N batches are in flight or waiting to be read
(a generator's items are read as they are sent); results come back in input order.  The stop
button (on the kernel's main thread) interrupts every batch in flight and sends no more.
"""
from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading

from jupyter_gpu._wire import messages, serialization

_SLOTS: dict = {}  # (kernel session id, options) -> its extra sessions (the kernel's own is not one)


def sessions(owner, f, n: int) -> list:
    """The kernel's session and n-1 more, connected to its backend."""
    from jupyter_gpu.notebook.session import KernelSession

    if not hasattr(owner, "lock"):
        owner.lock = threading.Lock()
    owner.connect()  # (the kernel's first call may be this map)
    extra = _SLOTS.setdefault((owner.id, f.options), [])
    while len(extra) < n - 1:
        s = KernelSession(owner.shell)
        s.owner = owner
        s.defaults = owner.defaults
        s.connect(owner.client.url, owner.client.token)
        extra.append(s)
    return [owner, *extra[:n - 1]]


def run_batches(owner, f, numbered_batches, kwargs: dict, n: int, run, progress):
    """Generator: (batch, results, stopped) in input order, the batches run on ``n`` sessions by
    ``run(session, f, what)`` (call._run); ``progress`` (progress.Progress) is told where each
    batch went, and refreshed while this thread waits."""
    free: queue.SimpleQueue = queue.SimpleQueue()
    for s in sessions(owner, f, n):
        free.put(s)
    flying: dict = {}  # session id -> (its connection, the cell in flight): what a stop press interrupts

    def one(batch):
        s = free.get()
        told = progress.sent(batch)

        def on_sent(conn, cell):
            flying[s.id] = (conn, cell)
            told(conn, cell)

        try:
            packed = serialization.pickle_value("<map items>", [(tuple(a), kwargs) for _, a in batch])
            results, stopped = run(s, f, {"items": packed, "return_exceptions": True}, on_sent=on_sent)
            progress.ran(batch, results)  # done now, though read in input order (a batch before it may still run)
            return results, stopped
        finally:
            flying.pop(s.id, None)
            free.put(s)

    pending: collections.deque = collections.deque()
    batches = iter(numbered_batches)
    with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="jupyter-gpu-map") as pool:
        try:
            for batch in batches:
                pending.append((batch, pool.submit(one, batch)))
                if len(pending) >= 2 * n:
                    break
            while pending:
                batch, future = pending.popleft()
                while not future.done():  # (its phases, a cold start's, change the counts meanwhile)
                    concurrent.futures.wait((future,), timeout=progress.every)
                    progress.tick()
                results, stopped = future.result()
                if stopped is None:
                    nxt = next(batches, None)
                    if nxt is not None:
                        pending.append((nxt, pool.submit(one, nxt)))
                yield batch, results, stopped, len(pending)
                if stopped is not None:
                    return
        except KeyboardInterrupt:  # the stop button: every batch in flight is interrupted, no more go
            for conn, cell in list(flying.values()):
                try:
                    conn.send({"type": messages.INTERRUPT, "cell": cell})
                except Exception:
                    pass
            for _, future in pending:
                future.cancel()
            concurrent.futures.wait([fu for _, fu in pending], timeout=30)
            raise
