"""The jupyter-gpu control plane: gateway, scheduler, runtimes."""
