"""collect_factors against an explicit per-position autograd oracle on tiny models."""

from __future__ import annotations

import pytest
import torch

from tests.per_position_oracle import lm_rows
from tests.tiny_models import build_model
from workers.curvature.factors import KFACFactors, collect_factors, merge_factors, valid_positions
from workers.curvature.labels import counter_uniforms, inverse_cdf
from workers.curvature.targets import EditTarget, resolve_targets
from workers.pipeline.reporting import JobCancelled

V = 48


def make_batches(seed: int = 0, n: int = 6, T: int = 10, bs: int = 3, pad: bool = True) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (n, T), generator=gen)
    mask = torch.ones(n, T, dtype=torch.long)
    if pad:  # right padding of various lengths, one row shorter than 2 tokens
        for row, keep in enumerate([T, 7, 4, T, 1, 9][:n]):
            mask[row, keep:] = 0
            ids[row, keep:] = 1
    return [{"input_ids": ids[i : i + bs], "attention_mask": mask[i : i + bs]} for i in range(0, n, bs)]


def oracle(
    model, batches, targets: list[EditTarget], fisher: str, seed: int = 0, samples: int = 1
) -> dict[str, KFACFactors]:
    """A and G summed position by position (float64) from the per-position autograd oracle."""
    A = {t.name: torch.zeros(t.in_features, t.in_features, dtype=torch.float64) for t in targets}
    G = {t.name: torch.zeros(t.out_features, t.out_features, dtype=torch.float64) for t in targets}
    count = 0
    for a, gs in lm_rows(model, batches, targets, fisher, seed=seed, samples=samples):
        for t in targets:
            for a_t in a[t.name]:
                A[t.name] += torch.outer(a_t, a_t)
            for g in gs:
                for g_t in g[t.name]:
                    G[t.name] += torch.outer(g_t, g_t) / samples
        count += len(a[targets[0].name])
    return {t.name: KFACFactors(A[t.name].float(), G[t.name].float(), count) for t in targets}


def assert_factors_close(got: dict[str, KFACFactors], want: dict[str, KFACFactors]) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].count == want[name].count
        for attr in ("A_sum", "G_sum"):
            g, w = getattr(got[name], attr), getattr(want[name], attr)
            assert g.dtype == torch.float32
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * float(w.abs().max()))


@pytest.mark.parametrize("fisher", ["sampled", "empirical"])
@pytest.mark.parametrize(
    ("family", "layers", "roles"),
    [("llama", [1, 2], ["gate", "up", "down"]), ("gpt2", [-1], ["up", "down"]), ("gpt_neox", [0, 2], ["up"])],
)
def test_matches_per_position_oracle(family: str, layers: list[int], roles: list[str], fisher: str) -> None:
    model = build_model(family, vocab_size=V, seed=3, layers=3)
    targets = resolve_targets(model, layers=layers, projections=roles)
    batches = make_batches()
    got = collect_factors(model, batches, targets, fisher=fisher, seed=11)
    want = oracle(model, batches, targets, fisher, seed=11)
    assert_factors_close(got, want)


def test_gate_and_up_share_one_A_tensor() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["gate", "up", "down"])
    f = collect_factors(model, make_batches(), targets)
    gate, up, down = (f[t.name] for t in targets)
    assert gate.A_sum is up.A_sum and down.A_sum is not gate.A_sum


def test_label_sampler_draws_from_the_softmax() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.2, 0.3], [0.0, 0.0, 1.0, 0.0]]))
    n = 20_000
    rows = logits.repeat(n, 1)
    u = counter_uniforms(5, torch.arange(2 * n), torch.zeros(2 * n, dtype=torch.long))
    labels = inverse_cdf(rows, u).view(n, 2)
    freq0 = torch.bincount(labels[:, 0], minlength=4).double() / n
    torch.testing.assert_close(freq0, torch.tensor([0.5, 0.0, 0.2, 0.3], dtype=torch.float64), atol=0.015, rtol=0)
    assert bool((labels[:, 1] == 2).all())  # zero-probability tokens are never drawn


