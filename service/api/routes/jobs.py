"""``/v1/edit-jobs``: submit (with Idempotency-Key), read, list, cancel, and follow events
(JSON list or Server-Sent Events)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from contract import keys
from contract.outputs import reserve_output
from contract.store.jobs import JobStore, new_job_id
from contract.store.queue import cancel_job, enqueue_job
from service.api.deps import (
    AsyncRedisDep,
    DatasetStoreDep,
    JobReaderDep,
    JobStoreDep,
    OwnerDep,
    RedisDep,
    RequestIdDep,
    SettingsDep,
    UpdatesDep,
)
from service.api.routes.webhooks import check_target_url
from service.errors import ApiError
from service.event_stream import job_events
from service.job_reader import CorruptRecord, JobReader
from service.preflight import preflight
from service.schemas.common import ERROR_RESPONSES, ErrorResponse
from service.schemas.jobs import EditJob, EditJobCreate, EditJobList, JobEvent, JobStatus
from service.stream_slots import StreamSlots
from service.validation import validate_submission
from service.webhooks.records import WebhookStore
from service.webhooks.signing import new_secret

router = APIRouter(prefix="/edit-jobs", tags=["edit-jobs"], responses=ERROR_RESPONSES)

CURSOR_PATTERN = r"^job_[A-Za-z0-9_-]{1,80}$"
MAX_SEQ = 2**53 - 1  # the largest event seq accepted in ?after= / Last-Event-ID (exact in JSON numbers)
JobIdPath = Annotated[str, Path(max_length=128, description="The job id returned at submission")]
CORRUPT_RESPONSE: dict[str, Any] = {
    "model": ErrorResponse,
    "description": "The job's stored record cannot be read (code corrupt_record)",
}
_IDEMPOTENCY_WAIT_S = 5.0
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


async def _owned(reader: JobReader, job_id: str, owner: str) -> dict[str, Any]:
    """The owner's job, 404 when it is missing or another owner's, 409 ``corrupt_record`` when
    its stored record cannot be read."""
    try:
        rec = await reader.get(job_id) if _JOB_ID.fullmatch(job_id) else None
    except CorruptRecord as exc:
        if exc.owner != owner:
            raise ApiError(404, "not_found", f"no edit job {job_id!r}") from None
        raise ApiError(
            409,
            "corrupt_record",
            f"the stored record of job {job_id} cannot be read ({exc.reason}); it is listed under "
            "'unreadable' in GET /v1/edit-jobs and needs an operator to repair or delete it",
        ) from None
    if rec is None or rec["owner"] != owner:
        raise ApiError(404, "not_found", f"no edit job {job_id!r}")
    return rec


def _canonical_sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EditJob,
    responses={
        200: {"model": EditJob, "description": "Idempotent replay: the job created earlier with this key"},
        403: ERROR_RESPONSES[401] | {"description": "trust_remote_code not allowed here"},
        413: {"description": "Body larger than CURVEDIT_MAX_BODY_BYTES"},
    },
    summary="Submit an edit job",
)
async def create_edit_job(
    body: EditJobCreate,
    response: Response,
    owner: OwnerDep,
    settings: SettingsDep,
    r: RedisDep,
    store: JobStoreDep,
    datasets: DatasetStoreDep,
    reader: JobReaderDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    """Validates the spec against the deployment (model, layers, projections, paths, datasets),
    stores a ``queued`` job and enqueues it. ``Idempotency-Key``: the same key with the same body
    returns the same job (200); with a different body, 422. Keys last ``CURVEDIT_IDEMPOTENCY_TTL_S``."""
    try:  # the checks read files and Redis: a worker thread; waiting for a replay holds none
        return await run_in_threadpool(_submit, body, response, owner, settings, r, store, datasets, idempotency_key)
    except _ReplayPending as pending:
        rec = await _await_replay(reader, pending.job_id, owner)
        response.status_code = status.HTTP_200_OK
        response.headers["Location"] = f"/v1/edit-jobs/{rec['id']}"
        response.headers["Idempotent-Replayed"] = "true"
        return rec


def _submit(
    body: EditJobCreate,
    response: Response,
    owner: str,
    settings: Any,
    r: Any,
    store: JobStore,
    datasets: Any,
    idempotency_key: str | None,
) -> dict[str, Any]:
    body_sha = _canonical_sha(body.model_dump(mode="json"))
    idem_key = None
    if idempotency_key is not None:
        idem_key = keys.idempotency(owner, hashlib.sha256(idempotency_key.encode()).hexdigest())
        replay = _idempotent_replay(r, store, idem_key, body_sha, owner)
        if replay is not None:
            response.status_code = status.HTTP_200_OK
            response.headers["Location"] = f"/v1/edit-jobs/{replay['id']}"
            response.headers["Idempotent-Replayed"] = "true"
            return replay
    job_id = new_job_id()
    resolved = validate_submission(body, settings, owner, datasets, job_id)
    estimate = preflight(body, settings)  # 422 insufficient_memory when it cannot fit a worker
    if idem_key is not None:
        claimed = r.set(
            idem_key, json.dumps({"body_sha256": body_sha, "job_id": job_id}), nx=True, ex=settings.idempotency_ttl_s
        )
        if not claimed:  # a concurrent request with the same key won the race
            replay = _idempotent_replay(r, store, idem_key, body_sha, owner)
            if replay is not None:
                response.status_code = status.HTTP_200_OK
                response.headers["Location"] = f"/v1/edit-jobs/{replay['id']}"
                return replay
    holder = reserve_output(r, owner, resolved["output"]["path"], job_id)
    if holder is not None:
        if idem_key is not None:  # the key was claimed for a job that will not exist
            r.delete(idem_key)
        raise ApiError(
            409,
            "output_in_use",
            f"output.path {resolved['output']['path']!r} is the output of job {holder}, which is still "
            "queued or running; choose another output.path (or cancel that job)",
            field="output.path",
        )
    notify_webhook = _notify_endpoint(body, r, settings, owner, job_id)
    rec = store.create(owner, resolved, job_id=job_id, estimate=estimate)
    try:
        enqueue_job(r, settings, job_id)
    except Exception as exc:
        store.fail(job_id, "enqueue_failed", f"could not enqueue the job: {exc}")
        raise
    response.headers["Location"] = f"/v1/edit-jobs/{job_id}"
    return {**rec, "webhook": notify_webhook}


def _notify_endpoint(body: EditJobCreate, r: Any, settings: Any, owner: str, job_id: str) -> dict[str, str] | None:
    """spec.notify: an endpoint scoped to this job, created before the job so no event is missed."""
    if body.notify is None:
        return None
    check_target_url(body.notify.url, settings, "notify.url")
    hooks = WebhookStore(r, log_ttl_s=settings.webhook_log_ttl_s)
    endpoint = hooks.create(
        owner, body.notify.url, list(body.notify.events), new_secret(), description=f"notify of {job_id}", job_id=job_id
    )
    return {"id": endpoint["id"], "secret": endpoint["secret"]}


def _idempotent_replay(r: Any, store: JobStore, idem_key: str, body_sha: str, owner: str) -> dict[str, Any] | None:
    raw = r.get(idem_key)
    if raw is None:
        return None
    saved = json.loads(raw)
    if saved["body_sha256"] != body_sha:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "Idempotency-Key was already used with a different request body",
            field="Idempotency-Key",
        )
    rec = store.get(saved["job_id"])
    if rec is not None and rec["owner"] == owner:
        return rec
    raise _ReplayPending(saved["job_id"])  # the first request may still be storing its job


class _ReplayPending(Exception):
    """The Idempotency-Key names a job that is not stored yet; the route waits for it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


