"""The gateway's read side of the job store over ``redis.asyncio``: one record, a page of an
owner's records, events after a sequence number. No request thread is held while Redis answers.

The layout and the decoding are the job store's (``contract.store.jobs``); writes (create,
cancel, worker transitions) stay there. A stored record that cannot be decoded or does not fit
the API's ``EditJob`` shape (garbage written into the hash, a lone surrogate stored before the
gateway rejected them) raises ``CorruptRecord`` from ``get`` and is left out of ``list`` pages
(its id reported separately), so one bad record never breaks an owner's listing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError

from contract import keys
from contract.store.jobs import STATUSES, _decode, _event, utcnow
from service.json_text import find_surrogate
from service.schemas.jobs import EditJob

log = logging.getLogger(__name__)

Record = dict[str, Any]
Records = list[Record]


class CorruptRecord(ValueError):
    """A stored job record that cannot be read back; ``reason`` says which part and why."""

    def __init__(self, job_id: str, reason: str, owner: str | None = None) -> None:
        super().__init__(f"job {job_id}: stored record is unreadable ({reason})")
        self.job_id = job_id
        self.reason = reason
        self.owner = owner  # best effort: None when even the owner field is unreadable


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def decode_record(job_id: str, raw: dict[Any, Any]) -> Record:
    """A stored hash -> the API record; raises ``CorruptRecord`` naming the failing field."""
    try:
        rec = _decode(raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CorruptRecord(job_id, _undecodable(raw) or type(exc).__name__, _owner_of(raw)) from None
    try:
        EditJob.model_validate(rec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "record"
        raise CorruptRecord(job_id, f"field {where!r}: {first.get('msg', 'invalid')}", _owner_of(raw)) from None
    bad = find_surrogate(rec)
    if bad is not None:
        raise CorruptRecord(job_id, f"field {bad!r} holds a lone UTF-16 surrogate", _owner_of(raw))
    return rec


def _owner_of(raw: dict[Any, Any]) -> str | None:
    value = raw.get(b"owner", raw.get("owner"))
    try:
        owner = json.loads(value.decode() if isinstance(value, bytes) else value) if value is not None else None
    except (ValueError, TypeError):
        return None
    return owner if isinstance(owner, str) else None


def _undecodable(raw: dict[Any, Any]) -> str | None:
    for k, v in raw.items():
        try:
            json.loads(v.decode() if isinstance(v, bytes) else v)
        except (ValueError, TypeError) as exc:
            return f"field {_text(k)!r} is not JSON: {type(exc).__name__}"
    return None


class JobReader:
    """Async reads of job records and events (``redis.asyncio`` client, bytes or str responses)."""

    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r

    async def get(self, job_id: str) -> Record | None:
        """The record, None when there is none; ``CorruptRecord`` when it cannot be read."""
        raw = await self.r.hgetall(keys.job(job_id))  # type: ignore[misc]
        return decode_record(job_id, raw) if raw else None

    async def list(
        self, owner: str, *, status: str | None = None, cursor: str | None = None, limit: int = 20
    ) -> tuple[Records, list[str], str | None]:
        """One owner's jobs, newest first: ``(records, unreadable ids, next_cursor)``. Unreadable
        records count toward the page (so paging always advances) but are not in ``records``."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        limit = max(1, min(int(limit), 1000))
        index = keys.jobs_owner(owner, status)
        top = f"({cursor}" if cursor else "+"
        ids = [_text(i) for i in await self.r.zrevrangebylex(index, top, "-", start=0, num=limit + 1)]
        more = len(ids) > limit
        ids = ids[:limit]
        async with self.r.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(keys.job(i))
            raws = await pipe.execute()
        records: Records = []
        unreadable: list[str] = []
        for job_id, raw in zip(ids, raws, strict=True):
            if not raw:
                continue  # deleted between the index read and the fetch
            try:
                records.append(decode_record(job_id, raw))
            except CorruptRecord as exc:
                log.warning("listing %s: %s", owner, exc)
                unreadable.append(job_id)
        return records, unreadable, (ids[-1] if more and ids else None)

    async def events(self, job_id: str, after_seq: int = 0, *, limit: int | None = None) -> Records:
        """Events with ``seq > after_seq``, oldest first; an entry that cannot be decoded is
        replaced by a warning event with the same ``seq`` (the sequence stays gap-free)."""
        entries = await self.r.xrange(keys.job_events(job_id), f"{int(after_seq) + 1}-0", "+", count=limit)
        out: Records = []
        for eid, fields in entries:
            try:
                ev = _event(eid, fields)
                if find_surrogate(ev) is not None:
                    raise ValueError("lone surrogate")
            except (ValueError, TypeError) as exc:
                seq = int(_text(eid).split("-")[0])
                log.warning("job %s event %s is unreadable: %s", job_id, seq, type(exc).__name__)
                ev = {"seq": seq, "time": utcnow(), "level": "warning", "message": "unreadable event", "data": None}
            out.append(ev)
        return out
