"""`python -m jupyter_gpu_worker --url ...`: run a worker (agent.main)."""
from jupyter_gpu_worker.agent import main

main()
