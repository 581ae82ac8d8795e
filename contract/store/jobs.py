"""The job record store in Redis, shared by the gateway (create, read, list, cancel) and the
workers (running, stages, progress, events, result).

Layout (see ``contract.keys``):

* ``curvedit:job:<id>`` — a hash, one field per record field, each value JSON-encoded;
  ``event_seq`` is the number of events appended so far.
* ``curvedit:job:<id>:events`` — a stream; entry ``<seq>-0`` holds ``time``, ``level``,
  ``message``, ``data`` (JSON). ``XREAD``-ing it is how the SSE endpoint follows a job.
* ``curvedit:job:<id>:updates`` — pub/sub channel, the new status after every change.
* ``curvedit:jobs:all`` / ``curvedit:jobs:status:<status>`` / ``curvedit:jobs:owner:<owner>[:status:<s>]``
  — sorted sets (score 0) ordered by job id; ids start with the creation time in hex, so
  lexicographic order is creation order and ``ZREVRANGEBYLEX`` gives newest-first cursor pages.

None of these keys has a TTL. Every change is an optimistic ``WATCH``/``MULTI`` transaction
that re-reads the status, so a late worker update can never overwrite a terminal state
(``succeeded``, ``failed``, ``cancelled``): such calls are no-ops that return ``False``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

import redis

from contract import keys
from contract.logs import request_id_var
from contract.results import JobResult
from contract.webhooks.events import event_name

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES: tuple[str, ...] = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL_STATUSES: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED})
LEVELS = ("debug", "info", "warning", "error")

# Upper bounds (seconds) of the stage-duration histogram kept in Redis for /metrics.
STAGE_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

Record = dict[str, Any]
Records = list[Record]

_FIELDS = (
    "id",
    "owner",
    "status",
    "stage",
    "stages",
    "progress",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "spec",
    "result",
    "error",
    "estimate",
    "cancel_requested",
    "worker",
    "attempts",
)

# KEYS: job hash, events stream, updates channel, webhook outbox. ARGV: time, level, message, data
# json, webhook event name ('' = none), job id. Appends one event with the next sequence number (and,
# for a webhook event, an outbox entry in the same script: delivery survives any restart); returns
# the sequence number, or -1 when the job does not exist.
_APPEND_EVENT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('HINCRBY', KEYS[1], 'event_seq', 1)
redis.call('XADD', KEYS[2], seq .. '-0', 'time', ARGV[1], 'level', ARGV[2], 'message', ARGV[3],
           'data', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'job', ARGV[6], 'event', ARGV[5], 'seq', seq,
             'time', ARGV[1], 'message', ARGV[3], 'data', ARGV[4])
end
redis.call('PUBLISH', KEYS[3], 'event:' .. seq)
return seq
"""


def utcnow() -> str:
    """Current time, ISO 8601 UTC (what every timestamp in a record looks like)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> float | None:
    """ISO timestamp from a record -> epoch seconds (None passes through)."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


_id_lock = threading.Lock()
_last_id_ms = -1
_id_counter = 0


def new_job_id() -> str:
    """``job_`` + 12 hex digits of milliseconds since the epoch + a 4-hex-digit counter within that
    millisecond + 16 random hex digits.

    Sorting ids as strings sorts jobs by creation time (the list endpoints rely on it); the counter
    keeps ids made by one process in the same millisecond in creation order."""
    global _last_id_ms, _id_counter
    with _id_lock:
        ms = max(int(time.time() * 1000), _last_id_ms)
        _id_counter = _id_counter + 1 if ms == _last_id_ms else 0
        if _id_counter > 0xFFFF:  # more than 65k ids in one millisecond: borrow the next one
            ms, _id_counter = ms + 1, 0
        _last_id_ms = ms
        counter = _id_counter
    return f"job_{ms:012x}{counter:04x}{os.urandom(8).hex()}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: dict[Any, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    for k, v in raw.items():
        name = _s(k)
        rec[name] = json.loads(_s(v))
    rec["last_event_seq"] = int(rec.pop("event_seq", 0) or 0)
    for name in _FIELDS:
        rec.setdefault(name, None)
    rec["cancel_requested"] = bool(rec["cancel_requested"])
    rec["attempts"] = int(rec["attempts"] or 0)
    rec["stages"] = rec["stages"] or {}
    return rec


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/inf (a diverged perplexity, say) become None, tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _encode(fields: dict[str, Any]) -> dict[str | bytes, bytes | float | int | str]:
    return {k: json.dumps(_finite(v), separators=(",", ":"), allow_nan=False, default=str) for k, v in fields.items()}


