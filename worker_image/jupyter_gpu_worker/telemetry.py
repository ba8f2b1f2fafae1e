"""What a cell did to its GPU: peak memory and mean utilisation, sampled from NVML while it runs.

Only a worker that has a GPU samples (a ``cpu`` worker has nothing to report and pays nothing).  A
thread samples every SAMPLE_EVERY seconds while a cell runs, and the cell's start and end are
sampled too, so a short cell still has two samples.  Memory is the device's used memory: a worker
has its GPU(s) to itself, and NVML's per-process figures are missing inside containers.
"""
from __future__ import annotations

import threading
import time

SAMPLE_EVERY = 0.05


class GpuTelemetry:
    def __init__(self, indices: list[int]):
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        self._running = threading.Event()
        self._lock = threading.Lock()
        self._reset()
        threading.Thread(target=self._sample_forever, name="gpu-telemetry", daemon=True).start()

    @classmethod
    def for_device(cls, info: dict) -> "GpuTelemetry | None":
        """The sampler of the device ``device.describe()`` found, or None (cpu, or no NVML)."""
        indices = info.get("indices") or ([info["index"]] if info.get("index") is not None else [])
        if info.get("gpu") == "cpu" or not indices:
            return None
        try:
            return cls(indices)
        except Exception:
            return None

    def _reset(self) -> None:
        self.peak, self.util_sum, self.samples = 0, 0.0, 0

    def _sample(self) -> None:
        try:
            used = sum(int(self.nvml.nvmlDeviceGetMemoryInfo(h).used) for h in self.handles)
            util = sum(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self.handles) / len(self.handles)
        except Exception:
            return  # a sample that fails is left out; the others still tell
        with self._lock:
            self.peak = max(self.peak, used)
            self.util_sum += util
            self.samples += 1

    def _sample_forever(self) -> None:
        while True:
            self._running.wait()
            time.sleep(SAMPLE_EVERY)
            if self._running.is_set():
                self._sample()

    def start(self) -> None:
        with self._lock:
            self._reset()
        self._sample()
        self._running.set()

    def stop(self) -> dict:
        self._running.clear()
        self._sample()
        with self._lock:
            if not self.samples:
                return {}
            return {"peak_memory_bytes": self.peak, "mean_utilisation": self.util_sum / self.samples / 100.0,
                    "samples": self.samples}
