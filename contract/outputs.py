"""Where a job's output goes, per owner, and who holds an ``output.path``.

Every job served through the gateway writes under its owner's own directory,
``<output_root>/<owner dir>/<output.path>``, so one owner can neither overwrite another's output
nor learn (through ``output_exists``) that it exists. ``owner dir`` is the owner name when that is
a plain path component, else ``owner-<sha256 prefix>``. (The in-process ``curvedit edit`` has no
owner and writes directly under its output root.)

Two jobs of one owner naming the same ``output.path`` would both run all their compute before the
second fails at export; instead the gateway reserves the path at submit (``reserve_output``): one
atomic Redis step that succeeds when no job holds it, or when the holder is no longer queued or
running (it failed or was cancelled, so the path is free again; a holder that succeeded left its
directory, which the ``output_exists`` check catches). A reservation whose job record was never
written (the gateway died between the two) lapses after ``RESERVATION_GRACE_S``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from contract import keys

RESERVATION_GRACE_S = 60
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

# KEYS[1]: the reservation; ARGV: job id, now (s), job-record key prefix, grace (s).
# Returns the id of the job that holds the path, or nil when the caller now holds it.
_RESERVE = """
local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, ' ', 1, true)
  local holder, since = held, 0
  if sep then
    holder = string.sub(held, 1, sep - 1)
    since = tonumber(string.sub(held, sep + 1)) or 0
  end
  if holder ~= ARGV[1] then
    local status = redis.call('HGET', ARGV[3] .. holder, 'status')
    if status then
      if status == '"queued"' or status == '"running"' then return holder end
    elseif tonumber(ARGV[2]) - since < tonumber(ARGV[4]) then
      return holder
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return false
"""


def owner_dir(owner: str) -> str:
    """The directory name of ``owner`` under the output root (one path component, never ``..``)."""
    if _PLAIN.fullmatch(owner) and owner not in (".", ".."):
        return owner
    return "owner-" + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def owner_output_root(output_root: Path, owner: str) -> Path:
    """``<output_root>/<owner dir>``: the root every ``output.path`` of ``owner`` is confined to."""
    return Path(output_root) / owner_dir(owner)


def reservation_key(owner: str, rel: str) -> str:
    """The Redis key of ``output.path`` ``rel`` of ``owner`` (spellings of one path share it)."""
    norm = os.path.normpath(rel.replace("\\", "/")).strip("/")
    return keys.output_reservation(owner_dir(owner), hashlib.sha256(norm.encode("utf-8", "surrogatepass")).hexdigest())


def reserve_output(r: Any, owner: str, rel: str, job_id: str, *, now: float | None = None) -> str | None:
    """Reserve ``output.path`` ``rel`` for ``job_id``; returns None when reserved, else the id of
    the queued or running job that holds it."""
    script = r.register_script(_RESERVE)
    holder = script(
        keys=[reservation_key(owner, rel)],
        args=[job_id, int(time.time() if now is None else now), keys.job(""), RESERVATION_GRACE_S],
    )
    if holder is None:
        return None
    return holder.decode() if isinstance(holder, bytes) else str(holder)
