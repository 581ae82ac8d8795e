"""Submitting goal-directed jobs (``objective``) to the gateway: what is accepted, and the 422s that
name the field — objective with edit.layers / edit.keep_mass, no retain data, layers or projections
the model lacks, unknown datasets, paths outside the data root."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.gateway_helpers import auth, make_settings
from tests.tiny_models import save_tiny


@pytest.fixture(scope="module")
def model_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("objective-models")
    save_tiny(root / "llama", family="llama")  # 4 layers, gate/up/down
    save_tiny(root / "gpt2", family="gpt2")  # up/down only
    return root


@pytest.fixture
def env(tmp_path: Path, redis_url: str, model_src: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, redis_url)
    for d in model_src.iterdir():
        shutil.copytree(d, settings.model_root / d.name)
    (settings.data_root / "forget.jsonl").write_text('{"prefix": "the quick", "suffix": " brown fox"}\n')
    (settings.data_root / "heldout.txt").write_text("held out prose one\n\nheld out prose two\n")
    with TestClient(create_app(settings)) as client:
        yield client


def body(model: str = "llama", **sections: Any) -> dict[str, Any]:
    objective = {
        "forget": {"path": "forget.jsonl", "max_strict_rate": 0.05},
        "retain": {"perplexity": {"path": "heldout.txt"}, "max_perplexity_increase": 0.1},
        "search": {"layer_sets": [[1], [2, 3]], "max_trials": 12},
    }
    out: dict[str, Any] = {
        "model": {"path": model},
        "calibration": {"texts": ["hello world", "the quick brown fox"], "max_tokens": 64, "seq_len": 16},
        "objective": objective,
    }
    for key, value in sections.items():
        if key in objective:
            objective[key] = value
        else:
            out[key] = value
    return out


def submit_error(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/edit-jobs", json=payload, headers=auth())
    assert r.status_code == 422, r.text
    return r.json()["error"]


def test_goal_directed_job_is_accepted_and_stored_without_edit_choices(env: TestClient) -> None:
    r = client_post(env, body())
    assert r.status_code == 202, r.text
    spec = r.json()["spec"]
    assert spec["objective"]["search"]["layer_sets"] == [[1], [2, 3]]
    assert "layers" not in spec["edit"] and "keep_mass" not in spec["edit"]


def client_post(client: TestClient, payload: dict[str, Any]):  # type: ignore[no-untyped-def]
    return client.post("/v1/edit-jobs", json=payload, headers=auth())


@pytest.mark.parametrize("edit_field", ["layers", "keep_mass"])
def test_objective_with_edit_choices_is_422_naming_the_field(env: TestClient, edit_field: str) -> None:
    edit = {"layers": [1]} if edit_field == "layers" else {"keep_mass": 0.9}
    e = submit_error(env, body(edit=edit))
    assert e["field"] == f"edit.{edit_field}", e
    assert e["message"].startswith(f"edit.{edit_field}: must be absent when objective is given"), e
    assert [d["loc"] for d in e["details"]] == [["body", "edit", edit_field]], e


def test_every_edit_choice_beside_an_objective_is_reported_at_its_own_field(env: TestClient) -> None:
    edit = {"layers": [1], "keep_mass": [0.9, 0.8], "modules": ["model.layers.1.mlp.up_proj"]}
    e = submit_error(env, body(edit=edit))
    assert e["field"] == "edit.layers", e
    assert sorted(tuple(d["loc"]) for d in e["details"]) == [
        ("body", "edit", "keep_mass"),
        ("body", "edit", "layers"),
        ("body", "edit", "modules"),
    ], e
    assert {d["type"] for d in e["details"]} == {"objective_owns_edit"}, e


def test_missing_retain_data_is_422(env: TestClient) -> None:
    e = submit_error(env, body(retain={"max_perplexity_increase": 0.1}))
    assert e["field"] == "objective.retain.perplexity", e
    e = submit_error(env, body(retain={"perplexity": {}, "max_perplexity_increase": 0.1}))
    assert e["field"] == "objective.retain.perplexity" and "exactly one of" in e["message"], e
    e = submit_error(env, body(retain={"perplexity": {"path": "heldout.txt"}}))
    assert e["field"] == "objective.retain.max_perplexity_increase", e


def test_forget_needs_one_source_and_a_target(env: TestClient) -> None:
    e = submit_error(env, body(forget={"path": "forget.jsonl"}))
    assert e["field"] == "objective.forget" and "max_strict_rate" in e["message"], e
    e = submit_error(env, body(forget={"max_strict_rate": 0.05}))
    assert e["field"] == "objective.forget" and "exactly one of" in e["message"], e


@pytest.mark.parametrize(
    ("model", "search", "field", "code"),
    [
        ("llama", {"layer_sets": [[1], [2, 9]]}, "objective.search.layer_sets[1][1]", "unknown_layer"),
        ("gpt2", {"projections": ["gate", "up"]}, "objective.search.projections[0]", "unknown_projection"),
        ("llama", {"keep_mass_range": [0.9, 0.5]}, "objective.search.keep_mass_range", "validation_error"),
        ("llama", {"layer_sets": [[]]}, "objective.search.layer_sets", "validation_error"),
    ],
)
def test_search_space_is_checked_against_the_model(
    env: TestClient, model: str, search: dict[str, Any], field: str, code: str
) -> None:
    e = submit_error(env, body(model, search=search))
    assert e["field"] == field and e["code"] == code, e


def test_gpt2_search_projections_default_to_up_and_an_explicit_gate_fails(env: TestClient) -> None:
    r = client_post(env, body("gpt2", search={}))  # left out: the model's MLP input projection (no gate)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["objective"]["search"]["projections"] == ["up"]
    e = submit_error(env, body("gpt2", search={"projections": ["gate", "up"]}))
    assert e["field"] == "objective.search.projections[0]", e
    r = client_post(env, body("gpt2", search={"projections": ["up", "down"]}))
    assert r.status_code == 202, r.text


def test_objective_data_sources_are_confined_and_must_exist(env: TestClient) -> None:
    e = submit_error(env, body(forget={"path": "../outside.jsonl", "max_strict_rate": 0.05}))
    assert e["field"] == "objective.forget.path" and e["code"] == "path_outside_root", e
    e = submit_error(env, body(forget={"path": "missing.jsonl", "max_strict_rate": 0.05}))
    assert e["field"] == "objective.forget.path" and e["code"] == "file_not_found", e
    e = submit_error(env, body(forget={"dataset_id": "ds_abcdefgh12", "max_strict_rate": 0.05}))
    assert e["field"] == "objective.forget.dataset_id" and e["code"] == "unknown_dataset", e
    retain = {"perplexity": {"path": "nope.txt"}, "max_perplexity_increase": 0.1}
    e = submit_error(env, body(retain=retain))
    assert e["field"] == "objective.retain.perplexity.path" and e["code"] == "file_not_found", e
    forget = {"discover": {"path": "/etc/passwd"}, "max_strict_rate": 0.05}
    e = submit_error(env, body(forget=forget))
    assert e["field"] == "objective.forget.discover.path", e
