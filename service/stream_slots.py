"""The limit on open event streams per API key (``Settings.max_streams_per_key``), shared by
every gateway process through Redis.

Each open stream holds a lease: a member of the owner's sorted set (``contract.keys.open_streams``)
scored with its expiry time (Redis ``TIME``, so gateway clocks do not matter). Acquiring first
drops expired leases, then adds one only while fewer than the limit remain — atomically, in one
Lua script. A stream renews its lease while it runs and removes it when it ends; a gateway that
dies without removing its leases frees them when they expire (``LEASE_S``), and the set itself
expires once no stream has touched it for two lease periods.
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from contract import keys

LEASE_S = 60

# KEYS: the owner's lease set. ARGV: token, limit, lease ms. Returns the number of leases held
# after the call (token included), or -1 when the limit is reached.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[2]) then return -1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
return held + 1
"""

# KEYS: the owner's lease set. ARGV: token, lease ms. Extends the lease if it is still held.
_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
  return 1
end
return 0
"""


class StreamSlots:
    """Acquire / renew / release one owner's open-stream leases."""

    def __init__(self, r: aioredis.Redis, limit: int, lease_s: float = LEASE_S) -> None:
        self.r = r
        self.limit = limit
        self.lease_ms = int(lease_s * 1000)
        self._acquire = r.register_script(_ACQUIRE_LUA)
        self._renew = r.register_script(_RENEW_LUA)

    async def acquire(self, owner: str) -> str | None:
        """A lease token, or None when ``owner`` already holds ``limit`` open streams."""
        token = os.urandom(12).hex()
        held = await self._acquire(keys=[keys.open_streams(owner)], args=[token, self.limit, self.lease_ms])
        return token if int(held) >= 0 else None

    async def renew(self, owner: str, token: str) -> None:
        await self._renew(keys=[keys.open_streams(owner)], args=[token, self.lease_ms])

    async def release(self, owner: str, token: str) -> None:
        await self.r.zrem(keys.open_streams(owner), token)

    async def held(self, owner: str) -> int:
        """Leases currently counted for ``owner`` (expired ones included until the next acquire)."""
        return int(await self.r.zcard(keys.open_streams(owner)))
