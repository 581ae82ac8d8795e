"""Accumulation precision of the K-FAC sums: ``acc += alpha * x^T x`` in fp32, tf32 or bf16 inputs.

The accumulator is always float32 (so shards add and caches agree); the setting only changes the
precision of the *inputs* to the matrix product:

* ``fp32`` -- IEEE float32 inputs and products (TF32 explicitly off on CUDA). The default.
* ``tf32`` -- on CUDA the product runs with TF32 tensor cores (inputs rounded to a 10-bit
  mantissa, fp32 accumulation). On CPU there is no TF32 unit: the inputs are rounded to TF32
  (round to nearest even) and the product runs in fp32, which reproduces the GPU's numerics
  without its speed.
* ``bf16`` -- inputs cast to bfloat16, products accumulated in float32: on CUDA one
  ``addmm`` with ``out_dtype=float32`` (falls back to bf16-rounded fp32 inputs where the op is
  missing); on CPU the bf16-rounded inputs in an fp32 product (same numerics).

Recommended: ``fp32`` on CPU (nothing to gain); ``tf32`` on a GPU, pending a measurement of the
error/speed trade-off on real hardware (``bench/bench_precision.py`` shows the error on CPU).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "tf32", "bf16")

log = logging.getLogger(__name__)
_bf16_out_dtype_ok: dict[torch.device, bool] = {}


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` rounded to TF32 (10 explicit mantissa bits), round to nearest even; inf/nan kept."""
    if x.dtype != torch.float32:
        raise ValueError(f"expected a float32 tensor, got {x.dtype}")
    bits = x.contiguous().view(torch.int32)
    lsb = (bits >> 13) & 1
    rounded = ((bits + 0xFFF + lsb) >> 13) << 13
    finite = torch.isfinite(x)
    return torch.where(finite, rounded.view(torch.float32), x)


@contextlib.contextmanager
def _cuda_tf32(enabled: bool) -> Iterator[None]:
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def _bf16_addmm_cuda(acc: torch.Tensor, x: torch.Tensor, alpha: float) -> bool:
    """``acc += alpha * xb^T xb`` with bf16 inputs and an fp32 output on CUDA; False if unsupported."""
    dev = acc.device
    if _bf16_out_dtype_ok.get(dev) is False:
        return False
    xb = x.to(torch.bfloat16)
    try:
        torch.addmm(acc, xb.T, xb, out_dtype=torch.float32, alpha=alpha, out=acc)
    except (RuntimeError, TypeError) as exc:  # pragma: no cover - depends on the CUDA build
        _bf16_out_dtype_ok[dev] = False
        log.warning("bf16 addmm with a float32 output is unavailable on %s (%s); using rounded fp32 inputs", dev, exc)
        return False
    _bf16_out_dtype_ok[dev] = True
    return True


def accumulate_outer(acc: torch.Tensor, x: torch.Tensor, precision: Precision = "fp32", alpha: float = 1.0) -> None:
    """``acc += alpha * x^T x`` for rows ``x`` (N, d) into the float32 ``acc`` (d, d), in ``precision``."""
    if acc.dtype != torch.float32:
        raise ValueError(f"expected a float32 accumulator, got {acc.dtype}")
    if x.dim() != 2 or x.shape[1] != acc.shape[0]:
        raise ValueError(f"expected rows of shape (N, {acc.shape[0]}), got {tuple(x.shape)}")
    x = x.to(device=acc.device, dtype=torch.float32)
    cuda = acc.device.type == "cuda"
    if precision == "fp32":
        if cuda:
            with _cuda_tf32(False):
                acc.addmm_(x.T, x, alpha=alpha)
        else:
            acc.addmm_(x.T, x, alpha=alpha)
    elif precision == "tf32":
        if cuda:
            with _cuda_tf32(True):
                acc.addmm_(x.T, x, alpha=alpha)
        else:
            xr = round_to_tf32(x)
            acc.addmm_(xr.T, xr, alpha=alpha)
    elif precision == "bf16":
        if cuda and _bf16_addmm_cuda(acc, x, alpha):
            return
        xr = x.to(torch.bfloat16).float()
        if cuda:
            with _cuda_tf32(False):
                acc.addmm_(xr.T, xr, alpha=alpha)
        else:
            acc.addmm_(xr.T, xr, alpha=alpha)
    else:
        raise ValueError(f"expected precision one of {list(PRECISIONS)}, got {precision!r}")
