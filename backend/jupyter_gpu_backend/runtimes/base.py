"""What every runtime reports the same way: why a worker ended, and the tail of its log."""
from __future__ import annotations

import asyncio
import os
import signal


def exit_text(code: int) -> str:
    """A process exit code (negative: the signal that killed it) in words."""
    if code < 0:
        try:
            return f"the process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the process was killed by signal {-code}"
    return f"the process exited with code {code}"


async def exit_cause(exited: asyncio.Future, timeout: float = 2.0) -> str:
    """Why a worker whose connection closed is gone, from its exit future."""
    try:
        code = await asyncio.wait_for(asyncio.shield(exited), timeout)
    except asyncio.TimeoutError:
        return "its connection closed while the process kept running"
    except ConnectionError:
        return "its connection closed (its exit status is unknown: the process reporting it is gone)"
    return exit_text(code)


async def wait_exits(handles, timeout: float = 5.0) -> None:
    """Wait (each up to ``timeout``) for the workers a runtime is shutting down to be gone."""
    for handle in list(handles):
        try:
            await asyncio.wait_for(asyncio.shield(handle.exited), timeout)
        except (asyncio.TimeoutError, ConnectionError):
            pass


def log_tail(path: str, limit: int = 2000, missing: str = "") -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return missing
