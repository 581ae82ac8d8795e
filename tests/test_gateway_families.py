"""Submission-time target validation follows the one family table (``contract/families.py``).

Regressions: the gateway accepted ``edit.modules=["model.norm"]`` (a 1-D norm weight the worker
cannot edit, so the job failed later) and refused the fc1/fc2 (Phi) and w1/w3/w2 (LFM2) MLPs
that the worker supports.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.gateway_helpers import auth, job_body, make_settings
from tests.tiny_models import save_tiny


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("family-models")
    for family in ("llama", "gpt2", "phi", "lfm2"):
        save_tiny(root / family, family=family)
    return root


@pytest.fixture
def client(tmp_path: Path, redis_url: str, model_dirs: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, redis_url)
    for d in model_dirs.iterdir():
        shutil.copytree(d, settings.model_root / d.name)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("model", "modules"),
    [("llama", ["model.norm"]), ("llama", ["model.embed_tokens"]), ("gpt2", ["transformer.h.0.ln_1"])],
)
def test_non_linear_modules_are_refused_at_submit(client: TestClient, model: str, modules: list[str]) -> None:
    r = client.post("/v1/edit-jobs", json=job_body(model, modules=modules), headers=auth())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "edit.modules[0]" and modules[0] in error["message"], error


@pytest.mark.parametrize(
    ("model", "edit"),
    [
        ("phi", {"layers": [0, 3], "projections": ["up", "down"]}),  # mlp.fc1 / mlp.fc2
        ("lfm2", {"layers": [1], "projections": ["gate", "up", "down"]}),  # feed_forward.w1 / w3 / w2
        ("lfm2", {"modules": ["model.layers.*.feed_forward.w1"]}),
        ("gpt2", {"modules": ["lm_head"]}),  # tied to the embedding: no tensor of its own in the checkpoint
    ],
)
def test_worker_supported_mlps_are_accepted(client: TestClient, model: str, edit: dict[str, object]) -> None:
    r = client.post("/v1/edit-jobs", json=job_body(model, **edit), headers=auth())
    assert r.status_code == 202, r.text


def test_roles_the_model_lacks_are_listed(client: TestClient) -> None:
    r = client.post("/v1/edit-jobs", json=job_body("phi", projections=["gate"]), headers=auth())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "edit.projections[0]" and "up" in error["message"] and "down" in error["message"]
