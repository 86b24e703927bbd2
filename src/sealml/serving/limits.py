"""Token-bucket rate limits: in process by default, in Redis when several replicas must
share one limit."""

from __future__ import annotations

import math
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..urls import is_loopback_host

_MAX_BUCKETS = 100_000

# KEYS[1] = bucket; ARGV = rate per second, burst, cost. Redis's clock, so every replica
# agrees on the time; the bucket expires once it would be full again.
_REDIS_BUCKET = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(saved[1]), tonumber(saved[2])
if tokens == nil then tokens, at = burst, t end
tokens = math.min(burst, tokens + math.max(0, t - at) * rate)
local allowed = 0
if tokens >= cost then tokens = tokens - cost; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class Limiter(Protocol):
    """Take *cost* tokens from bucket *key* (refilled at *rate* per second up to *burst*).

    Returns 0 when allowed, else the seconds to wait before retrying.
    """

    async def take(self, key: str, rate: float, burst: int, cost: float = 1.0) -> float: ...

    async def close(self) -> None: ...


def _wait(tokens: float, rate: float, cost: float) -> float:
    return max((cost - tokens) / rate, 0.001)


class MemoryLimiter:
    """Buckets in this process (each worker and replica has its own)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, key: str, rate: float, burst: int, cost: float = 1.0) -> float:
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens >= cost:
            self._store(key, tokens - cost, now)
            return 0.0
        self._store(key, tokens, now)
        return _wait(tokens, rate, cost)

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= _MAX_BUCKETS:
            # Many distinct sources: forget the oldest buckets (a forgotten bucket is full).
            for stale in list(self._buckets)[: _MAX_BUCKETS // 10]:
                del self._buckets[stale]
        self._buckets[key] = (tokens, now)

    async def close(self) -> None:
        self._buckets.clear()


class RedisLimiter:
    """Buckets in Redis, updated atomically by a script, shared by every replica."""

    def __init__(self, url: str, prefix: str = "sealml:bucket:") -> None:
        import redis.asyncio as redis

        self._client: Any = redis.Redis.from_url(url)
        self._script = self._client.register_script(_REDIS_BUCKET)
        self._prefix = prefix

    async def take(self, key: str, rate: float, burst: int, cost: float = 1.0) -> float:
        allowed, tokens = await self._script(keys=[self._prefix + key], args=[rate, burst, cost])
        if int(allowed):
            return 0.0
        left = float(tokens)
        return _wait(left if math.isfinite(left) else 0.0, rate, cost)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()


def check_redis_url(url: str) -> None:
    """Refuse a Redis reached over the network without TLS (``rediss://``): whoever sits
    on the path could empty or fill the shared buckets. A Unix socket or a loopback
    address may use plain ``redis://``."""
    parts = urlsplit(url)
    if parts.scheme in ("rediss", "unix"):
        return
    if parts.scheme != "redis":
        raise ConfigError(f"serve.redis_url: unknown scheme {parts.scheme!r}; use rediss://")
    if not is_loopback_host(parts.hostname or "localhost"):
        raise ConfigError(
            f"serve.redis_url: {parts.hostname} is reached over the network without TLS; "
            "use rediss://"
        )


def limiter_for(redis_url: str | None) -> Limiter:
    """The Redis limiter when *redis_url* is set, else the in-process one."""
    if redis_url:
        check_redis_url(redis_url)
        return RedisLimiter(redis_url)
    return MemoryLimiter()
