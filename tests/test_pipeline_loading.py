"""Model loading through the local Hugging Face cache (offline), and model fingerprints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from contract.settings import Settings
from contract.spec import ModelSpec
from tests.tiny_models import save_tiny
from workers.pipeline.errors import PipelineError
from workers.pipeline.fingerprint import combine, fingerprint_model_dir
from workers.pipeline.loading import load_model


def _fake_hub_cache(cache: Path, repo: str, src: Path) -> str:
    """Lay ``src``'s files out like huggingface_hub does: blobs named by sha256, snapshot symlinks."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)
    for f in src.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        (base / "blobs" / digest).write_bytes(f.read_bytes())
        os.symlink(os.path.relpath(base / "blobs" / digest, snap), snap / f.name)
    return commit


def test_hub_id_loads_offline_from_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hc

    src = save_tiny(tmp_path / "src", "qwen2")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "acme/tiny", src)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = Settings(device="cpu")
    loaded = load_model(ModelSpec(hub_id="acme/tiny", revision="main", dtype="bfloat16"), settings)
    assert loaded.label == "acme/tiny@main"
    assert str(loaded.dtype) == "torch.bfloat16"
    # blob names are the content hashes: the fingerprint equals hashing the plain files
    assert combine(fingerprint_model_dir(loaded.model_dir)) == combine(fingerprint_model_dir(src))
    with pytest.raises(PipelineError) as err:
        load_model(ModelSpec(hub_id="acme/absent"), settings)
    assert err.value.code == "model_not_found"


def test_file_digests_are_memoised_across_processes(tmp_path: Path) -> None:
    from workers.pipeline import fingerprint as fp

    model = save_tiny(tmp_path / "m", "llama")
    memo = tmp_path / "state" / "file-digests.json"
    first = fp.fingerprint_model_dir(model, memo)
    assert memo.is_file()
    weights = model / "model.safetensors"
    st = weights.stat()
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # same size, same mtime: only a memo hit can still report the old digest
    weights.write_bytes(bytes(raw))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    fp._memo.clear()  # a fresh process
    assert fp.fingerprint_model_dir(model, memo) == first
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: re-hashed
    assert fp.fingerprint_model_dir(model, memo)["model.safetensors"] != first["model.safetensors"]
