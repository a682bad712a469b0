"""Where the request buckets of :mod:`payflow.app.series` live: Redis, with this process's memory as
the fallback.

Once a second the flusher drains the recorder and adds each bucket into a Redis hash
``payflow:<release>:series:v1:<start>`` (HINCRBY per field, in one pipeline, with a TTL). So the
buckets are shared by the replicas (a chart shows the service, not one pod) and survive a crash or
a rollout of the app (the OOM and panic faults restart it). The request hot path never waits for
Redis: it only increments the recorder's current bucket.

When Redis is down, the drained buckets stay in memory (``unsent``, sent when Redis is back, so the
shared series has no hole) and reads are answered from this process's own buckets (``memory``:
since its start, within the horizon), marked ``source: memory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from payflow.app.series import (
    HORIZON_S,
    Bucket,
    Buckets,
    SeriesRecorder,
    merge_into,
    prune,
    starts_between,
)

log = logging.getLogger("payflow.app.series")

FLUSH_INTERVAL_S = 1.0
KEY_TTL_S = HORIZON_S + 5 * 60  # a little longer than any query reaches back


class SeriesStore:
    def __init__(
        self,
        recorder: SeriesRecorder,
        redis_url: str,
        release: str,
        timeout_s: float,
        retry_after_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recorder = recorder
        self.release = release
        self._client = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
            max_connections=4,
        )
        self._retry_after = retry_after_s
        self._down_until = 0.0
        self._clock = clock
        self._lock = asyncio.Lock()  # a read never sees a batch both in Redis and in `unsent`
        self._task: asyncio.Task[None] | None = None
        self.memory: Buckets = {}  # every bucket this process drained, within the horizon
        self.unsent: Buckets = {}  # drained, not yet in Redis
        self.last_error: str | None = None

    def key(self, start: int) -> str:
        return f"payflow:{self.release}:series:v1:{start}"

    # --- Redis availability (the same back-off as the cache) ------------------------------------------

    @property
    def redis_available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        if self.last_error is None:
            log.warning("series: redis unavailable, keeping the buckets in memory: %s", exc)
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down_until = time.monotonic() + self._retry_after

    def _ok(self) -> None:
        if self.last_error is not None:
            log.info("series: redis reachable again, buckets shared again")
        self.last_error = None

    # --- writing --------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Drain the recorder into memory and (when it answers) into Redis."""
        async with self._lock:
            batch = self.recorder.drain()
            oldest = int(self._clock()) - KEY_TTL_S
            prune(merge_into(self.memory, batch), oldest)
            prune(merge_into(self.unsent, batch), oldest)
            if not self.unsent or not self.redis_available:
                return
            pipe = self._client.pipeline(transaction=True)
            for start, bucket in self.unsent.items():
                key = self.key(start)
                for field, value in bucket.to_fields().items():
                    if value:
                        pipe.hincrby(key, field, value)
                pipe.expire(key, KEY_TTL_S)
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                self._failed(exc)
                return
            self.unsent = {}
            self._ok()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush()
            except Exception:  # never let the flusher die: the charts would freeze silently
                log.exception("series: flush failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="series-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 1.0)  # the last second, on a graceful stop
        await self._client.aclose()

    # --- reading --------------------------------------------------------------------------------------

    async def buckets(self, oldest: float, newest: float) -> tuple[Buckets, str]:
        """The buckets from ``oldest`` to ``newest`` and where they came from: ``redis`` (every
        replica, plus what this one has not flushed yet) or ``memory`` (this process only)."""
        async with self._lock:
            local = merge_into({}, self.unsent, self.recorder.pending)
            if self.redis_available:
                starts = list(starts_between(oldest, newest))
                pipe = self._client.pipeline(transaction=False)
                for start in starts:
                    pipe.hgetall(self.key(start))
                try:
                    rows = await pipe.execute()
                except (RedisError, OSError) as exc:
                    self._failed(exc)
                else:
                    self._ok()
                    remote = {s: Bucket.from_fields(r) for s, r in zip(starts, rows, strict=True) if r}
                    return merge_into(remote, local), "redis"
            return merge_into({}, self.memory, self.recorder.pending), "memory"