def test_counter_uniforms_are_uniform_and_keyed_by_the_counter_only() -> None:
    seq = torch.arange(300).repeat_interleave(200)
    pos = torch.arange(200).repeat(300)
    u = counter_uniforms(7, seq, pos, samples=3)
    assert u.shape == (60_000, 3) and u.dtype == torch.float32
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    hist = torch.histc(u.flatten(), bins=10, min=0.0, max=1.0) / u.numel()
    assert float((hist - 0.1).abs().max()) < 0.005  # flat: 18k draws per bin
    assert abs(float(torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1])) < 0.02  # samples independent
    perm = torch.randperm(seq.numel(), generator=torch.Generator().manual_seed(0))[:500]
    assert torch.equal(counter_uniforms(7, seq[perm], pos[perm], samples=3), u[perm])  # order/subset free
    assert not torch.equal(counter_uniforms(8, seq, pos), u[:, :1])
    assert not torch.equal(counter_uniforms(7, seq + 1, pos), u[:, :1])


def test_sampled_labels_depend_on_seed_only() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[0], projections=["up"])
    name = targets[0].name
    a = collect_factors(model, make_batches(), targets, seed=1)[name].G_sum
    b = collect_factors(model, make_batches(), targets, seed=1)[name].G_sum
    c = collect_factors(model, make_batches(), targets, seed=2)[name].G_sum
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_padding_and_last_positions_are_excluded() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[0], projections=["up"])
    batches = make_batches()
    f = collect_factors(model, batches, targets, fisher="empirical")
    expected = sum(int((b["attention_mask"][:, :-1] * b["attention_mask"][:, 1:]).sum()) for b in batches)
    assert f[targets[0].name].count == expected == (9 + 6 + 3 + 9 + 0 + 8)


def test_backward_is_cut_below_the_earliest_target_and_no_weight_grads() -> None:
    model = build_model("llama", vocab_size=V, layers=4)
    targets = resolve_targets(model, layers=[2, 3], projections=["gate", "up"])
    needs_grad: dict[int, bool] = {}

    def record(i):
        def fn(mod, args, out):
            hidden = out[0] if isinstance(out, tuple) else out
            needs_grad[i] = bool(hidden.requires_grad)

        return fn

    handles = [layer.register_forward_hook(record(i)) for i, layer in enumerate(model.model.layers)]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    collect_factors(model, make_batches(), targets)
    for h in handles:
        h.remove()
    assert needs_grad == {0: False, 1: False, 2: True, 3: True}  # no graph (so no backward) below layer 2
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not model._forward_hooks and not model.model.layers[2].mlp.gate_proj._forward_hooks


def test_shards_merge_to_the_whole() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["gate", "up"])
    batches = make_batches(n=6)
    whole = collect_factors(model, batches, targets, fisher="empirical")
    parts = [collect_factors(model, [b], targets, fisher="empirical") for b in batches]
    merged = merge_factors(parts)
    assert_factors_close(merged, whole)
    assert merged[targets[0].name].A_sum is merged[targets[1].name].A_sum
    summed = parts[0][targets[0].name] + parts[1][targets[0].name]
    assert summed.count == whole[targets[0].name].count


def test_progress_and_cancellation() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["up"])
    batches = make_batches(pad=False)
    seen: list[tuple[int, int | None]] = []
    collect_factors(model, batches, targets, total_tokens=60, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(30, 60), (60, 60)]
    calls = iter([False, True])
    with pytest.raises(JobCancelled):
        collect_factors(model, batches, targets, should_cancel=lambda: next(calls))
    assert all(p.requires_grad for p in model.parameters())
    assert not targets[0].module(model)._forward_hooks


def test_low_precision_models_accumulate_in_float32() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["up"])
    batches = make_batches()
    ref = collect_factors(model, batches, targets, fisher="empirical")[targets[0].name]
    got = collect_factors(model.to(torch.bfloat16), batches, targets, fisher="empirical")[targets[0].name]
    assert got.A_sum.dtype == got.G_sum.dtype == torch.float32
    for a, b in ((got.A_sum, ref.A_sum), (got.G_sum, ref.G_sum)):
        assert float((a - b).norm() / b.norm()) < 0.05


def test_accumulators_live_beside_their_layer() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[0, 1], projections=["up"])
    f = collect_factors(model, make_batches(), targets)
    for t in targets:
        dev = t.module(model).weight.device
        assert f[t.name].A_sum.device == dev and f[t.name].G_sum.device == dev


def _split_devices() -> tuple[str, str] | None:
    if torch.cuda.is_available():
        return ("cuda:0", "cuda:1") if torch.cuda.device_count() >= 2 else ("cpu", "cuda:0")
    return None


