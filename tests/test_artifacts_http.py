"""Artifacts over HTTP against a real gateway (uvicorn in a thread) and real exported artifact
trees (the pipeline run in-process on a tiny model): the list matches the files on disk and their
hashes, downloads stream the exact bytes, another key's job and every escape attempt are 404, and
the CLI's ``report`` / ``download`` write verified files — the downloaded model loads with
``from_pretrained`` and holds the edited weights."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from contract.outputs import owner_output_root
from contract.settings import Settings
from contract.spec import EditJobSpec
from contract.store.jobs import JobStore
from service.cli.app import app
from service.client import CurveditAPIError, CurveditClient
from tests.live_gateway import KEYS, gateway_settings, live_gateway
from tests.tiny_models import save_tiny
from workers.pipeline.reporting import NullReporter
from workers.pipeline.run import run_pipeline

TEXTS = [f"note {i}: alice sends bob a letter about the weather in paris, day {i}" for i in range(40)]
PAIRS = [{"prefix": f"note {i}: alice sends bob", "suffix": " a letter about the weather"} for i in range(4)]
HELDOUT = [f"carol reads a long book about trains and rivers, chapter {i}" for i in range(12)]
JOBS = {"single": "job_artsingle", "sweep": "job_artsweep"}

runner = CliRunner()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """Two jobs of alice exported under her output directory: one edit and a two-point sweep."""
    root = tmp_path_factory.mktemp("arts")
    save_tiny(root / "models" / "tiny", "llama")
    settings = Settings(
        model_root=root / "models",
        data_root=root / "data",
        output_root=owner_output_root(root / "out", "alice"),
        dataset_dir=root / "datasets",
        device="cpu",
    )
    results = {}
    for kind, rho in (("single", 0.6), ("sweep", [0.5, 0.9])):
        spec = EditJobSpec.model_validate(
            {
                "model": {"path": "tiny"},
                "calibration": {"texts": TEXTS, "max_tokens": 600, "seq_len": 16, "batch_size": 8},
                "edit": {"layers": [2, 3], "keep_mass": rho},
                "evaluation": {
                    "recitation": {"pairs": PAIRS, "prefix_tokens": 8, "suffix_tokens": 6},
                    "perplexity": {"texts": HELDOUT, "seq_len": 16, "max_tokens": 300},
                },
            }
        )
        res = run_pipeline(spec, settings=settings, job_id=JOBS[kind], reporter=NullReporter(), cache=None)
        results[kind] = {"spec": spec.model_dump(mode="json"), "result": res}
    return root, results


@pytest.fixture
def gateway(exported: tuple[Path, dict[str, dict]], redis_url: str) -> Iterator[tuple[str, Path]]:
    root, results = exported
    store = JobStore(redis.Redis.from_url(redis_url))
    for kind, data in results.items():
        store.create("alice", data["spec"], job_id=JOBS[kind])
        store.mark_running(JOBS[kind], "test-worker")
        store.succeed(JOBS[kind], json.loads(json.dumps(data["result"], default=str)))
    store.create("alice", results["single"]["spec"], job_id="job_artqueued")
    with live_gateway(gateway_settings(root, redis_url)) as url:
        yield url, owner_output_root(root / "out", "alice")


def _client(url: str, owner: str = "alice") -> CurveditClient:
    return CurveditClient(url, api_key=KEYS[owner])


def test_list_matches_disk_and_manifest(gateway: tuple[str, Path]) -> None:
    url, out = gateway
    for job in JOBS.values():
        directory = out / job
        with _client(url) as c:
            listed = c.list_artifacts(job)
        on_disk = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
        assert [e["path"] for e in listed] == on_disk
        manifest = {f["path"]: f for f in json.loads((directory / "manifest.json").read_text())["files"]}
        for e in listed:
            assert e["size"] == (directory / e["path"]).stat().st_size
            assert e["sha256"] == sha(directory / e["path"])  # recorded (or, for manifest.json, hashed) right
            if e["path"] != "manifest.json":
                assert manifest[e["path"]]["sha256"] == e["sha256"]
    # pagination walks the same list
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['alice']}"}) as h:
        first = h.get(f"/v1/edit-jobs/{JOBS['sweep']}/artifacts", params={"limit": 3}).json()
        assert len(first["data"]) == 3 and first["next_cursor"] == first["data"][-1]["path"]
        rest = h.get(f"/v1/edit-jobs/{JOBS['sweep']}/artifacts", params={"cursor": first["next_cursor"]}).json()
        with _client(url) as c:
            assert first["data"] + rest["data"] == c.list_artifacts(JOBS["sweep"])


def test_download_streams_the_exact_bytes(gateway: tuple[str, Path]) -> None:
    url, out = gateway
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS['alice']}"}) as h:
        for rel in ("model.safetensors", "report.md", "frontier.png"):
            r = h.get(f"/v1/edit-jobs/{JOBS['single']}/artifacts/{rel}")
            assert r.status_code == 200, r.text
            assert r.content == (out / JOBS["single"] / rel).read_bytes()
            assert r.headers["X-Content-SHA256"] == sha(out / JOBS["single"] / rel)
        r = h.get(f"/v1/edit-jobs/{JOBS['sweep']}/artifacts/rho-0.9/delta.safetensors")
        assert (
            r.status_code == 200 and r.content == (out / JOBS["sweep"] / "rho-0.9" / "delta.safetensors").read_bytes()
        )
        assert (
            h.get(f"/v1/edit-jobs/{JOBS['single']}/artifacts/report.md")
            .headers["content-type"]
            .startswith("text/markdown")
        )


def test_other_owner_escapes_and_non_files_are_404(gateway: tuple[str, Path]) -> None:
    url, out = gateway
    bob = {"Authorization": f"Bearer {KEYS['bob']}"}
    alice = {"Authorization": f"Bearer {KEYS['alice']}"}
    single = JOBS["single"]
    with httpx.Client(base_url=url) as h:
        assert h.get(f"/v1/edit-jobs/{single}/artifacts", headers=bob).status_code == 404
        r = h.get(f"/v1/edit-jobs/{single}/artifacts/model.safetensors", headers=bob)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert h.get(f"/v1/edit-jobs/{single}/artifacts", headers={}).status_code == 401
        # a job that has not exported anything, a missing file, a directory
        assert h.get("/v1/edit-jobs/job_artqueued/artifacts", headers=alice).status_code == 404
        assert h.get(f"/v1/edit-jobs/{single}/artifacts/nope.bin", headers=alice).status_code == 404
        assert h.get(f"/v1/edit-jobs/{JOBS['sweep']}/artifacts/rho-0.9", headers=alice).status_code == 404
        # escapes, sent raw (percent-encoded so no client normalises them away)
        for raw in (
            "..%2F" + JOBS["sweep"] + "%2Fmanifest.json",
            "%2E%2E/%2E%2E/%2E%2E/models/tiny/config.json",
            "rho-0.9%2F..%2F..%2F" + JOBS["sweep"] + "%2Fmanifest.json",
            "%2Fetc%2Fpasswd",
            ".%2Fmanifest.json",
            "manifest.json%00",
        ):
            r = h.get(httpx.URL(f"{url}/v1/edit-jobs/{single}/artifacts/{raw}"), headers=alice)
            assert r.status_code in (404, 422), (raw, r.status_code)
    # a symlink inside the tree (pointing outside it) is neither listed nor served
    link = out / single / "leak.json"
    os.symlink(out / JOBS["sweep"] / "manifest.json", link)
    try:
        with httpx.Client(base_url=url, headers=alice) as h:
            assert h.get(f"/v1/edit-jobs/{single}/artifacts/leak.json").status_code == 404
        with _client(url) as c:
            assert "leak.json" not in {e["path"] for e in c.list_artifacts(single)}
    finally:
        link.unlink()


def test_client_download_checks_the_hash_and_leaves_nothing_on_mismatch(
    gateway: tuple[str, Path], tmp_path: Path
) -> None:
    url, out = gateway
    with _client(url) as c:
        dest = c.download_artifact(JOBS["single"], "config.json", tmp_path / "config.json")
        assert dest.read_bytes() == (out / JOBS["single"] / "config.json").read_bytes()
        with pytest.raises(CurveditAPIError) as err:
            c.download_artifact(JOBS["single"], "config.json", tmp_path / "bad.json", sha256="0" * 64)
        assert err.value.code == "checksum_mismatch"
        with pytest.raises(CurveditAPIError) as err:
            _client(url, "bob").download_artifact(JOBS["single"], "config.json", tmp_path / "bob.json")
        assert err.value.status == 404
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # no partial or temporary file left


def _cli(url: str, *args: str, owner: str = "alice") -> tuple[int, str]:
    result = runner.invoke(
        app, list(args), env={"COLUMNS": "200", "CURVEDIT_URL": url, "CURVEDIT_API_KEY": KEYS[owner]}
    )
    return result.exit_code, result.output


def test_cli_download_model_loads_with_from_pretrained(gateway: tuple[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    url, out = gateway
    dest = tmp_path / "model"
    code, text = _cli(url, "download", JOBS["single"], "--dest", str(dest))
    assert code == 0, text
    assert "sha256 checked" in text
    model = AutoModelForCausalLM.from_pretrained(dest)
    AutoTokenizer.from_pretrained(dest)
    edited = load_file(str(out / JOBS["single"] / "delta.safetensors"))
    name = "model.layers.2.mlp.up_proj.weight"
    assert torch.equal(dict(model.named_parameters())[name].detach(), edited[f"{name}.edited"])
    assert not torch.equal(edited[f"{name}.edited"], edited[f"{name}.original"])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # the staging directory is gone
    # refuses to overwrite; another key's job is not found; a sweep needs --keep-mass
    code, text = _cli(url, "download", JOBS["single"], "--dest", str(dest))
    assert code == 2 and "already exists" in text
    code, text = _cli(url, "download", JOBS["single"], "--dest", str(tmp_path / "b"), owner="bob")
    assert code == 2 and "404" in text and not (tmp_path / "b").exists()
    code, text = _cli(url, "download", JOBS["sweep"], "--dest", str(tmp_path / "s"))
    assert code == 2 and "--keep-mass" in text
    code, text = _cli(url, "download", JOBS["sweep"], "--keep-mass", "0.9", "--dest", str(tmp_path / "s"))
    assert code == 0, text
    sub = out / JOBS["sweep"] / "rho-0.9"
    assert sorted(os.listdir(tmp_path / "s")) == sorted(os.listdir(sub))
    assert sha(tmp_path / "s" / "model.safetensors") == sha(sub / "model.safetensors")


def test_cli_report_prints_and_saves(gateway: tuple[str, Path], tmp_path: Path) -> None:
    url, out = gateway
    dest = tmp_path / "rep"
    code, text = _cli(url, "report", JOBS["sweep"], "--dest", str(dest))
    assert code == 0, text
    report = (out / JOBS["sweep"] / "report.md").read_text()
    assert report.splitlines()[0] in text and "## Sweep over 2 keep_mass values" in text
    assert sorted(os.listdir(dest)) == ["eigenspectra.png", "frontier.png", "kept_mass.png", "report.md"]
    for name in os.listdir(dest):
        assert sha(dest / name) == sha(out / JOBS["sweep"] / name)
    code, text = _cli(url, "report", "job_artqueued", "--dest", str(tmp_path / "q"))
    assert code == 2 and "no artifacts" in text
