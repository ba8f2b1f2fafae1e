"""The jupyter-gpu control plane: api (the only door), scheduling, accounting, runtimes."""
