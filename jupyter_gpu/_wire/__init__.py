"""What two processes must agree on: framing, messages, values, shared memory, the lane, GPU specs, pool keys, settings.

Imports nothing of jupyter_gpu but ``errors``: the worker and the backend import this package, never the kernel's."""
