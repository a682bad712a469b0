"""Recent API requests of this replica, for the rate, error ratio and latency of /api/stats."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from payflow.app.series import Bucket, SeriesRecorder, histogram_percentile


@dataclass(frozen=True)
class WindowStats:
    seconds: int
    requests: int
    rate_per_s: float
    error_ratio: float
    p50_ms: float | None
    p95_ms: float | None


# Latency histogram of the window: bin i >= 1 holds (FLOOR_MS * GROWTH**(i-1), FLOOR_MS * GROWTH**i],
# bin 0 everything up to FLOOR_MS; a percentile is read as its bin's geometric middle, so within
# about 2.5 % of the exact value (finer than the dashboard series' bins, and below a millisecond).
FLOOR_MS = 0.01
GROWTH = 1.05
_INV_LOG_GROWTH = 1.0 / math.log(GROWTH)
_LOG_FLOOR = math.log(FLOOR_MS)

Second = tuple[int, Bucket]  # the requests that ended in one second of the monotonic clock


def latency_bin(ms: float) -> int:
    if ms <= FLOOR_MS:
        return 0
    return math.ceil((math.log(ms) - _LOG_FLOOR) * _INV_LOG_GROWTH - 1e-9)


def bin_ms(index: int) -> float:
    return FLOOR_MS if index <= 0 else FLOOR_MS * GROWTH ** (index - 0.5)


def percentile(hist: dict[int, int], q: float) -> float | None:
    """Nearest-rank percentile of a window histogram, in ms (None when empty)."""
    return histogram_percentile(hist, q, bin_ms)


def summarize(seconds_: list[Second], now: float, seconds: int) -> WindowStats:
    """The window of the last ``seconds`` from per-second aggregates (``now``: monotonic)."""
    total = Bucket()
    for t, bucket in seconds_:
        if t >= now - seconds:
            total.merge(bucket)
    n = total.requests
    p50, p95 = percentile(total.hist, 0.5), percentile(total.hist, 0.95)
    return WindowStats(
        seconds=seconds,
        requests=n,
        rate_per_s=round(n / seconds, 3),
        error_ratio=round(total.errors / n, 4) if n else 0.0,
        p50_ms=None if p50 is None else round(p50, 2),
        p95_ms=None if p95 is None else round(p95, 2),
    )


class RequestWindow:
    """The last ``horizon_s`` of API requests for /api/stats, one aggregate a second (so that
    /api/stats costs the same at 10 or 10,000 requests a second); each request also goes into
    ``series`` (the dashboard's time buckets, flushed to Redis by :mod:`payflow.app.series_store`)."""

    def __init__(self, horizon_s: int = 300, series: SeriesRecorder | None = None) -> None:
        self.horizon_s = horizon_s
        self._seconds: deque[Second] = deque()
        self.series = series if series is not None else SeriesRecorder()

    def add(self, duration_s: float, server_error: bool) -> None:
        t = int(time.monotonic())
        if not self._seconds or self._seconds[-1][0] != t:
            self._seconds.append((t, Bucket()))
            while self._seconds[0][0] < t - self.horizon_s:
                self._seconds.popleft()
        bucket = self._seconds[-1][1]
        bucket.requests += 1
        if server_error:
            bucket.errors += 1
        i = latency_bin(duration_s * 1000.0)
        bucket.hist[i] = bucket.hist.get(i, 0) + 1
        self.series.add(duration_s, server_error)

    def stats(self, windows: tuple[int, ...] = (60, 300)) -> list[WindowStats]:
        now = time.monotonic()
        while self._seconds and self._seconds[0][0] < now - self.horizon_s:
            self._seconds.popleft()
        seconds = list(self._seconds)
        return [summarize(seconds, now, w) for w in windows]
