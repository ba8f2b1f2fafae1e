"""`python -m jupyter_gpu_backend`: run the backend (server.main).

A kernel's embedded backend spawns its early worker first, before importing the server (prestart.py);
with --quiet-start (one started beside its kernel's own start) it imports the server at a lower
priority (_wire/priority.py).
"""
import sys

from jupyter_gpu_backend.prestart import early_worker

_early = early_worker(sys.argv[1:])
try:
    if "--quiet-start" in sys.argv[1:]:
        from jupyter_gpu._wire.priority import run_lowered

        run_lowered(lambda: __import__("jupyter_gpu_backend.server"), name="backend-imports")
    from jupyter_gpu_backend.server import main

    main(prestarted=_early)
finally:
    if _early is not None:
        _early.abandon()  # (a no-op once the runtime took it)
