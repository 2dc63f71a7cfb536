"""Step 4: the limited memory, its update after a step and its compact representation.

(s, y) enters the memory unless sᵀy ≤ ``curvature_eps``·‖y‖²; θ = yᵀy / sᵀy. The memory is
a ring buffer per problem with insertion stamps, so problems with different numbers of
stored pairs share one tensor (unused pairs are zero and masked). It is stored as
(B, 2m, aligned(n)), zero beyond n; every iteration makes two passes over it: one product
with the new pair (which also yields Wᵀd for the next Cauchy search, here) and one W·v for
the subspace step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robust_vae.attacks.optim.torch_lbfgsb.state import State, aligned, pad_identity, steepest_descent


def middle_matrices(SY: torch.Tensor, SS: torch.Tensor, stamp: torch.Tensor,
                    theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K, M = K⁻¹, ok) of the compact representation B = θI − W M Wᵀ: K = [[−D, Lᵀ], [L, θSᵀS]].

    Unused memory pairs get −1 / +1 on the diagonal (their columns of W are zero). M comes
    from the Cholesky factor of T = θSᵀS + L D⁻¹ Lᵀ; ``ok`` is False where T is not positive
    definite (the caller then discards that memory, as SciPy does). The products and
    factorisations run on m×m blocks padded to ``aligned(m)`` (zeros, and the identity on T's
    padding), so that every problem's block starts on a 64-byte boundary: MKL rounds a small
    product with a transposed operand, and potri, with the address of each block, so with the
    problem's row in the batch.
    """
    m = SY.shape[1]
    pad = aligned(m) - m
    valid = stamp >= 0
    th = theta.view(-1, 1, 1)
    diag = torch.diagonal(SY, dim1=1, dim2=2)
    dvals = torch.where(valid, diag, torch.ones_like(diag))
    older = (stamp.unsqueeze(2) > stamp.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)
    lower = torch.where(older, SY, torch.zeros_like(SY))  # L[i, j] = s_iᵀ y_j, pair i newer than j
    sts = th * SS + torch.diag_embed((~valid).to(SY.dtype))
    dinv = 1.0 / dvals
    lower_p = F.pad(lower, (0, pad, 0, pad))
    dinv_p = F.pad(dinv, (0, pad), value=1.0)
    t_mat = pad_identity(sts) + torch.bmm(lower_p * dinv_p.unsqueeze(1), lower_p.transpose(1, 2))
    chol, info = torch.linalg.cholesky_ex(t_mat)
    ok = (info == 0) & (dvals > 0).all(1)
    eye = torch.eye(chol.shape[1], dtype=t_mat.dtype, device=t_mat.device)
    chol = torch.where(ok.view(-1, 1, 1), chol, eye)
    t_inv_p = torch.cholesky_inverse(chol)
    m12_p = torch.bmm(dinv_p.unsqueeze(2) * lower_p.transpose(1, 2), t_inv_p)   # D⁻¹ Lᵀ T⁻¹
    m11_p = torch.bmm(m12_p, lower_p) * dinv_p.unsqueeze(1)
    t_inv, m12 = t_inv_p[:, :m, :m], m12_p[:, :m, :m]
    m11 = torch.diag_embed(-dinv) + m11_p[:, :m, :m]                            # −D⁻¹ + D⁻¹LᵀT⁻¹LD⁻¹
    big_m = torch.cat([torch.cat([m11, m12], 2), torch.cat([m12.transpose(1, 2), t_inv], 2)], 1)
    k_mat = torch.cat([
        torch.cat([torch.diag_embed(-dvals), lower.transpose(1, 2)], 2),
        torch.cat([lower, sts], 2),
    ], 1)
    return k_mat, big_m, ok


def accept_step(st: State, mask: torch.Tensor, new_x: torch.Tensor, new_f: torch.Tensor,
                new_g: torch.Tensor, curvature_eps: float) -> None:
    """Move the rows in ``mask`` to their new iterate; (s, y) enters the memory unless
    sᵀy ≤ curvature_eps·‖y‖². One product of the memory with [y, s, Fy, Fs, d] updates SᵀY,
    SᵀS, the gram's new row and column, and gives [Y S]ᵀd for the next Cauchy search."""
    s = new_x - st.x
    y = new_g - st.g
    m2 = mask.unsqueeze(1)
    st.x = torch.where(m2, new_x, st.x)
    st.f = torch.where(mask, new_f, st.f)
    st.g = torch.where(m2, new_g, st.g)
    st.nit += mask
    sy = (s * y).sum(1)
    yy = (y * y).sum(1)
    keep = mask & (sy > curvature_eps * yy) & torch.isfinite(sy) & torch.isfinite(yy) & (yy > 0)
    rows = torch.nonzero(keep).squeeze(1)
    slot = st.count[rows] % st.m   # where each kept pair goes in its ring buffer
    if rows.numel():
        n = y.shape[1]
        st.W[rows, slot, :n] = y[rows]
        st.W[rows, st.m + slot, :n] = s[rows]
        st.stamp[rows, slot] = st.count[rows]
        st.count[rows] += 1
        st.theta[rows] = yy[rows] / sy[rows]
    moved = torch.nonzero(mask & (st.count > 0)).squeeze(1)
    if moved.numel() == 0:
        return
    products = _memory_products(st, moved, s, y)
    st.p0[moved] = products[moved, :, 4]
    if rows.numel() == 0:
        return
    _insert_products(st, rows, slot, products[rows])


def _memory_products(st: State, moved: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(slots, 2m, 5): the memory times [y, s, Fy, Fs, d] (F the last free set, d the steepest
    descent direction at the new x), computed on the rows ``moved`` (zero elsewhere)."""
    m = st.m
    _, _, d = steepest_descent(st.x, st.g, st.lower, st.upper)
    freef = st.free_prev.to(y.dtype)
    # (b, 5, aligned(n)), zero beyond n like W: every problem's block starts on a 64-byte
    # boundary (MKL rounds this product with the address of each block)
    vectors = torch.stack([y, s, y * freef, s * freef, d], 1)
    if st.W.shape[2] != y.shape[1]:
        vectors = F.pad(vectors, (0, st.W.shape[2] - y.shape[1]))
    if moved.numel() * 2 >= st.slots:
        products = torch.bmm(st.W, vectors.transpose(1, 2))      # (b, 2m, 5)
    else:
        products = torch.bmm(st.W[moved], vectors[moved].transpose(1, 2))
        full = products.new_zeros(st.slots, 2 * m, 5)
        full[moved] = products
        products = full
    return products


def _insert_products(st: State, rows: torch.Tensor, slot: torch.Tensor, products: torch.Tensor) -> None:
    """The new pair's row and column of SᵀY, SᵀS and the gram, on ``rows`` (its ``slot``)."""
    m = st.m
    y_s = products[:, :m, 1]   # y_iᵀ s_new
    s_y = products[:, m:, 0]   # s_iᵀ y_new
    s_s = products[:, m:, 1]
    st.SY[rows, :, slot] = s_y
    st.SY[rows, slot, :] = y_s
    st.SS[rows, :, slot] = s_s
    st.SS[rows, slot, :] = s_s
    # the gram's rows and columns of the new pair, on the current free set
    st.gram[rows, :, slot] = products[:, :, 2]
    st.gram[rows, slot, :] = products[:, :, 2]
    st.gram[rows, :, m + slot] = products[:, :, 3]
    st.gram[rows, m + slot, :] = products[:, :, 3]
