"""Batched optimisers the attacks use: lock-step SciPy L-BFGS-B and a vectorised torch one."""
