"""`python -m jupyter_gpu_backend`: run the backend (server.main)."""
from jupyter_gpu_backend.server import main

main()
