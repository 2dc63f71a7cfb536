"""Batched optimisers the attacks use: lock-step SciPy L-BFGS-B (:mod:`.scipy_lbfgsb`), a
vectorised torch L-BFGS-B (:mod:`.torch_lbfgsb`), batched Adam (:mod:`.adam`), and the
per-example loss gradients they all run on (:mod:`.gradients`)."""
