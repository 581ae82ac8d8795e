"""The per-position autograd oracle the curvature tests compare against (K-FAC factors, EK-FAC corrections).

For every counted position ``t`` of a target layer it gives the layer input ``a_t`` and the output
gradient ``g_t = ∂L/∂out_t`` of the loss ``L = Σ -log p(y | ·)`` over that unit's label positions,
computed with plain ``torch.autograd`` and returned in float64 -- independently of
``workers.curvature`` (only its counter ``counter_uniforms`` keys the sampled labels). Labels are
the given ones (empirical Fisher) or, per sample ``s``, drawn by the documented sampler: ``u`` from
``counter_uniforms(seed, row of the stream, position, s)`` and ``y = #{k : cdf_k <= u · cdf_last}``
on that position's softmax, written out here rather than calling ``inverse_cdf``.

Two front-ends share one core: ``lm_rows`` (causal LM batches: the positions with a next token,
the loss the sum over the batch, which is the sum of each sequence's own loss since sequences do
not see each other) and ``image_rows`` (an image classifier, one image at a time: one label keyed
by (image index, 0), every token row counted). Each unit yields ``(a, [g per sample])`` with ``a``
and ``g`` maps from target name to ``(positions, features)`` float64 tensors.

How the oracle is itself checked: on every forward, and every sample, the per-position gradients
summed over *all* positions of a target, ``Σ_t g_t a_tᵀ``, must equal autograd's own weight
gradient of the same loss (``rtol=1e-4``, ``atol=1e-6``); a wrong capture, a wrong position or a
gradient of the wrong loss fails it. The sampler written here is held to ``inverse_cdf`` by the
factor tests themselves: a different label at any position changes ``G`` far beyond their tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from workers.curvature.labels import counter_uniforms
from workers.curvature.targets import EditTarget

Rows = tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]


def draw_labels(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The documented sampler, one row at a time: ``#{k : cdf_k <= u · cdf_last}`` on ``softmax(logits)``."""
    cdf = torch.cumsum(torch.softmax(logits.detach(), -1), -1)
    return torch.tensor([int((row <= x * row[-1]).sum()) for row, x in zip(cdf, u, strict=True)])


def one_forward(
    model: torch.nn.Module,
    targets: list[EditTarget],
    forward: Callable[[], torch.Tensor],
    counted: list[tuple[int, int]] | None,
    gold: torch.Tensor,
    keys: tuple[torch.Tensor, torch.Tensor],
    fisher: str,
    seed: int,
    samples: int,
) -> Rows:
    """One forward (``forward()`` returns the label positions' logits, ``(n, K)``), one loss per sample.

    ``counted`` are the (row, position) pairs whose ``a_t`` / ``g_t`` are returned (``None``: all of
    them, row-major); ``gold`` the given labels and ``keys`` the (stream row, position) counters of the
    ``n`` label positions."""
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(name: str):  # type: ignore[no-untyped-def]
        def fn(mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            captured[name] = (args[0], out)

        return fn

    handles = [t.module(model).register_forward_hook(capture(t.name)) for t in targets]
    try:
        lg = forward().float()
    finally:
        for h in handles:
            h.remove()
    if fisher == "sampled":
        u = counter_uniforms(seed, keys[0], keys[1], samples)
        labels = [draw_labels(lg, u[:, s]) for s in range(samples)]
    else:
        labels = [gold] * samples
    if counted is None:
        rows, positions = captured[targets[0].name][1].shape[:2]
        counted = [(b, p) for b in range(rows) for p in range(positions)]
    a = {t.name: torch.stack([captured[t.name][0][b, p].detach().double() for b, p in counted]) for t in targets}
    grads = []
    for s in range(samples):
        loss = F.cross_entropy(lg, labels[s], reduction="sum")
        wrt: list[torch.Tensor] = [captured[t.name][1] for t in targets]
        wrt += [t.module(model).weight for t in targets]  # type: ignore[misc]
        got = torch.autograd.grad(loss, wrt, retain_graph=True)
        g_all, w_grads = got[: len(targets)], got[len(targets) :]
        for t, g_out, w_grad in zip(targets, g_all, w_grads, strict=True):  # the self-check
            a_all = captured[t.name][0].detach().double().flatten(0, -2)
            explicit = g_out.double().flatten(0, -2).T @ a_all  # Σ over *all* positions of g_t a_tᵀ
            w_grad = w_grad.T if t.kind == "conv1d" else w_grad
            torch.testing.assert_close(explicit, w_grad.double(), rtol=1e-4, atol=1e-6)
        grads.append(
            {t.name: torch.stack([g[b, p].double() for b, p in counted]) for t, g in zip(targets, g_all, strict=True)}
        )
    return a, grads


def lm_rows(
    model: torch.nn.Module, batches: list[dict], targets: list[EditTarget], fisher: str, seed: int = 0, samples: int = 1
) -> list[Rows]:
    """Per batch with a valid position (``mask[t]`` and ``mask[t + 1]``): its ``(a, [g per sample])``."""
    result = []
    first_row = 0
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        B, T = ids.shape
        first_row += B
        valid = [(b, t) for b in range(B) for t in range(T - 1) if mask[b, t] and mask[b, t + 1]]
        if not valid:
            continue

        def forward(ids: torch.Tensor = ids, mask: torch.Tensor = mask, valid: list = valid) -> torch.Tensor:
            logits = model(input_ids=ids, attention_mask=mask).logits
            return torch.stack([logits[b, t] for b, t in valid])

        gold = torch.stack([ids[b, t + 1] for b, t in valid])
        keys = (torch.tensor([first_row - B + b for b, _ in valid]), torch.tensor([t for _, t in valid]))
        result.append(one_forward(model, targets, forward, valid, gold, keys, fisher, seed, samples))
    return result


def image_rows(
    model: torch.nn.Module,
    targets: list[EditTarget],
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    fisher: str,
    seed: int,
    samples: int,
    index_shift: int = 0,
) -> list[Rows]:
    """Per image ``i`` (run alone, its sampled label keyed by ``(i + index_shift, 0)``): ``(a, [g per sample])``
    over every token row."""
    result = []
    for i in range(pixel_values.shape[0]):

        def forward(image: torch.Tensor = pixel_values[i : i + 1]) -> torch.Tensor:
            return model(pixel_values=image).logits

        result.append(
            one_forward(
                model,
                targets,
                forward,
                None,
                labels[i : i + 1],
                (torch.tensor([i + index_shift]), torch.zeros(1, dtype=torch.long)),
                fisher,
                seed,
                samples,
            )
        )
    return result
