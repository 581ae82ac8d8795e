"""K-FAC factors and EK-FAC corrections of an image classifier (ViT) against a per-image oracle.

The oracle (``image_rows`` of ``tests/per_position_oracle.py``) runs the model on one image at a
time with plain autograd: the loss is that image's ``-log p(y | image)`` with ``y`` the sampled
label (``counter_uniforms(seed, image index, 0, s)`` through the inverse CDF of that image's
softmax) or the given label (empirical Fisher), and every token row (patches and [CLS]) of a
target's input and output gradient enters ``A = Σ a aᵀ``,
``G = (1/S) Σ_s g gᵀ`` and ``s_ij = (1/S) Σ_s (U_Gᵀ g)_i² (U_Aᵀ a)_j²``, summed in float64.
``collect_factors`` / ``collect_corrections`` must match it for every batch size.
"""

from __future__ import annotations

import pytest
import torch

from tests.per_position_oracle import image_rows
from tests.vision_fixtures import tiny_vit
from workers.curvature.eigen import Eigen
from workers.curvature.ekfac import collect_corrections
from workers.curvature.factors import Fisher, KFACFactors, collect_factors
from workers.curvature.targets import EditTarget, resolve_targets
from workers.vision.images import ImageSet, image_batches

TARGETS = ["vit.layers.0.mlp.fc1", "vit.layers.1.attention.q_proj", "vit.layers.1.mlp.fc2"]
N_IMAGES = 12
TOKENS = 5  # 4 patches + [CLS] of the 8x8 tiny ViT
SEED = 7


def _images() -> ImageSet:
    gen = torch.Generator().manual_seed(3)
    return ImageSet(torch.randn(N_IMAGES, 3, 8, 8, generator=gen), torch.randint(0, 3, (N_IMAGES,), generator=gen), "t")


def _targets(model: torch.nn.Module) -> list[EditTarget]:
    targets = resolve_targets(model, modules=TARGETS)
    assert [t.name for t in targets] == TARGETS
    return targets


def _per_image_rows(
    model: torch.nn.Module, images: ImageSet, fisher: str, samples: int, seed: int, index_shift: int = 0
) -> list[tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """Per image: the token input rows of each target and, per sample, its token output-gradient rows."""
    return image_rows(
        model, _targets(model), images.pixel_values, images.labels, fisher, seed, samples, index_shift=index_shift
    )


def _oracle_factors(rows: list, samples: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for n in TARGETS:
        a_sum = sum(a[n].T @ a[n] for a, _ in rows)
        g_sum = sum(sum(g[n].T @ g[n] for g in gs) / samples for _, gs in rows)
        out[n] = (a_sum, g_sum)
    return out


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


def _check_factors(got: dict[str, KFACFactors], want: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for n in TARGETS:
        assert got[n].count == N_IMAGES * TOKENS
        assert _rel(got[n].A_sum, want[n][0]) <= 1e-5, n
        assert _rel(got[n].G_sum, want[n][1]) <= 1e-5, n


@pytest.mark.parametrize(("fisher", "samples"), [("sampled", 1), ("sampled", 3), ("empirical", 1)])
def test_image_factors_equal_the_per_image_oracle(fisher: Fisher, samples: int) -> None:
    model = tiny_vit(seed=1)
    images = _images()
    targets = _targets(model)
    want = _oracle_factors(_per_image_rows(model, images, fisher, samples, SEED), samples)
    by_batch = {}
    for batch_size in (1, 5, N_IMAGES):
        got = collect_factors(model, image_batches(images, batch_size), targets, fisher, seed=SEED, samples=samples)
        _check_factors(got, want)
        by_batch[batch_size] = got
    for n in TARGETS:  # the sampled labels do not depend on the batching
        for batch_size in (1, 5):
            torch.testing.assert_close(by_batch[batch_size][n].G_sum, by_batch[N_IMAGES][n].G_sum, rtol=1e-5, atol=1e-7)
    # The comparison can fail: other labels (other image indices, or the wrong labels) give other G.
    if fisher == "sampled":
        shifted = _oracle_factors(_per_image_rows(model, images, fisher, samples, SEED, index_shift=1), samples)
    else:
        wrong = ImageSet(images.pixel_values, (images.labels + 1) % 3, "wrong")
        shifted = _oracle_factors(_per_image_rows(model, wrong, fisher, samples, SEED), samples)
    assert max(_rel(by_batch[5][n].G_sum, shifted[n][1]) for n in TARGETS) > 1e-2


def test_sampled_labels_follow_the_image_index_not_the_batch() -> None:
    """Feeding images 4.. as a stream starting at first_sequence=4 equals the tail of the whole set's oracle."""
    model = tiny_vit(seed=2)
    images = _images()
    tail = ImageSet(images.pixel_values[4:], images.labels[4:], "tail")
    got = collect_factors(model, image_batches(tail, 3), _targets(model), "sampled", seed=SEED, first_sequence=4)
    rows = _per_image_rows(model, images, "sampled", 1, SEED)[4:]
    want = _oracle_factors(rows, 1)
    for n in TARGETS:
        assert got[n].count == len(tail) * TOKENS
        assert _rel(got[n].G_sum, want[n][1]) <= 1e-5


def _random_basis(n: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q


@pytest.mark.parametrize(("fisher", "samples"), [("sampled", 2), ("empirical", 1)])
def test_image_ekfac_corrections_equal_the_per_image_oracle(fisher: Fisher, samples: int) -> None:
    model = tiny_vit(seed=3)
    images = _images()
    targets = _targets(model)
    gen = torch.Generator().manual_seed(11)
    eigens = {}
    for t in targets:
        u_g, u_a = _random_basis(t.out_features, gen), _random_basis(t.in_features, gen)
        eigens[t.name] = (
            Eigen(torch.ones(t.out_features, dtype=torch.float64), u_g),
            Eigen(torch.ones(t.in_features, dtype=torch.float64), u_a),
        )
    rows = _per_image_rows(model, images, fisher, samples, SEED)
    got = collect_corrections(model, image_batches(images, 5), targets, eigens, fisher, seed=SEED, samples=samples)
    for n in TARGETS:
        u_g, u_a = eigens[n][0].vectors, eigens[n][1].vectors
        want = sum(sum((g[n] @ u_g).square().T @ (a[n] @ u_a).square() for g in gs) / samples for a, gs in rows)
        assert isinstance(want, torch.Tensor)
        assert got[n].count == N_IMAGES * TOKENS
        assert _rel(got[n].S_sum, want) <= 1e-5, n


@pytest.mark.parametrize("samples", [1, 3])
def test_image_sums_are_bitwise_equal_at_any_batch_size(samples: int) -> None:
    """The fixed summation tree (units of 8 images, segments) and the per-image classifier head make
    the image sums independent of batching: batch 8, 3, 4 and 6 give identical bits (without the
    per-image head, batch 3 differs in G). Caveat measured here: a batch of 2 of these 5-token images
    (10 rows per product) takes another BLAS kernel and differs in the last bits."""
    model = tiny_vit()
    images = _images()
    targets = _targets(model)
    runs = [
        collect_factors(model, image_batches(images, bs), targets, samples=samples, stream_rows=len(images))
        for bs in (8, 3, 4, 6)
    ]
    for name in runs[0]:
        for other in runs[1:]:
            assert torch.equal(runs[0][name].A_sum, other[name].A_sum)
            assert torch.equal(runs[0][name].G_sum, other[name].G_sum)