@pytest.mark.skipif(
    _split_devices() is None,
    reason="spreading a model over two devices needs a CUDA device (CPU offers only one device to split over)",
)
def test_model_spread_over_two_devices() -> None:  # pragma: no cover - needs a GPU
    first, second = _split_devices()  # type: ignore[misc]
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[0, 1], projections=["gate", "up"])
    batches = make_batches()
    want = collect_factors(model, batches, targets, fisher="empirical")
    model.model.embed_tokens.to(first)
    model.model.rotary_emb.to(first)
    model.model.layers[0].to(first)
    model.model.layers[1].to(second)
    model.model.norm.to(second)
    model.lm_head.to(second)

    def move(mod, args, kwargs):
        dev = next(mod.parameters()).device
        args = tuple(a.to(dev) if torch.is_tensor(a) else a for a in args)
        kwargs = {
            k: (v.to(dev) if torch.is_tensor(v) else tuple(x.to(dev) for x in v) if isinstance(v, tuple) else v)
            for k, v in kwargs.items()
        }
        return args, kwargs

    for mod in (model.model.layers[1], model.model.norm, model.lm_head):
        mod.register_forward_pre_hook(move, with_kwargs=True)
    got = collect_factors(model, batches, targets, fisher="empirical")
    for t in targets:
        assert got[t.name].A_sum.device == t.module(model).weight.device
    assert {str(got[t.name].G_sum.device) for t in targets} == {first, second}
    assert_factors_close({k: v.to("cpu") for k, v in got.items()}, want)


def test_works_inside_inference_mode_and_rejects_unused_targets() -> None:
    model = build_model("llama", vocab_size=V, layers=2)
    targets = resolve_targets(model, layers=[1], projections=["up"])
    want = collect_factors(model, make_batches(), targets, fisher="empirical")
    with torch.inference_mode():  # batches made in there are inference tensors too
        got = collect_factors(model, make_batches(), targets, fisher="empirical")
    assert not got[targets[0].name].A_sum.is_inference()
    assert_factors_close(got, want)
    stray = torch.nn.Linear(4, 4)
    model.add_module("stray", stray)
    with pytest.raises(ValueError, match=r"none of the targets \['stray'\] ran"):
        collect_factors(model, make_batches(), resolve_targets(model, modules=["stray"]))


