"""`python -m jupyter_gpu_worker --url ...`: run a worker (agent.main).  A sandboxed one (the local
runtime under --users) enters its sandbox first, while it is one thread: a library's threads
(OpenBLAS starts some when numpy is imported) would make that impossible (sandbox.py)."""
import json
import os

_plan = os.environ.pop("JUPYTER_GPU_SANDBOX", None)  # settings.SANDBOX, read before anything is imported
if _plan:
    from jupyter_gpu_worker import sandbox

    sandbox.enter(json.loads(_plan))

from jupyter_gpu_worker.agent import main  # noqa: E402

main()
