"""`@jupyter_gpu.function`: a notebook's functions called on GPU workers (Modal's vocabulary:
``.remote``, ``.local``, ``.map``, ``.starmap``, ``.for_each``, ``.spawn`` -> ``FunctionCall``).

A call is a request of the kernel's own session, on the same workers, pipeline and events as its
`%%gpu` cells (an ``execute`` with ``call`` instead of code, as ipyparallel's engine serves both
``execute`` and ``apply``): ``function.py`` is what a user holds, ``call.py`` one request's run,
``jobs.py`` a spawned call (the backend's to run and keep).
"""
