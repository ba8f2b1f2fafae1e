"""The notebook executor of `jupyter-gpu run` (and of the tests): nbclient, without its stall on
notebooks with widgets.

nbclient waits for a cell's ``execute_reply`` in one poll of the kernel's shell socket, as long as
the cell's timeout.  A notebook with an ``ipywidgets.Output`` (``interact`` makes one) has nbclient
send the widget's captured outputs to the kernel on that same socket while the poll waits
(``nbclient.output_widget.OutputWidget.sync_state``), and pyzmq's asyncio poll can then miss the
reply's arrival: the poll sees it only when its timeout fires, and the run goes on as if nothing
had happened (nbclient#312).  Measured here: 180 s lost after one `interact` cell, in 1 of 2 runs
of the differential notebook beside another; twice in a row (360 s) was longer than a worker's
300 s keep-warm, so the next `%%gpu` cell got a new worker, without the namespace it had built.

So the shell socket is polled in slices of ``SLICE`` seconds, up to the same deadline: a poll
whose timeout fires looks at the socket once more (pyzmq does), and finds a reply it missed.  A
waiting cell costs one timer every ``SLICE``; a reply that is seen costs nothing more.
"""
from __future__ import annotations

import time
from queue import Empty

import nbclient
from jupyter_core.utils import run_sync

SLICE = 0.25  # seconds: the longest a missed reply waits to be seen


class NotebookClient(nbclient.NotebookClient):
    """``nbclient.NotebookClient`` whose kernel client polls its shell socket in slices."""

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        sliced(kc.shell_channel)
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)


def sliced(channel) -> None:
    """Make ``channel.get_msg(timeout)`` wait in polls of at most SLICE seconds."""
    whole = channel.get_msg

    async def get_msg(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else min(SLICE, max(0.0, deadline - time.monotonic()))
            try:
                return await whole(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg
