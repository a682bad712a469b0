"""Recent API requests of this replica, for the rate, error ratio and latency of /api/stats."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from payflow.app.series import SeriesRecorder


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


def latency_bin(ms: float) -> int:
    if ms <= FLOOR_MS:
        return 0
    return math.ceil((math.log(ms) - _LOG_FLOOR) * _INV_LOG_GROWTH - 1e-9)


def bin_ms(index: int) -> float:
    return FLOOR_MS if index <= 0 else FLOOR_MS * GROWTH ** (index - 0.5)


def percentile(hist: dict[int, int], q: float) -> float | None:
    """Nearest-rank percentile of a histogram, as its bin's value (None when empty)."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        if seen >= rank:
            return bin_ms(i)
    return bin_ms(max(hist))  # pragma: no cover - unreachable with positive counts


@dataclass
class Second:
    """The requests that ended in one second (monotonic clock)."""

    t: int
    requests: int = 0
    errors: int = 0
    hist: dict[int, int] = field(default_factory=dict)


def summarize(seconds_: list[Second], now: float, seconds: int) -> WindowStats:
    """The window of the last ``seconds`` from per-second aggregates (``now``: monotonic)."""
    requests = errors = 0
    hist: dict[int, int] = {}
    for s in seconds_:
        if s.t >= now - seconds:
            requests += s.requests
            errors += s.errors
            for i, n in s.hist.items():
                hist[i] = hist.get(i, 0) + n
    p50, p95 = percentile(hist, 0.5), percentile(hist, 0.95)
    return WindowStats(
        seconds=seconds,
        requests=requests,
        rate_per_s=round(requests / seconds, 3),
        error_ratio=round(errors / requests, 4) if requests else 0.0,
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
        if not self._seconds or self._seconds[-1].t != t:
            self._seconds.append(Second(t))
            while self._seconds[0].t < t - self.horizon_s:
                self._seconds.popleft()
        current = self._seconds[-1]
        current.requests += 1
        if server_error:
            current.errors += 1
        i = latency_bin(duration_s * 1000.0)
        current.hist[i] = current.hist.get(i, 0) + 1
        self.series.add(duration_s, server_error)

    def stats(self, windows: tuple[int, ...] = (60, 300)) -> list[WindowStats]:
        now = time.monotonic()
        while self._seconds and self._seconds[0].t < now - self.horizon_s:
            self._seconds.popleft()
        seconds = list(self._seconds)
        return [summarize(seconds, now, w) for w in windows]
