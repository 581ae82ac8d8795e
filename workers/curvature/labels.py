"""Sampled Fisher labels from a counter-based stream: the same label for the same token, always.

A sampled label (true Fisher) is drawn from ``softmax(logits_t)`` by inverse CDF with a uniform
``u`` that is a pure function of the counter ``(seed, sequence index, position, sample index)``:

* ``sequence index`` is the row of the packed calibration tensor (the whole corpus, not the
  batch or the shard), ``position`` the column of the predicting token, ``sample`` in
  ``[0, samples)``;
* ``u = hash(seed, sequence, position, sample) / 2**24`` with a 32-bit integer hash (four
  rounds of the ``lowbias32`` mixer, one per counter word), computed with int64 torch ops whose
  intermediate products never exceed 2**49 -- so CPU and CUDA give bit-identical ``u``;
* ``label = #{k : cdf_k <= u * cdf_last}`` on the float32 CDF of the row's softmax.

So a single run, any split into shards and any batch size draw identical labels (on CPU the
logits themselves are then identical too; on a GPU they agree to float tolerance, and a label
can only differ where ``u`` falls within rounding of a CDF step).
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_UNIFORM_BITS = 24


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for uint32 values held in int64, without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return ((x * lo) + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """The ``lowbias32`` integer finaliser on uint32 values held in int64."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniforms(seed: int, sequence: torch.Tensor, position: torch.Tensor, samples: int = 1) -> torch.Tensor:
    """Uniforms in [0, 1), float32, shape ``(N, samples)`` for N counters ``(sequence[i], position[i])``.

    ``sequence`` and ``position`` are integer tensors of shape (N,) on one device; the result is on
    that device and depends only on the counter values (not on N, order or device).
    """
    if sequence.shape != position.shape or sequence.dim() != 1:
        raise ValueError(
            f"expected sequence and position of one shape (N,), got {tuple(sequence.shape)} and {tuple(position.shape)}"
        )
    if samples < 1:
        raise ValueError(f"expected samples >= 1, got {samples}")
    if not 0 <= seed <= _M32:
        raise ValueError(f"expected a seed in [0, 2**32), got {seed}")
    dev = sequence.device
    seq = sequence.to(torch.int64) & _M32
    pos = position.to(torch.int64) & _M32
    h = _mix32(torch.full_like(seq, seed ^ 0x5EED5EED))
    h = _mix32(h ^ seq)
    h = _mix32(h ^ pos)
    smp = torch.arange(samples, dtype=torch.int64, device=dev)
    h = _mix32(h[:, None] ^ ((smp[None, :] * 0x9E3779B9) & _M32))
    return (h >> (32 - _UNIFORM_BITS)).to(torch.float32) / float(1 << _UNIFORM_BITS)


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Labels (N, S) from ``softmax(logits)`` (N, V) for uniforms ``u`` (N, S): ``#{k : cdf_k <= u * cdf_last}``."""
    if logits.dim() != 2 or u.dim() != 2 or u.shape[0] != logits.shape[0]:
        raise ValueError(f"expected logits (N, V) and u (N, S), got {tuple(logits.shape)} and {tuple(u.shape)}")
    with torch.no_grad():
        cdf = torch.cumsum(torch.softmax(logits.float(), dim=-1), dim=-1)
        idx = torch.searchsorted(cdf, u.to(cdf.device) * cdf[:, -1:], right=True)
        return idx.clamp_(max=cdf.shape[1] - 1)
