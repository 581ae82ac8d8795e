"""Submitting image-classifier (ViT) jobs to the gateway: a ViT model directory with
``calibration.images`` is accepted with a preflight estimate sized from images (tokens per image,
images per batch); calibration data of the wrong kind for the model, missing or unusable image
paths and an ``objective`` beside images are 422s that name the field."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from transformers import ViTForImageClassification

from service.main import create_app
from tests.gateway_helpers import auth, job_body, make_settings
from tests.tiny_models import save_tiny
from tests.vision_fixtures import TINY_VIT, save_tiny_vit

LABELS = TINY_VIT["num_labels"]
TOKENS_PER_IMAGE = (TINY_VIT["image_size"] // TINY_VIT["patch_size"]) ** 2 + 1  # 16 patches + [CLS]


@pytest.fixture(scope="module")
def model_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vision-models")
    save_tiny_vit(root / "vit", layers=2)
    save_tiny(root / "llama", family="llama")
    return root


@pytest.fixture
def env(tmp_path: Path, redis_url: str, model_src: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, redis_url)
    for d in model_src.iterdir():
        shutil.copytree(d, settings.model_root / d.name)
    data = settings.data_root
    rng = np.random.default_rng(0)
    for name in ("train.npz", "memorized.npz"):
        np.savez(data / name, pixel_values=rng.normal(size=(6, 3, 16, 16)).astype(np.float32), labels=np.arange(6) % 3)
    (data / "heldout" / "LABEL_0").mkdir(parents=True)  # class-folder tree
    (data / "heldout" / "LABEL_0" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (data / "notes.txt").write_text("text, not images\n")
    with TestClient(create_app(settings)) as client:
        yield client


def vit_body(**sections: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": {"path": "vit"},
        "calibration": {"images": {"path": "train.npz"}, "batch_size": 4},
        "edit": {"layers": [0, 1], "projections": ["up", "down"], "keep_mass": 0.9},
        "evaluation": {"classification": {"memorized": {"path": "memorized.npz"}, "heldout": {"path": "heldout"}}},
    }
    out.update(sections)
    return out


def post(client: TestClient, payload: dict[str, Any]):  # type: ignore[no-untyped-def]
    return client.post("/v1/edit-jobs", json=payload, headers=auth())


def error(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    r = post(client, payload)
    assert r.status_code == 422, r.text
    return dict(r.json()["error"])


def test_vit_job_is_accepted_with_an_image_sized_estimate(env: TestClient, model_src: Path) -> None:
    r = post(env, vit_body())
    assert r.status_code == 202, r.text
    record = env.get(f"/v1/edit-jobs/{r.json()['id']}", headers=auth()).json()
    est = record["estimate"]
    assert record["spec"]["calibration"]["images"] == {"path": "train.npz", "max_images": 50_000}
    assert est["assumptions"]["tokens_per_image"] == TOKENS_PER_IMAGE
    assert est["assumptions"]["tokens_per_batch"] == 4 * TOKENS_PER_IMAGE
    assert est["assumptions"]["tokens"] == 50_000 * TOKENS_PER_IMAGE  # the default max_images
    # Oracles from the model itself: every parameter in float32; A (in^2) and G (out^2) float32 sums
    # for fc1 (32 -> 64) and fc2 (64 -> 32) of both layers, twice (open segment + total), plus the
    # open unit of 8 images: a copy of its rows of the widest factor (64) and, batch 4 not being a
    # multiple of 8, 7 buffered images' inputs and output gradients of the four targets.
    model = ViTForImageClassification.from_pretrained(model_src / "vit")
    assert est["memory"]["weights"] == 4 * model.num_parameters()
    unit = 4 * 8 * TOKENS_PER_IMAGE * 64 + 4 * 7 * TOKENS_PER_IMAGE * 4 * (32 + 64)
    assert est["memory"]["accumulators"] == 2 * 4 * 4 * (32**2 + 64**2) + unit
    # One row of logits per image (not per token), over the 3 labels: 3 float32 copies + 8 B/sample.
    assert est["memory"]["logits_chunk"] == 3 * 4 * 4 * LABELS + 8 * 4 * 1
    assert est["memory"]["activations"] > 0 and est["seconds"] > 0


def test_vit_activations_scale_with_images_per_batch(env: TestClient) -> None:
    est = {}
    for batch in (2, 8):
        r = post(env, vit_body(calibration={"images": {"path": "train.npz", "max_images": 100}, "batch_size": batch}))
        assert r.status_code == 202, r.text
        est[batch] = r.json()["estimate"]
    assert est[8]["memory"]["activations"] == 4 * est[2]["memory"]["activations"]
    assert est[8]["assumptions"]["tokens"] == 100 * TOKENS_PER_IMAGE


@pytest.mark.parametrize(
    ("calibration", "given"),
    [
        ({"texts": ["hello world"]}, "calibration.texts"),
        ({"path": "notes.txt"}, "calibration.path"),
        ({"sources": [{"texts": ["a b c"]}]}, "calibration.sources"),
    ],
)
def test_text_calibration_on_an_image_classifier_is_422(
    env: TestClient, calibration: dict[str, Any], given: str
) -> None:
    e = error(env, vit_body(calibration=calibration, evaluation=None))
    assert e["field"] == "calibration.images", e
    assert e["code"] == "wrong_data_kind" and given in e["message"] and "image classifier" in e["message"], e


def test_images_on_a_causal_lm_is_422_naming_calibration_images(env: TestClient) -> None:
    body = job_body("llama")
    body["calibration"] = {"images": {"path": "train.npz"}}
    e = error(env, body)
    assert e["field"] == "calibration.images", e
    assert e["code"] == "wrong_data_kind" and "calibration.texts" in e["message"], e


@pytest.mark.parametrize(
    ("where", "path", "code"),
    [
        ("calibration.images", "missing.npz", "file_not_found"),
        ("calibration.images", "notes.txt", "unsupported_file"),
        ("evaluation.classification.memorized", "gone.npz", "file_not_found"),
        ("evaluation.classification.heldout", "no-such-folder", "file_not_found"),
        ("evaluation.classification.heldout", "heldout/LABEL_0/a.png", "unsupported_file"),
    ],
)
def test_unusable_image_paths_are_422_naming_the_field(env: TestClient, where: str, path: str, code: str) -> None:
    body = vit_body()
    section: dict[str, Any] = body
    for key in where.split("."):
        section = section[key]
    section["path"] = path
    e = error(env, body)
    assert e["field"] == f"{where}.path" and e["code"] == code and path in e["message"], e


def test_image_path_outside_the_data_root_is_422(env: TestClient) -> None:
    body = vit_body()
    body["evaluation"]["classification"]["heldout"]["path"] = "/etc"
    e = error(env, body)
    assert e["field"].startswith("evaluation.classification.heldout"), e


def test_objective_with_images_is_422(env: TestClient) -> None:
    objective = {
        "forget": {"pairs": [{"prefix": "the quick", "suffix": " brown fox"}], "max_strict_rate": 0.05},
        "retain": {"perplexity": {"texts": ["held out prose"]}, "max_perplexity_increase": 0.1},
    }
    body = vit_body(objective=objective, edit={"projections": ["up"]})
    e = error(env, body)
    assert e["field"] == "objective" and "calibration.images" in e["message"], e


def test_text_metrics_with_images_and_classification_with_text_are_422_at_evaluation(env: TestClient) -> None:
    e = error(env, vit_body(evaluation={"perplexity": {"texts": ["held out prose"]}}))
    assert e["field"] == "evaluation" and "evaluation.perplexity" in e["message"], e
    body = job_body("llama")
    body["evaluation"] = {"classification": {"heldout": {"path": "heldout"}}}
    e = error(env, body)
    assert e["field"] == "evaluation" and "calibration.images" in e["message"], e


def test_left_out_projections_are_the_models_mlp_input_projections(env: TestClient) -> None:
    """No ``edit.projections``: up for the ViT (no gate), gate+up for Llama -- stored in the record,
    so the worker edits what the gateway validated; an explicit 'gate' on the ViT is still a 422."""
    created = post(env, vit_body(edit={"layers": [0], "keep_mass": 0.9}))
    assert created.status_code == 202, created.text
    assert created.json()["spec"]["edit"]["projections"] == ["up"]
    body = job_body("llama")
    del body["edit"]["projections"]
    llama = post(env, body)
    assert llama.status_code == 202, llama.text
    assert llama.json()["spec"]["edit"]["projections"] == ["gate", "up"]
    e = error(env, vit_body(edit={"layers": [0], "projections": ["gate", "up"]}))
    assert e["field"] == "edit.projections[0]" and "'gate'" in e["message"] and "up, down" in e["message"], e