def _recording_labels(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    import workers.curvature.factors as factors_mod

    seen: list[torch.Tensor] = []

    def record(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        labels = inverse_cdf(logits, u)
        seen.append(labels.clone())
        return labels

    monkeypatch.setattr(factors_mod, "inverse_cdf", record)
    return seen


def _relative_error(got: dict[str, KFACFactors], want: dict[str, KFACFactors]) -> float:
    worst = 0.0
    for name in want:
        assert got[name].count == want[name].count
        for attr in ("A_sum", "G_sum"):
            g, w = getattr(got[name], attr).double(), getattr(want[name], attr).double()
            worst = max(worst, float((g - w).norm() / w.norm()))
    return worst


def test_sampled_labels_do_not_depend_on_batching_or_sharding(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model("llama", vocab_size=V, seed=4, layers=3)
    targets = resolve_targets(model, layers=[1], projections=["gate", "up", "down"])
    batches = make_batches(n=6, bs=6)
    ids, mask = batches[0]["input_ids"], batches[0]["attention_mask"]
    seen = _recording_labels(monkeypatch)
    single = collect_factors(model, batches, targets, seed=9, samples=2)
    single_labels = torch.cat(seen)
    runs = {}
    for bs in (1, 4):
        seen.clear()
        split = [{"input_ids": ids[i : i + bs], "attention_mask": mask[i : i + bs]} for i in range(0, 6, bs)]
        runs[f"batch_size={bs}"] = collect_factors(model, split, targets, seed=9, samples=2)
        assert torch.equal(torch.cat(seen), single_labels), bs
    seen.clear()
    shards = [
        collect_factors(
            model, [{"input_ids": ids[a:b], "attention_mask": mask[a:b]}], targets, seed=9, samples=2, first_sequence=a
        )
        for a, b in ((0, 2), (2, 6))
    ]
    assert torch.equal(torch.cat(seen), single_labels)
    runs["2 shards"] = merge_factors(shards)
    for label, got in runs.items():
        assert _relative_error(got, single) <= 1e-6, label
    seen.clear()
    collect_factors(model, [{"input_ids": ids[2:6], "attention_mask": mask[2:6]}], targets, seed=9, samples=2)
    assert not torch.equal(torch.cat(seen), single_labels[-len(torch.cat(seen)) :])  # the row index matters


@pytest.mark.parametrize("fisher", ["sampled", "empirical"])
@pytest.mark.parametrize(("family", "layers"), [("llama", [1, 2]), ("gpt2", [0, 2]), ("gpt_neox", [1]), ("olmo2", [2])])
def test_chunked_logits_equal_full_logits(
    family: str, layers: list[int], fisher: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.curvature.factors as factors_mod

    model = build_model(family, vocab_size=V, seed=5, layers=3)
    targets = resolve_targets(model, layers=layers, projections=["up", "down"])
    batches = make_batches()
    split = factors_mod.split_body_and_head(model)
    assert split is not None  # every supported family splits into body + head
    ids, mask = batches[0]["input_ids"], batches[0]["attention_mask"]
    torch.testing.assert_close(
        split.head(split.body(input_ids=ids, attention_mask=mask).last_hidden_state),
        model(input_ids=ids, attention_mask=mask).logits,
        rtol=0,
        atol=0,
    )
    chunked = collect_factors(model, batches, targets, fisher=fisher, seed=2, logits_chunk=4)
    with monkeypatch.context() as m:
        m.setattr(factors_mod, "split_body_and_head", lambda model: None)  # logits from the full forward
        full = collect_factors(model, batches, targets, fisher=fisher, seed=2, logits_chunk=10**9)
    assert _relative_error(chunked, full) <= 1e-6
    assert_factors_close(chunked, oracle(model, batches, targets, fisher, seed=2))


def test_samples_average_the_g_contributions_of_independent_labels() -> None:
    model = build_model("llama", vocab_size=V, seed=6, layers=3)
    targets = resolve_targets(model, layers=[1, 2], projections=["gate", "down"])
    batches = make_batches()
    got = collect_factors(model, batches, targets, seed=3, samples=4, logits_chunk=5)
    assert_factors_close(got, oracle(model, batches, targets, "sampled", seed=3, samples=4))
    one = collect_factors(model, batches, targets, seed=3, samples=1)
    name = targets[0].name
    assert torch.equal(got[name].A_sum, one[name].A_sum) and not torch.allclose(got[name].G_sum, one[name].G_sum)
    with pytest.raises(ValueError, match="samples=2 needs fisher='sampled'"):
        collect_factors(model, batches, targets, fisher="empirical", samples=2)


@pytest.mark.parametrize("group", [1, 3])
def test_sample_groups_and_per_sample_backward_agree(group: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.curvature.factors as factors_mod

    model = build_model("gpt_neox", vocab_size=V, seed=7, layers=3)
    targets = resolve_targets(model, layers=[0, 2], projections=["up"])
    batches = make_batches()
    together = collect_factors(model, batches, targets, seed=4, samples=4)  # one vmapped backward of 4
    monkeypatch.setattr(factors_mod, "SAMPLE_GROUP", group)  # 1: a backward per sample; 3: groups of 3 + 1
    split = collect_factors(model, batches, targets, seed=4, samples=4)
    assert _relative_error(split, together) <= 1e-6


def _stream(n: int, T: int = 10, seed: int = 0, padded: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rows, every one right-padded (row 4 of every 9 has no valid position): every batch takes
    the attention's masked path (a batch without padding takes another kernel, see factors.py)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (n, T), generator=gen)
    mask = torch.ones(n, T, dtype=torch.long)
    for row in range(n if padded else 0):  # unpadded: packed calibration rows
        keep = [T - 1, 7, 4, T - 2, 1, 9, T - 1, 2, 6][row % 9]
        mask[row, keep:] = 0
        ids[row, keep:] = 1
    return ids, mask


def _batches(ids: torch.Tensor, mask: torch.Tensor, bs: int, start: int = 0, stop: int | None = None) -> list[dict]:
    stop = ids.shape[0] if stop is None else stop
    return [
        {"input_ids": ids[i : min(i + bs, stop)], "attention_mask": mask[i : min(i + bs, stop)]}
        for i in range(start, stop, bs)
    ]


def _sharded(
    model, ids, mask, targets, shards: int, bs: int, **kw
) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    """Shards collected out of order (last first), their segments reduced in segment order."""
    from contract.summation import shard_span
    from workers.curvature.factors import collect_segment_factors

    n = ids.shape[0]
    segments: dict[int, dict[str, tuple[torch.Tensor, torch.Tensor, int]]] = {}

    def keep(segment: int, factors: dict[str, KFACFactors]) -> None:
        assert segment not in segments
        segments[segment] = {k: (f.A_sum.clone(), f.G_sum.clone(), f.count) for k, f in factors.items()}

    for shard in reversed(range(shards)):
        start, stop = shard_span(n, shards, shard)
        batches = _batches(ids, mask, bs, start, stop)
        collect_segment_factors(model, batches, targets, stream_rows=n, first_sequence=start, on_segment=keep, **kw)
    total: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
    for segment in sorted(segments):
        for name, (a, g, count) in segments[segment].items():
            if name in total:
                ta, tg, tc = total[name]
                total[name] = (ta + a, tg + g, tc + count)
            else:
                total[name] = (a, g, count)
    return total


@pytest.mark.parametrize(("samples", "padded"), [(1, True), (3, True), (1, False)])
@pytest.mark.parametrize(("family", "layers"), [("llama", [1]), ("gpt2", [1])])
def test_sums_are_exact_at_any_batch_size_and_sharding(
    family: str, layers: list[int], samples: int, padded: bool
) -> None:
    from contract.summation import ROWS_PER_UNIT, SUM_SEGMENTS

    model = build_model(family, vocab_size=V, seed=6, layers=3)
    targets = resolve_targets(model, layers=layers, projections=["up", "down"])
    n = ROWS_PER_UNIT * (SUM_SEGMENTS + 1) - 3  # 9 units (the last one short): every segment non-empty
    ids, mask = _stream(n, padded=padded)
    kw = {"fisher": "sampled", "seed": 11, "samples": samples}
    want = collect_factors(model, _batches(ids, mask, 8), targets, stream_rows=n, **kw)
    runs = {
        "batch 3": {
            k: (f.A_sum, f.G_sum, f.count)
            for k, f in collect_factors(model, _batches(ids, mask, 3), targets, stream_rows=n, **kw).items()
        },
        "4 shards, batch 5": _sharded(model, ids, mask, targets, 4, 5, **kw),
        "2 shards, batch 8": _sharded(model, ids, mask, targets, 2, 8, **kw),
    }
    if not padded:  # lone rows (run as two rows; see factors.py)
        got1 = collect_factors(model, _batches(ids, mask, 1), targets, stream_rows=n, **kw)
        runs["batch 1"] = {k: (f.A_sum, f.G_sum, f.count) for k, f in got1.items()}
    for label, got in runs.items():
        for t in targets:
            a, g, count = got[t.name]
            assert count == want[t.name].count, label
            assert torch.equal(a, want[t.name].A_sum), (label, t.name, "A")
            assert torch.equal(g, want[t.name].G_sum), (label, t.name, "G")
    # and the sums are right: the per-position autograd oracle (float64) agrees to rounding
    ref = oracle(model, _batches(ids, mask, 8), targets, "sampled", seed=11, samples=samples)
    assert_factors_close(want, ref)


def test_the_order_matters_so_the_exactness_test_can_fail() -> None:
    """Per-batch float32 products (the old rule) over the same rows differ in the last bits
    between batch sizes 8 and 3 -- so the equalities above are not trivially true."""
    model = build_model("llama", vocab_size=V, seed=6, layers=3)
    target = resolve_targets(model, layers=[1], projections=["down"])[0]
    ids, mask = _stream(69)
    seen: list[torch.Tensor] = []
    handle = target.module(model).register_forward_hook(lambda m, a, o: seen.append(a[0].detach()))

    def per_batch(bs: int) -> torch.Tensor:
        seen.clear()
        acc = torch.zeros(target.in_features, target.in_features)
        with torch.no_grad():
            for b in _batches(ids, mask, bs):
                model(**b)
                rows = seen[-1][valid_positions(b["attention_mask"])].float()
                acc.addmm_(rows.T, rows)
        return acc

    eight, three = per_batch(8), per_batch(3)
    handle.remove()
    torch.testing.assert_close(eight, three)
    assert not torch.equal(eight, three)