async def _await_replay(reader: JobReader, job_id: str, owner: str) -> dict[str, Any]:
    deadline = time.monotonic() + _IDEMPOTENCY_WAIT_S
    while True:
        rec = await _owned_or_none(reader, job_id, owner)
        if rec is not None:
            return rec
        if time.monotonic() > deadline:
            raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still in progress")
        await asyncio.sleep(0.05)


async def _owned_or_none(reader: JobReader, job_id: str, owner: str) -> dict[str, Any] | None:
    try:
        return await _owned(reader, job_id, owner)
    except ApiError as exc:
        if exc.status_code == 404:
            return None
        raise


@router.get(
    "",
    response_model=EditJobList,
    summary="List your edit jobs, newest first",
    responses={200: {"description": "A page of jobs; ids of stored records that cannot be read are in 'unreadable'"}},
)
async def list_edit_jobs(
    owner: OwnerDep,
    reader: JobReaderDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    items, unreadable, next_cursor = await reader.list(owner, status=status_, cursor=cursor, limit=limit)
    return {"data": items, "next_cursor": next_cursor, "unreadable": unreadable}


@router.get(
    "/{job_id}",
    response_model=EditJob,
    summary="Status, progress, metrics and artifacts of a job",
    responses={409: CORRUPT_RESPONSE},
)
async def get_edit_job(job_id: JobIdPath, owner: OwnerDep, reader: JobReaderDep) -> dict[str, Any]:
    return await _owned(reader, job_id, owner)


@router.post(
    "/{job_id}/cancel",
    response_model=EditJob,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a job",
    responses={409: CORRUPT_RESPONSE},
)
async def cancel_edit_job(
    job_id: JobIdPath, owner: OwnerDep, reader: JobReaderDep, store: JobStoreDep, r: RedisDep, settings: SettingsDep
) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one stops at its next batch boundary
    (``cancel_requested`` is true until then). Cancelling a finished job changes nothing."""
    await _owned(reader, job_id, owner)
    await run_in_threadpool(cancel_job, store, r, settings, job_id)
    return await _owned(reader, job_id, owner)


@router.get(
    "/{job_id}/events",
    response_model=list[JobEvent],
    summary="The job's event log",
    responses={409: CORRUPT_RESPONSE},
)
async def list_events(
    job_id: JobIdPath,
    owner: OwnerDep,
    reader: JobReaderDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only events with seq > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    await _owned(reader, job_id, owner)
    return await reader.events(job_id, after_seq=after, limit=limit)


@router.get(
    "/{job_id}/events/stream",
    summary="Follow the job as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "SSE stream"},
        409: CORRUPT_RESPONSE,
        429: {"model": ErrorResponse, "description": "This API key already holds CURVEDIT_MAX_STREAMS_PER_KEY streams"},
    },
)
async def stream_events(
    job_id: JobIdPath,
    owner: OwnerDep,
    reader: JobReaderDep,
    updates: UpdatesDep,
    ar: AsyncRedisDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only events with seq > after")] = 0,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=MAX_SEQ, description="The id of the last event received; resumes after it")
    ] = None,
) -> StreamingResponse:
    """``event: log`` (id = seq) for each event, ``event: job`` (the job record) whenever status,
    stage or progress changes, and a final ``event: end`` with the job once it is terminal; an
    ``event: error`` (standard error body) ends a stream that cannot go on. Reconnect with
    ``Last-Event-ID`` (or ``?after=``) to resume. An open stream holds no server thread; one API
    key may hold ``CURVEDIT_MAX_STREAMS_PER_KEY`` at once (429 ``too_many_streams`` beyond)."""
    await _owned(reader, job_id, owner)
    start = last_event_id if last_event_id is not None else after
    slots = StreamSlots(ar, settings.max_streams_per_key)
    token = await slots.acquire(owner)
    if token is None:
        raise ApiError(
            429,
            "too_many_streams",
            f"this API key already has {settings.max_streams_per_key} event streams open "
            "(CURVEDIT_MAX_STREAMS_PER_KEY); close one, or poll GET /v1/edit-jobs/{id}/events?after=",
            headers={"Retry-After": "5"},
        )
    release = BackgroundTask(_release, slots, owner, token)

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in job_events(
                reader, updates, job_id, start, renew=lambda: slots.renew(owner, token), request_id=request_id
            ):
                yield chunk
        finally:
            await _release(slots, owner, token)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=release,
    )


async def _release(slots: StreamSlots, owner: str, token: str) -> None:
    """Give the stream's lease back (twice is harmless: the response's end and the generator's)."""
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
        await slots.release(owner, token)
