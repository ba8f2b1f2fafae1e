"""`python -m jupyter_gpu_backend`: run the backend (server.main).

A kernel's embedded backend spawns its early worker first, before importing the server (prestart.py).
"""
import sys

from jupyter_gpu_backend.prestart import early_worker

_early = early_worker(sys.argv[1:])
try:
    from jupyter_gpu_backend.server import main

    main(prestarted=_early)
finally:
    if _early is not None:
        _early.abandon()  # (a no-op once the runtime took it)
