"""Factor union (``calibration.sources``) through the in-process pipeline: the edit uses the
eigenbases of the weighted sum of the per-source factor means (checked against the library on
each corpus), each source is cached on its own, and a changed weight collects nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from contract.spec import EditJobSpec
from tests.test_pipeline_run import TEXTS, make_spec, roots, settings_for  # noqa: F401 - fixture
from workers.cache import open_factor_cache
from workers.curvature import collect_factors, eigendecompose, iter_batches, pack_texts, resolve_targets
from workers.curvature.selection import curvature_mask
from workers.pipeline.loading import load_model
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline

OTHER = [f"log {i}: the committee reviewed budget line {3 * i} and approved it unanimously" for i in range(50)]
EDIT = {"layers": [3], "projections": ["down"], "keep_mass": 0.6}


def union_spec(w1: float, w2: float, estimator: str = "kfac") -> EditJobSpec:
    sources = [{"texts": TEXTS, "weight": w1}, {"texts": OTHER, "weight": w2}]
    cal = {"sources": sources, "max_tokens": 400, "seq_len": 16, "batch_size": 8}
    return make_spec(calibration=cal, edit=EDIT, curvature={"fisher": "empirical", "estimator": estimator})


def edited_weight(result: dict, name: str) -> torch.Tensor:
    out = {}
    for f in Path(result["results"][0]["artifacts"]["dir"]).rglob("*.safetensors"):
        if f.name != "delta.safetensors":
            out.update(load_file(str(f)))
    return out[f"{name}.weight"].float()


def test_union_edits_with_the_weighted_factor_means_and_reuses_each_source(roots: Path) -> None:  # noqa: F811
    settings = settings_for(roots, factor_cache=str(roots / "union-cache"))
    cache = open_factor_cache(settings)
    rep = NullReporter()
    first = run_pipeline(union_spec(0.7, 0.3), settings=settings, job_id="u1", reporter=rep, cache=cache)
    collect_events = [d for _, _, d in rep.events if d and d.get("kind") == "collect"]
    assert [d["source"] for d in collect_events] == [0, 1]

    loaded = load_model(union_spec(0.7, 0.3).model, settings)
    model, tok = loaded.model, loaded.tokenizer
    (t,) = resolve_targets(model, layers=[3], projections=["down"])
    w0 = t.module(model).weight.detach().clone()

    def means(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        f = collect_factors(model, iter_batches(pack_texts(tok, texts, 16, 400), 8), [t], fisher="empirical")[t.name]
        return f.A_mean().double(), f.G_mean().double()

    (a1, g1), (a2, g2) = means(TEXTS), means(OTHER)
    positions = sum(  # valid positions of both packed sources (each row's last position has no target)
        int(ids.shape[0]) * (int(ids.shape[1]) - 1) for ids in (pack_texts(tok, x, 16, 400) for x in (TEXTS, OTHER))
    )
    assert first["tokens"] == positions

    def expected(w1: float, w2: float) -> torch.Tensor:
        tot = w1 + w2
        g_eig = eigendecompose(g1 * (w1 / tot) + g2 * (w2 / tot), 1)
        a_eig = eigendecompose(a1 * (w1 / tot) + a2 * (w2 / tot), 1)
        mask = curvature_mask(g_eig.values, a_eig.values, 0.6)
        return g_eig.vectors @ ((g_eig.vectors.T @ w0 @ a_eig.vectors) * mask) @ a_eig.vectors.T

    torch.testing.assert_close(edited_weight(first, t.name), expected(0.7, 0.3), rtol=1e-4, atol=1e-5)

    # another weight: no factor collection at all, only a new eigendecomposition
    rep2 = NullReporter()
    second = run_pipeline(union_spec(1.0, 3.0), settings=settings, job_id="u2", reporter=rep2, cache=cache)
    stages = dict(rep2.stages)
    assert stages["collect_factors"] is True and stages["eigendecompose"] is False
    assert second["cache"]["collect_factors"]["misses"] == 0
    assert not [d for _, _, d in rep2.events if d and d.get("kind") == "collect"]
    torch.testing.assert_close(edited_weight(second, t.name), expected(1.0, 3.0), rtol=1e-4, atol=1e-5)

    # a single-corpus job on one of the sources reads that source's cached sums
    rep3 = NullReporter()
    single = make_spec(
        calibration={"texts": OTHER, "max_tokens": 400, "seq_len": 16, "batch_size": 8},
        edit=EDIT,
        curvature={"fisher": "empirical"},
    )
    run_pipeline(single, settings=settings, job_id="u3", reporter=rep3, cache=cache)
    assert dict(rep3.stages)["collect_factors"] is True

    # EK-FAC on the union: corrections per source in the union's eigenbases, cached
    rep4 = NullReporter()
    ek = union_spec(0.7, 0.3, estimator="ekfac")
    fourth = run_pipeline(ek, settings=settings, job_id="u4", reporter=rep4, cache=cache)
    assert fourth["cache"]["ekfac"] == {"hits": 0, "misses": 2}
    assert dict(rep4.stages)["collect_factors"] is True and dict(rep4.stages)["eigendecompose"] is True


@pytest.mark.parametrize(
    ("weights", "field", "needle"),
    [
        ([0.5, -0.1], ("calibration", "sources", 1, "weight"), "greater than or equal to 0"),
        ([0.0, 0.0], ("calibration", "sources"), "all zero"),
        ([1.0, float("nan")], ("calibration", "sources", 1, "weight"), "finite"),
        ([float("inf"), 1.0], ("calibration", "sources", 0, "weight"), "finite"),
    ],
)
def test_bad_weights_are_refused_naming_the_field(weights: list[float], field: tuple, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        union_spec(*weights)
    (e,) = err.value.errors()
    assert e["loc"] == field and needle in e["msg"]
