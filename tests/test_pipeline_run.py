"""The pipeline in-process (what ``curvedit edit`` runs): typed input errors before any tensor
work, data sources, the filesystem cache tier, overrides, and cancellation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.settings import Settings
from contract.spec import EditJobSpec, TextSource
from contract.stages import STAGES
from tests.tiny_models import save_tiny
from workers.cache import open_factor_cache
from workers.pipeline.errors import PipelineError
from workers.pipeline.reporting import JobCancelled, NullReporter
from workers.pipeline.run import run_pipeline
from workers.pipeline.sources import resolve_pairs, resolve_texts

TEXTS = [f"note {i}: alice sends bob a letter about the weather in paris, day {i}" for i in range(60)]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipe")
    save_tiny(root / "models" / "tiny", "llama")
    (root / "data").mkdir()
    return root


def settings_for(root: Path, **kw: object) -> Settings:
    return Settings(
        model_root=root / "models",
        data_root=root / "data",
        output_root=root / "out",
        dataset_dir=root / "datasets",
        device="cpu",
        **kw,
    )


def make_spec(**over: object) -> EditJobSpec:
    raw: dict = {
        "model": {"path": "tiny"},
        "calibration": {"texts": TEXTS, "max_tokens": 800, "seq_len": 16, "batch_size": 8},
        "edit": {"layers": [2, 3], "keep_mass": 0.7},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    return EditJobSpec.model_validate(raw)


def _code(spec: EditJobSpec, settings: Settings, job: str = "j") -> str:
    with pytest.raises(PipelineError) as err:
        run_pipeline(spec, settings=settings, job_id=job, reporter=NullReporter(), cache=None)
    return err.value.code


@pytest.mark.parametrize(
    ("over", "code", "needle"),
    [
        ({"model": {"path": "../outside"}}, "invalid_path", "model.path"),
        ({"model": {"path": "missing"}}, "model_not_found", "missing"),
        ({"model": {"path": "tiny", "trust_remote_code": True}}, "remote_code_not_allowed", "remote code"),
        ({"edit__layers": [7]}, "invalid_target", "layer 7"),
        ({"edit__projections": ["gate", "down"], "edit__modules": ["nope.*"]}, "invalid_target", "nope"),
        ({"calibration": {"path": "../../etc/passwd"}}, "invalid_path", "calibration.path"),
        ({"calibration": {"path": "absent.txt"}}, "dataset_not_found", "absent.txt"),
        ({"calibration": {"dataset_id": "ds_0123456789abcdef"}}, "dataset_not_found", "ds_0123456789abcdef"),
    ],
)
def test_bad_input_fails_with_a_typed_error(roots: Path, over: dict, code: str, needle: str) -> None:
    settings = settings_for(roots)
    with pytest.raises(PipelineError) as err:
        run_pipeline(make_spec(**over), settings=settings, job_id="bad", reporter=NullReporter(), cache=None)
    assert err.value.code == code
    assert needle in err.value.message
    assert not (roots / "out" / "bad").exists()


def test_existing_output_is_refused(roots: Path) -> None:
    (roots / "out" / "taken").mkdir(parents=True)
    assert _code(make_spec(output={"path": "taken"}), settings_for(roots)) == "output_exists"


def test_sources_read_uploads_and_files(roots: Path) -> None:
    settings = settings_for(roots)
    ds = roots / "datasets" / "ds_abcdefgh1234"
    ds.mkdir(parents=True)
    (ds / "data").write_text('{"text": "one"}\n{"text": "two"}\n')
    (ds / "meta.json").write_text(json.dumps({"format": "jsonl"}))
    assert resolve_texts(TextSource(dataset_id="ds_abcdefgh1234"), settings) == ["one", "two"]
    (roots / "data" / "c.txt").write_text("first doc\nline two\n\n\nsecond doc\n")
    assert resolve_texts(TextSource(path="c.txt"), settings) == ["first doc\nline two", "second doc"]
    (roots / "data" / "p.jsonl").write_text('{"prefix": "a b", "suffix": [1, 2]}\n')
    from contract.spec import PairSource

    assert resolve_pairs(PairSource(path="p.jsonl"), settings) == [{"prefix": "a b", "suffix": [1, 2]}]


def test_fs_cache_tier_overrides_and_second_run_cached(roots: Path) -> None:
    settings = settings_for(roots, factor_cache=str(roots / "fscache"))
    cache = open_factor_cache(settings)
    spec = make_spec(
        edit={"layers": [2, 3], "keep_mass": 0.7, "overrides": [{"layer": -1, "projection": "up", "keep_mass": 1.0}]}
    )
    first = run_pipeline(spec, settings=settings, job_id="fs1", reporter=NullReporter(), cache=cache)
    layers = {(r["layer"], r["role"]): r for r in first["results"][0]["layers"]}
    assert layers[(3, "up")]["keep_mass"] == 1.0 and layers[(3, "up")]["relative_change"] < 1e-5
    assert layers[(2, "up")]["keep_mass"] == 0.7 and layers[(2, "up")]["relative_change"] > 0
    rep = NullReporter()
    spec.edit.keep_mass = 0.5
    second = run_pipeline(spec, settings=settings, job_id="fs2", reporter=rep, cache=cache)
    assert dict(rep.stages) == {
        "load_model": False,
        "collect_factors": True,
        "eigendecompose": True,
        "edit": False,
        "evaluate": False,
        "export": False,
    }
    assert [s for s, _ in rep.stages] == list(STAGES)
    assert second["cache"]["eigendecompose"] == {"hits": 6, "misses": 0}  # A shared by gate/up: 2 A + 4 G


class CancelAfter(NullReporter):
    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def cancelled(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_cancel_inside_collection_leaves_no_output(roots: Path) -> None:
    settings = settings_for(roots)
    with pytest.raises(JobCancelled):
        run_pipeline(make_spec(), settings=settings, job_id="cx", reporter=CancelAfter(3), cache=None)
    assert not (roots / "out" / "cx").exists()
    assert not list(roots.glob("out/cx.tmp-*"))


def test_sweep_without_host_copies_reedits_identically(roots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import workers.pipeline.stages.edit as edit_stage_mod
    from workers.artifacts import read_delta

    settings = settings_for(roots, factor_cache=str(roots / "fscache2"))
    cache = open_factor_cache(settings)
    spec = make_spec(edit={"layers": [1], "keep_mass": [0.9, 0.4]})
    kept = run_pipeline(spec, settings=settings, job_id="copies", reporter=NullReporter(), cache=cache)
    monkeypatch.setattr(edit_stage_mod, "EDITED_COPIES_BYTES", 0)
    redone = run_pipeline(spec, settings=settings, job_id="nocopies", reporter=NullReporter(), cache=cache)
    assert [p["layers"] for p in kept["results"]] == [p["layers"] for p in redone["results"]]
    for a, b in zip(kept["results"], redone["results"], strict=True):
        da, db = read_delta(Path(a["artifacts"]["delta"])), read_delta(Path(b["artifacts"]["delta"]))
        assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_conv1d_and_neox_artifacts_differ_only_in_edited_tensors(tmp_path: Path, family: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from workers.artifacts import apply_delta

    save_tiny(tmp_path / "models" / family, family)
    settings = Settings(model_root=tmp_path / "models", output_root=tmp_path / "out", data_root=tmp_path, device="cpu")
    spec = make_spec(model={"path": family}, edit={"layers": [1], "projections": ["up", "down"], "keep_mass": 0.7})
    res = run_pipeline(spec, settings=settings, job_id=family, reporter=NullReporter(), cache=None)
    out = Path(res["results"][0]["artifacts"]["dir"])
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / family)
    edited = AutoModelForCausalLM.from_pretrained(out)
    b, e = base.state_dict(), edited.state_dict()
    assert {k for k in b if not torch.equal(b[k], e[k])} == {f"{t['name']}.weight" for t in res["targets"]}
    apply_delta(base, out / "delta.safetensors")
    assert all(torch.equal(base.state_dict()[k], e[k]) for k in b)


def test_small_calibration_warns_and_flags_the_manifest(roots: Path) -> None:
    settings = settings_for(roots)
    rep = NullReporter()
    spec = make_spec(calibration={"texts": TEXTS, "max_tokens": 16, "seq_len": 16, "batch_size": 8})
    result = run_pipeline(spec, settings=settings, job_id="few", reporter=rep, cache=None)
    warnings = [(msg, data) for level, msg, data in rep.events if level == "warning"]
    assert [d["kind"] for _, d in warnings] == ["few_tokens"]
    msg, data = warnings[0]
    assert data["tokens"] == 15 and data["largest_dim"] == 64  # 1 row of 16 tokens -> 15 positions; MLP 64
    assert "calibration.max_tokens to at least 640" in msg
    manifest = json.loads(Path(result["results"][0]["artifacts"]["dir"], "manifest.json").read_text())
    stats = manifest["factor_stats"]
    assert stats["few_tokens"] is True and stats["tokens"] == 15
    for name, s in stats["factors"].items():
        assert s["tokens"] == 15 and s["rank"] <= 15, name  # a mean of 15 outer products
    rep = NullReporter()
    run_pipeline(make_spec(), settings=settings, job_id="enough", reporter=rep, cache=None)
    assert not [d for level, _, d in rep.events if level == "warning"]
    stats_events = [d for _, _, d in rep.events if d and d.get("kind") == "factor_stats"]
    assert len(stats_events) == 1 and stats_events[0]["few_tokens"] is False and stats_events[0]["tokens"] >= 640
