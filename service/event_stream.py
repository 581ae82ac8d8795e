"""Server-Sent Events for one job, as an async generator: an open stream holds no thread.

``UpdateHub`` is one pub/sub connection per gateway process, pattern-subscribed to every job's
updates channel (``contract.keys.job_updates``); each open stream registers an ``asyncio.Event``
for its job and the hub sets it when the job changes. The stream then reads what is new — the
record and the events after the last one sent (``XRANGE`` on the job's events stream) — over the
shared async connection pool. While subscribed, that read is shared: every stream of the same
job at the same position awaits one read per update (and one rendering of its SSE text), so 200
streams on a job cost about what one does in Redis round trips. The wait also ends after
``poll_s`` without a message, so a stream keeps up (reading on its own) even while the pub/sub
connection is being re-established after a Redis restart.

Messages: ``retry``, ``event: log`` (id = seq) per event, ``event: job`` (the record) whenever
status, stage or progress changes, ``: keepalive`` comments while quiet, and a final
``event: end`` with the record once the job is terminal and every event was sent (events land in
the same transaction as the status change). An error ends the stream with ``event: error``
carrying the standard error body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from contract import keys
from contract.store.jobs import TERMINAL_STATUSES
from service.job_reader import CorruptRecord, JobReader

log = logging.getLogger(__name__)

_PATTERN = keys.job_updates("*")
_PREFIX, _SUFFIX = _PATTERN.split("*")
EVENTS_PER_READ = 500


@dataclass(frozen=True)
class Snapshot:
    """One read of a job for its streams: the record (None: gone), the events after a position,
    and their SSE text, rendered once."""

    rec: dict[str, Any] | None
    events: list[dict[str, Any]]
    job_text: str
    event_texts: list[str]


async def read_snapshot(reader: JobReader, job_id: str, after: int) -> Snapshot:
    rec = await reader.get(job_id)
    if rec is None:
        return Snapshot(None, [], "", [])
    events = await reader.events(job_id, after_seq=after, limit=EVENTS_PER_READ)
    texts = [sse_message("log", ev, ev["seq"]) for ev in events]
    return Snapshot(rec, events, sse_message("job", rec), texts)


class UpdateHub:
    """Wakes the streams following a job whenever its updates channel gets a message, and shares
    one read per job, position and update among them."""

    def __init__(self, r: aioredis.Redis, *, retry_s: float = 1.0) -> None:
        self.r = r
        self.retry_s = retry_s
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._generation: dict[str, int] = {}
        self._reads: dict[tuple[str, int, int], asyncio.Future[Snapshot]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="curvedit-update-hub")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the subscription. Bounded: a cancellation that redis-py's reader swallows must not
        hang the gateway's shutdown (the loop also checks ``_closed``, and closing the pool
        afterwards ends any read still pending)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                log.warning("the job update subscription did not stop within %.0f s", timeout)

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set on every update of ``job_id`` while the block runs (the caller clears it)."""
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            group = self._watchers.get(job_id)
            if group is not None:
                group.discard(event)
                if not group:
                    del self._watchers[job_id]
                    self._forget(job_id)

    async def read(self, reader: JobReader, job_id: str, after: int) -> Snapshot:
        """The job's record and events after ``after``. While subscribed, streams asking for the
        same job and position between two updates share one read; otherwise each reads itself."""
        if not self.connected.is_set():
            return await read_snapshot(reader, job_id, after)
        key = (job_id, self._generation.get(job_id, 0), after)
        shared = self._reads.get(key)
        if shared is None:
            shared = asyncio.ensure_future(read_snapshot(reader, job_id, after))
            self._reads[key] = shared
            shared.add_done_callback(lambda done: self._drop_failed(key, done))
        return await asyncio.shield(shared)  # a stream that goes away does not cancel the others' read

    def _drop_failed(self, key: tuple[str, int, int], done: asyncio.Future[Snapshot]) -> None:
        failed = done.cancelled() or done.exception() is not None  # (retrieves the exception)
        if failed and self._reads.get(key) is done:
            del self._reads[key]

    def _forget(self, job_id: str) -> None:
        """Bump the job's generation (later reads are fresh) and drop its shared reads."""
        self._generation[job_id] = self._generation.get(job_id, 0) + 1
        for key in [k for k in self._reads if k[0] == job_id]:
            del self._reads[key]
        if job_id not in self._watchers:
            del self._generation[job_id]

    def _wake(self, job_id: str | None = None) -> None:
        jobs = [job_id] if job_id is not None else list(self._watchers)
        for job in jobs:
            if job in self._watchers:
                self._forget(job)
                for event in self._watchers[job]:
                    event.set()

    async def _run(self) -> None:
        while not self._closed:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(_PATTERN)
                self.connected.set()
                self._wake()  # anything may have happened while we were not subscribed
                async for message in pubsub.listen():
                    if self._closed:
                        return
                    channel = message.get("channel")
                    name = channel.decode(errors="replace") if isinstance(channel, bytes) else str(channel)
                    if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
                        self._wake(name[len(_PREFIX) : len(name) - len(_SUFFIX)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis gone or restarting: streams poll meanwhile
                log.warning("job update subscription lost (%s: %s); retrying", type(exc).__name__, exc)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[attr-defined]
            await asyncio.sleep(self.retry_s)


def sse_message(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def job_events(
    reader: JobReader,
    hub: UpdateHub,
    job_id: str,
    after: int,
    *,
    poll_s: float = 5.0,
    keepalive_s: float = 15.0,
    renew: Callable[[], Awaitable[None]] | None = None,
    renew_every_s: float = 20.0,
    request_id: str | None = None,
) -> AsyncIterator[str]:
    """The SSE text of one job from ``seq > after`` until it ends (see the module docstring).
    ``renew`` is awaited every ``renew_every_s`` (the open-stream lease)."""
    yield "retry: 2000\n\n"
    last = after
    seen: tuple[Any, ...] | None = None
    quiet_since = renewed = time.monotonic()
    async with hub.watch(job_id) as woken:
        while True:
            woken.clear()
            try:
                snap = await hub.read(reader, job_id, last)
                rec, events = snap.rec, snap.events
                if rec is None:
                    yield sse_message("end", {"id": job_id, "status": None})
                    return
            except CorruptRecord as exc:
                log.warning("stream %s: %s", job_id, exc)
                yield _error("corrupt_record", f"the stored record of job {job_id} cannot be read", request_id)
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("stream %s: Redis unavailable (%s); retrying", job_id, exc)
                snap = Snapshot(None, [], "", [])
                rec, events = None, []
            for ev, text in zip(events, snap.event_texts, strict=True):
                last = ev["seq"]
                quiet_since = time.monotonic()
                yield text
            if rec is not None:
                snapshot = (rec["status"], rec["stage"], json.dumps(rec["progress"], sort_keys=True))
                if snapshot != seen:
                    seen = snapshot
                    quiet_since = time.monotonic()
                    yield snap.job_text
                if rec["status"] in TERMINAL_STATUSES and (last >= rec["last_event_seq"] or not events):
                    yield sse_message("end", rec)
                    return
            if len(events) == EVENTS_PER_READ:
                continue  # more are waiting: send them before sleeping
            now = time.monotonic()
            if renew is not None and now - renewed >= renew_every_s:
                renewed = now
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    await renew()
            timeout = min(poll_s, max(0.0, keepalive_s - (now - quiet_since)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout)
            if not woken.is_set() and time.monotonic() - quiet_since >= keepalive_s:
                quiet_since = time.monotonic()
                yield ": keepalive\n\n"  # a comment line keeps proxies from timing out


def _error(code: str, message: str, request_id: str | None) -> str:
    return sse_message("error", {"error": {"code": code, "message": message, "request_id": request_id}})
