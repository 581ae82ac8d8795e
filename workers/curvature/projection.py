"""Projection of a weight onto the kept eigen-pairs: ``W' = U_G ((U_G^T W U_A) ⊙ M) U_A^T``.

``weight`` is a linear map of shape (out, in) (callers transpose GPT-2 ``Conv1D`` weights). The
products run in float32 (or float64 if the eigenvectors are float64) on the weight's device; the
result is returned in the weight's dtype. A mask with every pair kept returns the weight unchanged.

A ρ sweep calls ``rotate`` once per target (``C = U_G^T W U_A``, two products) and then
``unrotate`` once per ρ (the mask and two products); ``project`` is the two in a row, so a reused
``C`` gives bit-for-bit the weight ``project`` gives.
"""

from __future__ import annotations

import torch


def _check_bases(shape: tuple[int, int], eigvecs_out: torch.Tensor, eigvecs_in: torch.Tensor) -> None:
    out_f, in_f = shape
    if eigvecs_out.shape != (out_f, out_f):
        raise ValueError(f"expected eigvecs_out of shape ({out_f}, {out_f}), got {tuple(eigvecs_out.shape)}")
    if eigvecs_in.shape != (in_f, in_f):
        raise ValueError(f"expected eigvecs_in of shape ({in_f}, {in_f}), got {tuple(eigvecs_in.shape)}")


def _compute_dtype(eigvecs_out: torch.Tensor, eigvecs_in: torch.Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (eigvecs_out.dtype, eigvecs_in.dtype) else torch.float32


def rotate(weight: torch.Tensor, eigvecs_out: torch.Tensor, eigvecs_in: torch.Tensor) -> torch.Tensor:
    """``C = U_G^T W U_A`` (float32, or float64 with float64 bases) on the weight's device."""
    if weight.dim() != 2:
        raise ValueError(f"expected weight of shape (out, in), got {tuple(weight.shape)}")
    _check_bases((weight.shape[0], weight.shape[1]), eigvecs_out, eigvecs_in)
    dev, dtype = weight.device, _compute_dtype(eigvecs_out, eigvecs_in)
    u_g = eigvecs_out.to(device=dev, dtype=dtype)
    u_a = eigvecs_in.to(device=dev, dtype=dtype)
    return u_g.T @ weight.detach().to(dtype) @ u_a


def unrotate(
    rotated: torch.Tensor, eigvecs_out: torch.Tensor, eigvecs_in: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``U_G (C ⊙ mask) U_A^T`` in ``dtype``, for ``C`` from ``rotate``."""
    shape = (rotated.shape[0], rotated.shape[1])
    _check_bases(shape, eigvecs_out, eigvecs_in)
    if mask.shape != shape:
        raise ValueError(f"expected mask of shape {shape}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"expected a bool mask, got {mask.dtype}")
    dev = rotated.device
    u_g = eigvecs_out.to(device=dev, dtype=rotated.dtype)
    u_a = eigvecs_in.to(device=dev, dtype=rotated.dtype)
    c = torch.where(mask.to(dev), rotated, torch.zeros((), dtype=rotated.dtype, device=dev))
    return (u_g @ c @ u_a.T).to(dtype)


def project(
    weight: torch.Tensor, eigvecs_out: torch.Tensor, eigvecs_in: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``U_G ((U_G^T W U_A) ⊙ mask) U_A^T`` in the dtype of ``weight``."""
    if weight.dim() != 2:
        raise ValueError(f"expected weight of shape (out, in), got {tuple(weight.shape)}")
    out_f, in_f = weight.shape
    _check_bases((out_f, in_f), eigvecs_out, eigvecs_in)
    if mask.shape != (out_f, in_f):
        raise ValueError(f"expected mask of shape ({out_f}, {in_f}), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"expected a bool mask, got {mask.dtype}")
    if bool(mask.all()):
        return weight.detach().clone()
    return unrotate(rotate(weight, eigvecs_out, eigvecs_in), eigvecs_out, eigvecs_in, mask, weight.dtype)
