"""Caches: Redis (shared by the replicas) and the in-process response cache of recent lookups.

Redis is only a cache: every failure is counted, logged once, and answered as a miss; after a
failure the cache leaves Redis alone for ``retry_after`` seconds, so an outage costs no latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from payflow.app import metrics

log = logging.getLogger("payflow.app.cache")


class RedisCache:
    def __init__(self, url: str, timeout: float, retry_after: float) -> None:
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            health_check_interval=0,
            max_connections=64,
        )
        self._retry_after = retry_after
        self._down_until = 0.0
        self.last_error: str | None = None

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        if self.last_error is None:
            log.warning(
                "redis unavailable, serving without the cache: %s", exc, extra={"error": "redis_down"}
            )
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down_until = time.monotonic() + self._retry_after
        metrics.CACHE_ERRORS.labels("redis").inc()
        metrics.REDIS_UP.set(0)

    def _ok(self) -> None:
        if self.last_error is not None:
            log.info("redis reachable again", extra={"event": "redis_up"})
        self.last_error = None
        metrics.REDIS_UP.set(1)

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            metrics.CACHE_MISSES.labels("redis").inc()
            return None
        try:
            raw = await self._client.get(key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            metrics.CACHE_MISSES.labels("redis").inc()
            return None
        self._ok()
        value = raw.encode() if isinstance(raw, str) else raw
        (metrics.CACHE_HITS if value is not None else metrics.CACHE_MISSES).labels("redis").inc()
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if not self.available:
            return
        try:
            await self._client.set(key, value, px=max(1, int(ttl_seconds * 1000)))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._ok()

    async def ping(self) -> str | None:
        """None when Redis answers, else the reason (for /ready)."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return f"{type(exc).__name__}: {exc}"
        self._ok()
        return None

    async def close(self) -> None:
        await self._client.aclose()


class ResponseCache:
    """Recent lookups kept in process memory, evicted least-recently-used beyond
    ``max_entries``. The OOM fault is this cache's bug: eviction stops, and each request (and
    each second) leaves bytes behind that nothing ever frees."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.evicting = True
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._leaked: list[bytes] = []
        self.bytes = 0
        self.leaked_bytes = 0

    def get(self, key: str) -> bytes | None:
        value = self._items.get(key)
        if value is None:
            metrics.CACHE_MISSES.labels("response").inc()
            return None
        self._items.move_to_end(key)
        metrics.CACHE_HITS.labels("response").inc()
        return value

    def put(self, key: str, value: bytes) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._items[key] = value
        self.bytes += len(value)
        self._evict()

    def leak(self, nbytes: int) -> None:
        """Keep ``nbytes`` of response data that is never evicted (the OOM fault). The bytes
        are written, so they are resident memory, not just reserved address space."""
        blob = b"\xa5" * nbytes
        self._leaked.append(blob)
        self.leaked_bytes += nbytes

    def set_evicting(self, evicting: bool) -> None:
        self.evicting = evicting
        if evicting:
            self._leaked.clear()
            self.leaked_bytes = 0
            self._evict()

    def _evict(self) -> None:
        if not self.evicting:
            return
        while len(self._items) > self.max_entries:
            _, old = self._items.popitem(last=False)
            self.bytes -= len(old)

    @property
    def entries(self) -> int:
        return len(self._items) + len(self._leaked)

    @property
    def total_bytes(self) -> int:
        return self.bytes + self.leaked_bytes


class LocalCopy:
    """One value kept in process for a short time, with a lock for a single computation."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self._value: bytes | None = None
        self._until = 0.0

    def fresh(self) -> bytes | None:
        return self._value if time.monotonic() < self._until else None

    def stale(self, grace_s: float) -> bytes | None:
        """The value, expired at most ``grace_s`` ago: what waiting requests get while another
        one computes the next value (stale-while-revalidate), instead of queueing behind it."""
        return self._value if time.monotonic() < self._until + grace_s else None

    def store(self, value: bytes, ttl_s: float) -> None:
        self._value = value
        self._until = time.monotonic() + ttl_s
