"""`python -m jupyter_gpu_worker --url ...`: run a worker (agent.main).  A sandboxed one (the local
runtime under --users) enters its sandbox first, while it is one thread: a library's threads
(OpenBLAS starts some when numpy is imported) would make that impossible (sandbox.py)."""
import json
import os

_plan = os.environ.pop("JUPYTER_GPU_SANDBOX", None)  # settings.SANDBOX, read before anything is imported
_quiet = os.environ.pop("JUPYTER_GPU_QUIET_START", None) == "1"  # settings.QUIET_START
if _plan:
    from jupyter_gpu_worker import sandbox

    sandbox.enter(json.loads(_plan))

if _quiet:  # started beside a kernel's own start: its imports take the CPU that start leaves
    import importlib

    from jupyter_gpu._wire.priority import run_lowered

    run_lowered(lambda: importlib.import_module("jupyter_gpu_worker.agent"), name="worker-imports")

from jupyter_gpu_worker.agent import main  # noqa: E402

main(quiet_start=_quiet)
