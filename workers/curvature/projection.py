"""Projection of a weight onto the kept eigen-pairs: ``W' = U_G ((U_G^T W U_A) ⊙ M) U_A^T``.

``weight`` is a linear map of shape (out, in) (callers transpose GPT-2 ``Conv1D`` weights). The
products run in float32 (or float64 if the eigenvectors are float64) on the weight's device; the
result is returned in the weight's dtype. A mask with every pair kept returns the weight unchanged.
"""

from __future__ import annotations

import torch


def project(
    weight: torch.Tensor, eigvecs_out: torch.Tensor, eigvecs_in: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``U_G ((U_G^T W U_A) ⊙ mask) U_A^T`` in the dtype of ``weight``."""
    if weight.dim() != 2:
        raise ValueError(f"expected weight of shape (out, in), got {tuple(weight.shape)}")
    out_f, in_f = weight.shape
    if eigvecs_out.shape != (out_f, out_f):
        raise ValueError(f"expected eigvecs_out of shape ({out_f}, {out_f}), got {tuple(eigvecs_out.shape)}")
    if eigvecs_in.shape != (in_f, in_f):
        raise ValueError(f"expected eigvecs_in of shape ({in_f}, {in_f}), got {tuple(eigvecs_in.shape)}")
    if mask.shape != (out_f, in_f):
        raise ValueError(f"expected mask of shape ({out_f}, {in_f}), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"expected a bool mask, got {mask.dtype}")
    if bool(mask.all()):
        return weight.detach().clone()
    dev = weight.device
    dtype = torch.float64 if torch.float64 in (eigvecs_out.dtype, eigvecs_in.dtype) else torch.float32
    u_g = eigvecs_out.to(device=dev, dtype=dtype)
    u_a = eigvecs_in.to(device=dev, dtype=dtype)
    c = u_g.T @ weight.detach().to(dtype) @ u_a
    c = c * mask.to(device=dev, dtype=dtype)
    return (u_g @ c @ u_a.T).to(weight.dtype)
