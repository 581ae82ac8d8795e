"""``curvature.estimator = "ekfac"`` through the in-process pipeline: the edited weights are the
projection onto the pairs ``score_mask`` picks from an independently collected correction, the
corrections are cached under their own keys and reported in the manifest, and the spec refuses
EK-FAC with a goal-directed objective."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from contract.spec import EditJobSpec
from tests.test_pipeline_run import TEXTS, make_spec, roots, settings_for  # noqa: F401 - fixture
from workers.cache import open_factor_cache
from workers.curvature import collect_factors, eigenbases, iter_batches, pack_texts, resolve_targets
from workers.curvature.ekfac import collect_corrections
from workers.curvature.selection import score_mask
from workers.pipeline.loading import load_model
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline


def test_ekfac_job_edits_by_the_corrections_and_caches_them(roots: Path) -> None:  # noqa: F811
    settings = settings_for(roots, factor_cache=str(roots / "ekfac-cache"))
    cache = open_factor_cache(settings)
    spec = make_spec(
        curvature={"estimator": "ekfac", "fisher": "empirical"},
        edit={"layers": [3], "projections": ["down"], "keep_mass": 0.6},
        output={"save_model": True},
    )
    rep = NullReporter()
    first = run_pipeline(spec, settings=settings, job_id="ek1", reporter=rep, cache=cache)
    assert first["cache"]["ekfac"] == {"hits": 0, "misses": 1}
    assert any(d and d.get("kind") == "ekfac" and d["cached"] is False for _, _, d in rep.events)
    out_dir = Path(first["results"][0]["artifacts"]["dir"])
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["spec"]["curvature"]["estimator"] == "ekfac"
    (s_key,) = [k for k in manifest["cache_keys"] if k.startswith("S:")]
    assert s_key == "S:model.layers.3.mlp.down_proj"

    # independent recomputation with the library on the original model
    loaded = load_model(spec.model, settings)
    model, tok = loaded.model, loaded.tokenizer
    targets = resolve_targets(model, layers=[3], projections=["down"])
    ids = pack_texts(tok, TEXTS, 16, 800)
    eigens = eigenbases(collect_factors(model, iter_batches(ids, 8), targets, fisher="empirical"))
    corr = collect_corrections(model, iter_batches(ids, 8), targets, eigens, fisher="empirical")
    t = targets[0]
    w0 = t.module(model).weight.detach().clone()
    g_eig, a_eig = eigens[t.name]
    mask = score_mask(corr[t.name].mean(), 0.6)
    want = g_eig.vectors @ ((g_eig.vectors.T @ w0 @ a_eig.vectors) * mask) @ a_eig.vectors.T
    edited = {}
    for f in out_dir.rglob("*.safetensors"):
        if f.name != "delta.safetensors":
            edited.update(load_file(str(f)))
    torch.testing.assert_close(edited[f"{t.name}.weight"].float(), want, rtol=1e-4, atol=1e-5)
    assert first["results"][0]["layers"][0]["kept_pairs"] == int(mask.sum())

    rep2 = NullReporter()
    spec2 = make_spec(
        curvature={"estimator": "ekfac", "fisher": "empirical"},
        edit={"layers": [3], "projections": ["down"], "keep_mass": 0.4},
    )
    second = run_pipeline(spec2, settings=settings, job_id="ek2", reporter=rep2, cache=cache)
    assert second["cache"]["ekfac"] == {"hits": 1, "misses": 0}
    assert dict(rep2.stages)["collect_factors"] is True
    assert any(d and d.get("kind") == "ekfac" and d["cached"] is True for _, _, d in rep2.events)
    kfac = run_pipeline(
        make_spec(curvature={"fisher": "empirical"}, edit={"layers": [3], "projections": ["down"], "keep_mass": 0.4}),
        settings=settings,
        job_id="ek3",
        reporter=NullReporter(),
        cache=cache,
    )
    assert "ekfac" not in kfac["cache"]
    assert kfac["results"][0]["layers"][0]["kept_pairs"] != second["results"][0]["layers"][0]["kept_pairs"]


def test_ekfac_with_an_objective_is_refused() -> None:
    raw = {
        "model": {"path": "tiny"},
        "calibration": {"texts": ["a b c"]},
        "curvature": {"estimator": "ekfac"},
        "objective": {
            "forget": {"path": "forget.jsonl", "max_strict_rate": 0.05},
            "retain": {"perplexity": {"path": "heldout.txt"}, "max_perplexity_increase": 0.1},
        },
    }
    with pytest.raises(ValidationError, match="objective needs curvature.estimator='kfac'"):
        EditJobSpec.model_validate(raw)
    with pytest.raises(ValidationError, match="estimator"):
        EditJobSpec.model_validate({**raw, "objective": None, "curvature": {"estimator": "eKfac"}})
