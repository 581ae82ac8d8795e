"""Accumulation precision: TF32 rounding against a brute-force bit oracle, bf16/tf32 products against
float64 products of the rounded inputs, and the setting threaded through collect_factors."""

from __future__ import annotations

import struct

import pytest
import torch

from tests.tiny_models import build_model
from workers.curvature.factors import collect_factors
from workers.curvature.precision import accumulate_outer, round_to_tf32
from workers.curvature.targets import resolve_targets


def _tf32_oracle(x: float) -> float:
    """Round a float32 to 10 explicit mantissa bits, nearest even, via its bit pattern."""
    (bits,) = struct.unpack("<I", struct.pack("<f", x))
    low = bits & 0x1FFF
    base = bits & ~0x1FFF & 0xFFFFFFFF
    if low > 0x1000 or (low == 0x1000 and (bits >> 13) & 1):
        base += 0x2000
    (out,) = struct.unpack("<f", struct.pack("<I", base & 0xFFFFFFFF))
    return out


def test_round_to_tf32_matches_the_bit_oracle() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, generator=gen) * torch.logspace(-20, 20, 2000)
    ties = torch.tensor([1.0 + 2**-11, 1.0 + 3 * 2**-11, -(1.0 + 2**-11), 0.0, float("inf"), float("-inf")])
    x = torch.cat([x, ties])
    got = round_to_tf32(x)
    want = torch.tensor([_tf32_oracle(float(v)) for v in x])
    assert torch.equal(got, want)
    assert float(round_to_tf32(torch.tensor([1.0 + 2**-11]))[0]) == 1.0  # tie to even (down)
    assert float(round_to_tf32(torch.tensor([1.0 + 3 * 2**-11]))[0]) == 1.0 + 2**-9  # tie to even (up)
    assert bool(torch.isnan(round_to_tf32(torch.tensor([float("nan")])))[0])


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_products_equal_float64_products_of_the_rounded_inputs(precision: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 24, generator=gen)
    acc = torch.zeros(24, 24)
    accumulate_outer(acc, x, precision, alpha=0.5)  # type: ignore[arg-type]
    rounded = {"fp32": x, "tf32": round_to_tf32(x), "bf16": x.bfloat16().float()}[precision].double()
    want = 0.5 * rounded.T @ rounded
    assert float((acc.double() - want).norm() / want.norm()) < 1e-6  # only fp32 summation error left
    exact = 0.5 * x.double().T @ x.double()
    err = float((acc.double() - exact).norm() / exact.norm())
    assert {"fp32": err < 1e-6, "tf32": 1e-6 < err < 2e-3, "bf16": 1e-4 < err < 2e-2}[precision]


def test_collect_factors_uses_the_precision_and_rejects_unknown_ones() -> None:
    model = build_model("llama", vocab_size=48, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["up"])
    batches = [{"input_ids": torch.randint(2, 48, (3, 10), generator=torch.Generator().manual_seed(0))}]
    ref = collect_factors(model, batches, targets, fisher="empirical")[targets[0].name]
    low = collect_factors(model, batches, targets, fisher="empirical", precision="bf16")[targets[0].name]
    assert low.A_sum.dtype == torch.float32 and not torch.equal(low.A_sum, ref.A_sum)
    assert float((low.A_sum - ref.A_sum).norm() / ref.A_sum.norm()) < 2e-2
    with pytest.raises(ValueError, match="expected precision one of"):
        collect_factors(model, batches, targets, precision="fp16")  # type: ignore[arg-type]