@dataclass
class _Change:
    """What one transition writes: record fields, status move, histogram samples, events."""

    fields: dict[str, Any]
    new_status: str | None = None
    durations: list[tuple[str, bool, float]] = field(default_factory=list)
    events: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)


class JobStore:
    """Job records in Redis. ``redis`` may be created with or without ``decode_responses``."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.r = redis_client
        self._append = self.r.register_script(_APPEND_EVENT_LUA)

    # ------------------------------------------------------------------ create / read
    def create(
        self, owner: str, spec: dict[str, Any], *, job_id: str | None = None, estimate: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a new ``queued`` job and index it; returns the record. Raises ``ValueError`` if
        ``job_id`` is taken. ``estimate``: the preflight (``contract.preflight``), if any."""
        job_id = job_id or new_job_id()
        now = utcnow()
        rec = {
            "id": job_id,
            "owner": owner,
            "status": QUEUED,
            "stage": None,
            "stages": {},
            "progress": {"fraction": 0.0, "tokens_done": None, "tokens_total": None, "eta_s": None},
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "updated_at": now,
            "spec": spec,
            "result": None,
            "error": None,
            "estimate": estimate,
            "cancel_requested": False,
            "worker": None,
            "attempts": 0,
            "request_id": request_id_var.get(),  # the submitting request (contract.logs): worker logs carry it
        }
        key = keys.job(job_id)
        with self.r.pipeline() as pipe:
            pipe.watch(key)
            if pipe.exists(key):
                pipe.unwatch()
                raise ValueError(f"job {job_id} already exists")
            pipe.multi()
            pipe.hset(key, mapping=_encode(rec))
            pipe.hset(key, "event_seq", 0)
            pipe.zadd(keys.jobs_all(), {job_id: 0})
            pipe.zadd(keys.jobs_status(QUEUED), {job_id: 0})
            pipe.zadd(keys.jobs_owner(owner), {job_id: 0})
            pipe.zadd(keys.jobs_owner(owner, QUEUED), {job_id: 0})
            self._append_in(pipe, job_id, "info", "job queued", {"kind": "status", "status": QUEUED})
            pipe.execute()
        rec["last_event_seq"] = 1
        return rec

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(keys.job(job_id))
        return _decode(raw) if raw else None

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(keys.job(job_id)))

    def status(self, job_id: str) -> str | None:
        raw = self.r.hget(keys.job(job_id), "status")
        return json.loads(_s(raw)) if raw is not None else None

    def list(
        self, owner: str | None, *, status: str | None = None, cursor: str | None = None, limit: int = 20
    ) -> tuple[Records, str | None]:
        """Newest first. ``owner=None`` lists every owner's jobs. ``cursor`` is the ``next_cursor`` of
        the previous page (the last id it held); returns ``(items, next_cursor or None)``."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        limit = max(1, min(int(limit), 1000))
        if owner is None:
            index = keys.jobs_status(status) if status else keys.jobs_all()
        else:
            index = keys.jobs_owner(owner, status)
        top = f"({cursor}" if cursor else "+"
        ids = [_s(i) for i in self.r.zrevrangebylex(index, top, "-", start=0, num=limit + 1)]
        more = len(ids) > limit
        ids = ids[:limit]
        items = self._get_many(ids)
        return items, (ids[-1] if more and ids else None)

    def _get_many(self, ids: Iterable[str]) -> Records:
        ids = [*ids]
        with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(keys.job(i))
            raws = pipe.execute()
        return [_decode(raw) for raw in raws if raw]

    def count_by_status(self) -> dict[str, int]:
        with self.r.pipeline(transaction=False) as pipe:
            for s in STATUSES:
                pipe.zcard(keys.jobs_status(s))
            counts = pipe.execute()
        return {s: int(c) for s, c in zip(STATUSES, counts, strict=True)}

    # ------------------------------------------------------------------ events
    def append_event(self, job_id: str, level: str, message: str, data: dict[str, Any] | None = None) -> int | None:
        """Append to the job's event log; returns its ``seq`` (1, 2, ...) or None if no such job."""
        seq = self._append_in(self.r, job_id, level, message, data)
        return None if int(seq) < 0 else int(seq)

    def _append_in(self, client: Any, job_id: str, level: str, message: str, data: dict[str, Any] | None) -> Any:
        if level not in LEVELS:
            level = "info"
        payload = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False, default=str)
        return self._append(
            keys=[keys.job(job_id), keys.job_events(job_id), keys.job_updates(job_id), keys.WEBHOOK_OUTBOX],
            args=[utcnow(), level, message, payload, event_name(data) or "", job_id],
            client=client,
        )

    def events(self, job_id: str, after_seq: int = 0, *, limit: int | None = None) -> Records:
        """Events with ``seq > after_seq``, oldest first."""
        entries = self.r.xrange(keys.job_events(job_id), f"{int(after_seq) + 1}-0", "+", count=limit)
        return [_event(eid, fields) for eid, fields in entries]

    def wait_events(self, job_id: str, after_seq: int, block_ms: int = 1000) -> Records:
        """Block up to ``block_ms`` for events after ``after_seq`` (used by the SSE stream)."""
        stream = keys.job_events(job_id)
        got = self.r.xread({stream: f"{int(after_seq)}-0"}, block=block_ms, count=500)
        out: Records = []
        for _name, entries in got or []:
            out.extend(_event(eid, fields) for eid, fields in entries)
        return out

    # ------------------------------------------------------------------ transitions
    def _update(self, job_id: str, fn: Callable[[dict[str, Any]], _Change | None]) -> bool:
        """Run ``fn`` on the current record inside WATCH/MULTI; apply its change. Returns whether
        anything was written (False: no such job, or ``fn`` declined, e.g. the job is terminal)."""
        key = keys.job(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = cast(dict[Any, Any], pipe.hgetall(key))
                    if not raw:
                        pipe.unwatch()
                        return False
                    rec = _decode(raw)
                    change = fn(rec)
                    if change is None:
                        pipe.unwatch()
                        return False
                    change.fields["updated_at"] = utcnow()
                    pipe.multi()
                    pipe.hset(key, mapping=_encode(change.fields))
                    if change.new_status and change.new_status != rec["status"]:
                        old, new, owner = rec["status"], change.new_status, rec["owner"]
                        pipe.zrem(keys.jobs_status(old), job_id)
                        pipe.zadd(keys.jobs_status(new), {job_id: 0})
                        pipe.zrem(keys.jobs_owner(owner, old), job_id)
                        pipe.zadd(keys.jobs_owner(owner, new), {job_id: 0})
                    for stage, cached, seconds in change.durations:
                        _observe(pipe, stage, cached, seconds)
                    # events of a transition land in the same MULTI: a reader that sees the new
                    # status also sees its event (the SSE stream relies on it)
                    for level, message, data in change.events:
                        self._append_in(pipe, job_id, level, message, data)
                    pipe.publish(keys.job_updates(job_id), change.fields.get("status", rec["status"]))
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        return True

    def mark_running(self, job_id: str, worker: str) -> bool:
        """queued (or running, when a job is re-delivered after a dead worker) -> running.
        Returns False when the job is terminal or missing: the worker must then not run it."""

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] not in (QUEUED, RUNNING):
                return None
            attempts = rec["attempts"] + 1
            return _Change(
                fields={
                    "status": RUNNING,
                    "worker": worker,
                    "attempts": attempts,
                    "started_at": rec["started_at"] or utcnow(),
                },
                new_status=RUNNING,
                events=[
                    (
                        "info",
                        f"running on {worker} (attempt {attempts})",
                        {"kind": "status", "status": RUNNING, "worker": worker, "attempt": attempts},
                    )
                ],
            )

        return self._update(job_id, fn)

    def requeue(self, job_id: str, reason: str, *, refund_attempt: bool = False) -> bool:
        """running -> queued (a retry after the worker died); progress and open stage are reset.
        ``refund_attempt``: the run does not count towards ``job_max_attempts`` (a worker that shut
        down and stopped the job itself)."""

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] != RUNNING:
                return None
            stages, _ = _close_stage(rec, "failed")
            fields: dict[str, Any] = {
                "status": QUEUED,
                "stage": None,
                "stages": stages,
                "worker": None,
                "progress": {"fraction": 0.0, "tokens_done": None, "tokens_total": None, "eta_s": None},
            }
            if refund_attempt:
                fields["attempts"] = max(0, rec["attempts"] - 1)
            return _Change(
                fields=fields,
                new_status=QUEUED,
                events=[("warning", f"requeued: {reason}", {"kind": "status", "status": QUEUED})],
            )

        return self._update(job_id, fn)

    def set_stage(self, job_id: str, stage: str, *, cached: bool = False) -> bool:
        """Start ``stage`` (closing the previous one as succeeded); only while running."""

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] != RUNNING:
                return None
            stages, durations = _close_stage(rec, "succeeded")
            stages[stage] = {"status": "running", "started_at": utcnow(), "finished_at": None, "cached": cached}
            msg = f"stage {stage} started" + (" (served from cache)" if cached else "")
            return _Change(
                fields={
                    "stage": stage,
                    "stages": stages,
                    "progress": {"fraction": 0.0, "tokens_done": None, "tokens_total": None, "eta_s": None},
                },
                durations=durations,
                events=[("info", msg, {"kind": "stage", "stage": stage, "cached": cached})],
            )

        return self._update(job_id, fn)

    def set_progress(
        self,
        job_id: str,
        fraction: float,
        tokens_done: int | None = None,
        tokens_total: int | None = None,
    ) -> bool:
        """Progress of the current stage in [0, 1]; the ETA (seconds left in the stage) is
        extrapolated from the time since the stage started."""
        fraction = 0.0 if not math.isfinite(fraction) else min(1.0, max(0.0, float(fraction)))

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] != RUNNING:
                return None
            eta = None
            current = rec["stages"].get(rec["stage"] or "", {})
            started = parse_time(current.get("started_at")) or parse_time(rec["started_at"])
            if started is not None and fraction > 0:
                elapsed = max(0.0, time.time() - started)
                eta = round(elapsed * (1.0 - fraction) / fraction, 1)
            return _Change(
                fields={
                    "progress": {
                        "fraction": round(fraction, 6),
                        "tokens_done": tokens_done,
                        "tokens_total": tokens_total,
                        "eta_s": eta,
                    }
                }
            )

        return self._update(job_id, fn)

    def succeed(self, job_id: str, result: JobResult | dict[str, Any]) -> bool:
        """running (or queued) -> succeeded with ``result`` (metrics, sweep results, artifacts), stored
        as a ``contract.results.JobResult`` (a dict is validated against it first)."""
        typed = result if isinstance(result, JobResult) else JobResult.model_validate(result)
        stored = typed.to_json()

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] in TERMINAL_STATUSES:
                return None
            stages, durations = _close_stage(rec, "succeeded")
            progress = dict(rec["progress"] or {})
            progress.update(fraction=1.0, eta_s=0.0)
            return _Change(
                fields={
                    "status": SUCCEEDED,
                    "stages": stages,
                    "result": stored,
                    "progress": progress,
                    "finished_at": utcnow(),
                },
                new_status=SUCCEEDED,
                durations=durations,
                events=[("info", "job succeeded", {"kind": "status", "status": SUCCEEDED})],
            )

        return self._update(job_id, fn)

    def fail(self, job_id: str, code: str, message: str, result: dict[str, Any] | None = None) -> bool:
        """queued|running -> failed with ``error {code, message}``; ``result`` keeps what the job did
        find (the search trials of an ``objective_not_met`` job)."""

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] in TERMINAL_STATUSES:
                return None
            stages, durations = _close_stage(rec, "failed")
            fields: dict[str, Any] = {
                "status": FAILED,
                "stages": stages,
                "error": {"code": code, "message": message},
                "finished_at": utcnow(),
            }
            if result is not None:
                fields["result"] = result
            return _Change(
                fields=fields,
                new_status=FAILED,
                durations=durations,
                events=[("error", f"job failed: {message}", {"kind": "status", "status": FAILED, "code": code})],
            )

        return self._update(job_id, fn)

    def request_cancel(self, job_id: str) -> str | None:
        """Set the cancel flag on a non-terminal job; returns the job's status (None: no such job).
        Removing a still-queued job from the queue is ``contract.store.queue.cancel_job``'s part."""

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] in TERMINAL_STATUSES or rec["cancel_requested"]:
                return None
            return _Change(
                fields={"cancel_requested": True},
                events=[("warning", "cancel requested", {"kind": "cancel"})],
            )

        self._update(job_id, fn)
        return self.status(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        """True once a cancel was requested (or the job is already terminal, or gone)."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hget(keys.job(job_id), "cancel_requested")
            pipe.hget(keys.job(job_id), "status")
            flag, status = pipe.execute()
        if status is None:
            return True
        return bool(json.loads(_s(flag))) if flag is not None else False

    def mark_cancelled(self, job_id: str, *, only_if: Iterable[str] = (QUEUED, RUNNING)) -> bool:
        """-> cancelled, if the job's status is in ``only_if`` (the gateway passes ``("queued",)``)."""
        allowed = set(only_if) - TERMINAL_STATUSES

        def fn(rec: dict[str, Any]) -> _Change | None:
            if rec["status"] not in allowed:
                return None
            stages, durations = _close_stage(rec, "cancelled")
            return _Change(
                fields={
                    "status": CANCELLED,
                    "stages": stages,
                    "cancel_requested": True,
                    "finished_at": utcnow(),
                },
                new_status=CANCELLED,
                durations=durations,
                events=[("warning", "job cancelled", {"kind": "status", "status": CANCELLED})],
            )

        return self._update(job_id, fn)

    # ------------------------------------------------------------------ metrics
    def stage_histogram(self) -> dict[tuple[str, bool], dict[str, Any]]:
        """``{(stage, cached): {"buckets": [(le, cumulative count)...], "sum": s, "count": n}}``."""
        raw = self.r.hgetall(keys.stage_seconds())
        out: dict[tuple[str, bool], dict[str, Any]] = {}
        for k, v in raw.items():
            stage, cached_s, what = _s(k).split("|")
            entry = out.setdefault((stage, cached_s == "1"), {"le": {}, "sum": 0.0, "count": 0})
            if what == "sum":
                entry["sum"] = float(_s(v))
            elif what == "count":
                entry["count"] = int(float(_s(v)))
            else:
                entry["le"][what] = int(float(_s(v)))
        for entry in out.values():
            le = entry.pop("le")
            entry["buckets"] = [(str(b), le.get(str(b), 0)) for b in STAGE_BUCKETS] + [("+Inf", entry["count"])]
        return out


def _close_stage(rec: dict[str, Any], status: str) -> tuple[dict[str, Any], list[tuple[str, bool, float]]]:
    """Copy of ``rec['stages']`` with the running stage closed; plus its duration sample."""
    stages = {k: dict(v) for k, v in (rec["stages"] or {}).items()}
    durations: list[tuple[str, bool, float]] = []
    current = rec["stage"]
    if current and current in stages and stages[current].get("status") == "running":
        now = utcnow()
        stages[current]["status"] = status
        stages[current]["finished_at"] = now
        started = parse_time(stages[current].get("started_at"))
        if started is not None and status == "succeeded":
            durations.append((current, bool(stages[current].get("cached")), max(0.0, time.time() - started)))
    return stages, durations


def _observe(pipe: Any, stage: str, cached: bool, seconds: float) -> None:
    key = keys.stage_seconds()
    prefix = f"{stage}|{int(cached)}|"
    for bound in STAGE_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(key, prefix + str(bound), 1)
    pipe.hincrbyfloat(key, prefix + "sum", seconds)
    pipe.hincrby(key, prefix + "count", 1)


def _event(eid: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    f = {_s(k): _s(v) for k, v in fields.items()}
    return {
        "seq": int(_s(eid).split("-")[0]),
        "time": f.get("time"),
        "level": f.get("level", "info"),
        "message": f.get("message", ""),
        "data": json.loads(f.get("data", "null")),
    }
