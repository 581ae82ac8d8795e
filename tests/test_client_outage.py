"""Regression: `CurveditClient.wait` (and so `curvedit wait` / `submit --wait`) gave up on the first
503 while Redis restarted, exiting 1 as if the job had failed, though the job went on. A transient
outage is now polled through; a lasting one, or a real error, still raises."""

from __future__ import annotations

import httpx
import pytest

from service.client import CurveditAPIError, CurveditClient

_DOWN = {"error": {"code": "redis_unavailable", "message": "the job store (Redis) is unreachable", "field": None}}


def _client(answers: list[tuple[int, dict]]) -> tuple[CurveditClient, list[int]]:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        status, body = answers[min(len(calls) - 1, len(answers) - 1)]
        return httpx.Response(status, json=body)

    return CurveditClient("http://gw", transport=httpx.MockTransport(handler)), calls


def test_wait_rides_out_a_short_outage() -> None:
    running, done = {"id": "job_1", "status": "running"}, {"id": "job_1", "status": "succeeded"}
    client, calls = _client([(200, running), (503, _DOWN), (503, _DOWN), (200, done)])
    assert client.wait("job_1", poll=0.01)["status"] == "succeeded"
    assert len(calls) == 4


def test_wait_raises_when_the_outage_lasts() -> None:
    client, _ = _client([(200, {"id": "job_1", "status": "running"}), (503, _DOWN)])
    with pytest.raises(CurveditAPIError) as info:
        client.wait("job_1", poll=0.01, outage_grace=0.5)
    assert info.value.status == 503


def test_wait_raises_a_client_error_at_once() -> None:
    client, calls = _client([(404, {"error": {"code": "not_found", "message": "no edit job", "field": None}})])
    with pytest.raises(CurveditAPIError) as info:
        client.wait("job_1", poll=0.01)
    assert info.value.status == 404 and len(calls) == 1


def test_wait_fails_at_once_when_the_gateway_never_answered() -> None:
    client, calls = _client([(503, _DOWN)])
    with pytest.raises(CurveditAPIError):
        client.wait("job_1", poll=0.01)
    assert len(calls) == 1


def _sse(*messages: str) -> bytes:
    return "".join(messages).encode()


def test_stream_events_resumes_after_a_break_without_losing_or_repeating_events() -> None:
    """Regression: a gateway restart mid-stream ended `curvedit events --follow` (exit 1, or exit 0
    when the server closed cleanly before `end`) though the job went on."""
    seen_headers: list[str | None] = []
    bodies = [
        _sse('id: 1\nevent: log\ndata: {"seq": 1}\n\n', 'id: 2\nevent: log\ndata: {"seq": 2}\n\n'),  # closes early
        None,  # gateway down
        _sse('id: 3\nevent: log\ndata: {"seq": 3}\n\n', 'event: end\ndata: {"status": "succeeded"}\n\n'),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen_headers.append(request.headers.get("Last-Event-ID"))
        body = bodies[len(seen_headers) - 1]
        if body is None:
            return httpx.Response(503, json=_DOWN)
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    client = CurveditClient("http://gw", transport=httpx.MockTransport(handler))
    got = list(client.stream_events("job_1", outage_grace=10))
    assert [m["data"].get("seq") for m in got if m["event"] == "log"] == [1, 2, 3]
    assert got[-1]["event"] == "end"
    assert seen_headers == [None, "2", "2"]


def test_stream_events_that_never_opened_raise_at_once() -> None:
    client, calls = _client([(503, _DOWN)])
    with pytest.raises(CurveditAPIError):
        list(client.stream_events("job_1"))
    assert len(calls) == 1
