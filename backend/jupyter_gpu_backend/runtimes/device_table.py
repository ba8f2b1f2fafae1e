"""Which device indices of a GPU type a new worker gets (the local runtime's bookkeeping).

The table is the runtime's GPU table (type -> device indices, from NVML; empty without a GPU).
A worker asking for N devices of a type gets N distinct indices, the least used first (ties by
index), so workers spread over the devices; its indices are given back when it exits.  Asking
for more devices than the type has is refused with the reason.  ``cpu`` is no device: a cpu
worker gets none (``CUDA_VISIBLE_DEVICES=""``), and ``cpu:N`` is refused.
"""
from __future__ import annotations

from jupyter_gpu.errors import NoSuchDevice


class DeviceTable:
    def __init__(self, gpus: dict[str, list[int]]):
        self.gpus = {t: list(ix) for t, ix in gpus.items()}
        self.in_use: dict[int, int] = {}  # device index -> workers holding it

    def most(self) -> dict[str, int]:
        """The most devices one worker may get, per type: all the type has."""
        return {t: len(ix) for t, ix in self.gpus.items()}

    def assign(self, gpu: str, count: int = 1) -> list[int]:
        """``count`` distinct indices of type ``gpu`` for a new worker ([] for cpu)."""
        if gpu == "cpu":
            if count > 1:
                raise NoSuchDevice(f"cpu:{count}: a cpu worker has no GPU devices to be given {count} of")
            return []
        indices = self.gpus.get(gpu)
        if not indices:
            raise NoSuchDevice(f"this runtime has no {gpu} device (it has: {', '.join(sorted(self.gpus)) or 'none'})")
        if count > len(indices):
            raise NoSuchDevice(f"{gpu}:{count}: this runtime has only {len(indices)} {gpu} device(s)")
        chosen = sorted(indices, key=lambda i: (self.in_use.get(i, 0), i))[:count]
        for i in chosen:
            self.in_use[i] = self.in_use.get(i, 0) + 1
        return sorted(chosen)

    def release(self, indices: list[int]) -> None:
        for i in indices:
            if self.in_use.get(i, 0) > 0:
                self.in_use[i] -= 1

    @staticmethod
    def visible(indices: list[int]) -> str:
        """The worker's ``CUDA_VISIBLE_DEVICES``: its indices, comma-separated ("" for none)."""
        return ",".join(str(i) for i in indices)
