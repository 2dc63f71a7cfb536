"""Many independent box-constrained L-BFGS-B problems, vectorised in torch.

B problems of dimension n (here n = 1024 pixels) are iterated in lock-step as tensor
operations: one batched function/gradient evaluation per round, one row per problem. The
algorithm is L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995, with the Morales–Nocedal 2011
projection of the subspace step, as in SciPy's L-BFGS-B 3.0), one module per phase:

1. :mod:`.cauchy`: the **generalized Cauchy point** along the projected steepest-descent
   path, by prefix sums over the sorted breakpoints instead of the Fortran code's
   sequential loop.
2. :mod:`.subspace`: **subspace minimisation** over the variables free at the Cauchy point
   (Woodbury form, an incrementally updated WᵀZZᵀW), and the search direction.
3. :mod:`.line_search`: a vectorised **strong-Wolfe line search** along the direction.
4. :mod:`.memory`: the **update** of the limited memory (a ring buffer per problem) and its
   compact representation.
5. :mod:`.driver`: **stopping** tests, and the rounds that tie the phases together
   (:func:`torch_lbfgsb`); :mod:`.state` holds the per-problem state, the status codes and
   the result type.

At most ``batch`` problems are held at once; when one finishes, the next waiting problem
takes its row. The linear algebra is float64 whatever the dtype the objective computes in.

**Memories.** ``keep_memory=True`` returns every problem's final limited memory (a
:class:`.state.Memory`, pairs oldest first) and ``initial_memory`` starts every problem with
one: a continuation over neighbouring problems, such as a sweep over C of f_C = Δ + C‖x − x₀‖²,
where a pair (s, y) of f_C is exactly the pair (s, y + 2(C' − C)s) of f_C'. Loaded pairs that
fail the curvature test are dropped; SᵀY, SᵀS and θ are rebuilt per problem. Tested: a solved
problem restarted with its own memory stops within two evaluations, a shifted memory reaches
the cold start's optimum with fewer evaluations, and problems started with memories stay
batch independent.

**Batch independence.** On CPU a problem's iterates do not depend on the other problems, bit
for bit: solved alone, with others, or through fewer slots than problems, it ends with the
same x, f, nit, nfev and status (given an objective whose rows do not depend on each other
either). Acting row by row is not enough for that: a batched BLAS/LAPACK call can round one
problem's matrix differently with the batch size or with the matrix's address, i.e. with
its row in the batch (measured with MKL: a batched matrix–vector product is a gemv at batch
size 1; potri, getrf/getrs and products with a transposed operand change with the 64-byte
alignment of each matrix; this made runs drift apart after ~10 iterations, to 0.4 at 200).
Hence matrix–vector products are elementwise products summed over the last axis (torch's
CPU sum adds a row in an order set by its length alone); the small matrices of the compact
representation, the memory W and the vectors it multiplies are padded to a multiple of 8
(:func:`.state.aligned`) so that each problem's block starts on a 64-byte boundary; and
every padded width (the gram update's changed variables, the Cauchy scan's breakpoint
blocks) depends on the problem's own data only. The two BLAS products with operands not
so aligned (the Cauchy scan's p_k·M, and u in the step uᵀW) have no transposed operand and
were measured to round the same at every alignment. Tested in tests/attacks/test_torch_lbfgsb.py
(``test_full_length_runs_are_exactly_batch_independent``: 200 iterations, n = 1024,
m = 25, five nonconvex, ill-conditioned problems with active bounds, alone vs. together vs.
two slots; and the latent attack on the shipped VAE) and tests/attacks/test_independence.py.
Not guaranteed: on CUDA (cuBLAS and the reduction kernels pick their algorithms by shape),
and on CPU with several threads for n ≥ 32768 (torch then splits a one-row sum across
threads).

Checked against SciPy (tests/attacks/test_torch_lbfgsb.py): on convex box-constrained
quadratics it follows SciPy's iterates (same iteration and evaluation counts, objectives
equal to ~1e-16); on Rosenbrock problems the same counts and optima.

Cost on CPU (n = 1024, m = 25, 256 problems, one thread): about 0.7 ms of CPU time per
problem and iteration on top of the objective, against ~0.7 ms for SciPy's compiled
L-BFGS-B on one problem; the gain comes from evaluating the objective in batches (the
shipped VAE's gradient costs ~0.25 ms per example in a batch of 256 against ~2.4 ms alone).
"""

from __future__ import annotations

from robust_vae.attacks.optim.torch_lbfgsb.driver import torch_lbfgsb
from robust_vae.attacks.optim.torch_lbfgsb.state import (
    BIG,
    CONVERGED_FACTR,
    CONVERGED_PGTOL,
    EPS,
    LINE_SEARCH_FAILED,
    MAX_FUN,
    MAX_ITER,
    STATUS_TEXT,
    Memory,
    TorchLBFGSBResult,
    TorchObjective,
    projected_gradient_norm,
)

__all__ = [
    "BIG", "CONVERGED_FACTR", "CONVERGED_PGTOL", "EPS", "LINE_SEARCH_FAILED", "MAX_FUN", "MAX_ITER",
    "Memory", "STATUS_TEXT", "TorchLBFGSBResult", "TorchObjective", "projected_gradient_norm", "torch_lbfgsb",
]
