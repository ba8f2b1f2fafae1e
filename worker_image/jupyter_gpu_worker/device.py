"""What this worker computes on: an NVIDIA GPU from NVML, or honestly the CPU."""
from __future__ import annotations

import os

from jupyter_gpu._wire.devices import gpu_type_of  # NVML name -> catalog type, shared with the backend


def describe() -> dict:
    """{"gpu": type name, "device": human name, "memory_bytes": int|None, "index": int|None}.

    Uses NVML when a GPU is visible (CUDA_VISIBLE_DEVICES is honoured by picking its first entry);
    anything else is reported as ``cpu`` - never as a GPU.
    """
    gpu = _nvml_device()
    if gpu is not None:
        return gpu
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"gpu": "cpu", "device": f"cpu ({n} cores)", "memory_bytes": None, "index": None}


def _nvml_device() -> dict | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = visible.split(",")[0].strip() if visible is not None else "0"
    if first == "" or first == "-1":
        # CUDA is hidden from this process: it computes on the CPU, and says so (asked before
        # pynvml is imported: ~20 ms of a cpu worker's start here, before it could register)
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        if first.isdigit():
            index = int(first)
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
        else:  # a GPU UUID
            h = pynvml.nvmlDeviceGetHandleByUUID(first.encode())
            index = pynvml.nvmlDeviceGetIndex(h)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else name
        mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
        return {"gpu": gpu_type_of(name), "device": name, "memory_bytes": int(mem), "index": index}
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
