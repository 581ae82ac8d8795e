"""The Python client against a real gateway (uvicorn in a thread) and a real Redis database."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contract.settings import Settings
from service.client import CurveditAPIError, CurveditClient, parse_sse
from tests.live_gateway import KEYS, gateway_settings, job_body, live_gateway


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, tiny_llama_dir: Path) -> Settings:
    s = gateway_settings(tmp_path, redis_url)
    shutil.copytree(tiny_llama_dir, s.model_root / "tiny")
    return s


@pytest.fixture
def gateway(settings: Settings) -> Iterator[str]:
    with live_gateway(settings) as url:
        yield url


@pytest.fixture
def alice(gateway: str) -> Iterator[CurveditClient]:
    with CurveditClient(gateway, api_key=KEYS["alice"]) as client:
        yield client


# --- pure parsing ---------------------------------------------------------------------------------
def test_error_from_gateway_error_body() -> None:
    resp = httpx.Response(404, json={"error": {"code": "not_found", "message": "no job 'x'", "field": None}})
    err = CurveditAPIError.from_response(resp)
    assert (err.status, err.code, err.message, err.field) == (404, "not_found", "no job 'x'", None)


def test_error_from_fastapi_422_detail() -> None:
    detail = [{"loc": ["body", "edit", "keep_mass"], "msg": "Input should be less than or equal to 1"}]
    err = CurveditAPIError.from_response(httpx.Response(422, json={"detail": detail}))
    assert err.status == 422 and err.code == "invalid" and err.field == "edit.keep_mass"
    assert "less than or equal to 1" in err.message


def test_error_from_non_json_body() -> None:
    err = CurveditAPIError.from_response(httpx.Response(502, text="Bad Gateway"))
    assert (err.status, err.code, err.message) == (502, "server_error", "Bad Gateway")


def test_parse_sse_events_ids_and_keepalives() -> None:
    lines = [": keep-alive", "id: 3", "event: log", 'data: {"seq": 3}', "", "event: end", "data: {}", ""]
    assert list(parse_sse(iter(lines))) == [
        {"event": "log", "id": "3", "data": {"seq": 3}},
        {"event": "end", "id": "3", "data": {}},  # the last event id carries over (SSE spec)
    ]


def test_unreachable_gateway_is_an_api_error() -> None:
    with CurveditClient("http://127.0.0.1:9", timeout=1) as client:
        assert client.is_up() is False
        with pytest.raises(CurveditAPIError) as info:
            client.get("job_x")
    assert info.value.status == 0 and info.value.code == "unreachable"


# --- against the gateway ------------------------------------------------------------------------
def test_health_and_not_ready_without_worker(alice: CurveditClient) -> None:
    assert alice.health()["status"] == "ok"
    with pytest.raises(CurveditAPIError) as info:
        alice.ready()
    assert info.value.status == 503 and "worker" in info.value.message


def test_submit_get_list_events_cancel(alice: CurveditClient) -> None:
    job = alice.submit(job_body(), idempotency_key="idem-1")
    assert job["status"] == "queued" and job["id"].startswith("job_")
    assert alice.submit(job_body(), idempotency_key="idem-1")["id"] == job["id"]
    assert alice.get(job["id"])["spec"]["model"]["path"] == "tiny"

    second = alice.submit(job_body(keep_mass=0.5))
    page = alice.list(limit=1)
    assert [j["id"] for j in page["data"]] == [second["id"]] and page["next_cursor"]
    assert [j["id"] for j in alice.iter_jobs(page_size=1)] == [second["id"], job["id"]]
    assert [j["id"] for j in alice.list(status="queued")["data"]] == [second["id"], job["id"]]

    events = alice.events(job["id"])
    assert events and events[0]["message"] == "job queued"

    cancelled = alice.cancel(job["id"])
    assert cancelled["status"] == "cancelled"
    seen: list[str] = []
    final = alice.wait(job["id"], poll=0.05, on_update=lambda r: seen.append(r["status"]))
    assert final["status"] == "cancelled" and seen == ["cancelled"]
    assert [j["id"] for j in alice.list(status="cancelled")["data"]] == [job["id"]]

    stream = list(alice.stream_events(job["id"]))
    assert stream[-1]["event"] == "end" and stream[-1]["data"]["status"] == "cancelled"
    assert any(m["event"] == "log" and m["data"]["message"] == "job queued" for m in stream)


def test_bad_input_names_the_field(alice: CurveditClient) -> None:
    with pytest.raises(CurveditAPIError) as info:
        alice.submit(job_body(keep_mass=1.5))
    assert info.value.status == 422 and info.value.field and "keep_mass" in info.value.field

    with pytest.raises(CurveditAPIError) as info:
        alice.submit(job_body(layers=[99]))
    assert info.value.status in (400, 422) and "layer" in (info.value.field or info.value.message)

    body = job_body()
    body["model"]["path"] = "no-such-model"
    with pytest.raises(CurveditAPIError) as info:
        alice.submit(body)
    assert 400 <= info.value.status < 500 and info.value.field == "model.path"


def test_auth_and_ownership(gateway: str, alice: CurveditClient) -> None:
    job = alice.submit(job_body())
    with CurveditClient(gateway, api_key="wrong") as stranger, pytest.raises(CurveditAPIError) as info:
        stranger.list()
    assert info.value.status == 401
    with CurveditClient(gateway, api_key=KEYS["bob"]) as bob:
        with pytest.raises(CurveditAPIError) as info:
            bob.get(job["id"])
        assert info.value.status == 404
        assert bob.list()["data"] == []


def test_datasets_and_factors(alice: CurveditClient, tmp_path: Path) -> None:
    path = tmp_path / "calib.txt"
    path.write_text("first document\n\nsecond document\n")
    ds = alice.upload_dataset(path)
    assert ds["id"].startswith("ds_") and ds["name"] == "calib.txt"
    assert alice.get_dataset(ds["id"])["sha256"] == ds["sha256"]
    raw = alice.upload_dataset(b'{"text": "a"}\n', name="inline.jsonl")
    assert raw["name"] == "inline.jsonl"
    alice.delete_dataset(ds["id"])
    with pytest.raises(CurveditAPIError) as info:
        alice.get_dataset(ds["id"])
    assert info.value.status == 404
    with pytest.raises(CurveditAPIError) as info:
        alice.upload_dataset(b"x" * 10_000, name="big.txt")
    assert info.value.status == 413

    assert alice.factors() == []
    with pytest.raises(CurveditAPIError) as info:
        alice.delete_factor("0" * 64)
    assert info.value.status == 404
