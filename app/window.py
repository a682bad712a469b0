"""Recent API requests of this replica, for the rate, error ratio and latency of /api/stats."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from payflow.app.series import SeriesRecorder


@dataclass(frozen=True)
class WindowStats:
    seconds: int
    requests: int
    rate_per_s: float
    error_ratio: float
    p50_ms: float | None
    p95_ms: float | None


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values) - 1e-9)))
    return sorted_values[rank - 1]


def summarize(samples: list[tuple[float, float, bool]], now: float, seconds: int) -> WindowStats:
    """``samples``: (monotonic time, duration s, was a 5xx)."""
    recent = [s for s in samples if s[0] >= now - seconds]
    durations = sorted(s[1] * 1000.0 for s in recent)
    errors = sum(1 for s in recent if s[2])
    n = len(recent)
    return WindowStats(
        seconds=seconds,
        requests=n,
        rate_per_s=round(n / seconds, 3),
        error_ratio=round(errors / n, 4) if n else 0.0,
        p50_ms=None if not n else round(percentile(durations, 0.5) or 0.0, 2),
        p95_ms=None if not n else round(percentile(durations, 0.95) or 0.0, 2),
    )


class RequestWindow:
    """The last ``horizon_s`` of samples for /api/stats; each request also goes into ``series``
    (the dashboard's time buckets, flushed to Redis by :mod:`payflow.app.series_store`)."""

    def __init__(
        self, horizon_s: int = 300, max_samples: int = 200_000, series: SeriesRecorder | None = None
    ) -> None:
        self.horizon_s = horizon_s
        self._samples: deque[tuple[float, float, bool]] = deque(maxlen=max_samples)
        self.series = series if series is not None else SeriesRecorder()

    def add(self, duration_s: float, server_error: bool) -> None:
        self._samples.append((time.monotonic(), duration_s, server_error))
        self.series.add(duration_s, server_error)

    def stats(self, windows: tuple[int, ...] = (60, 300)) -> list[WindowStats]:
        now = time.monotonic()
        while self._samples and self._samples[0][0] < now - self.horizon_s:
            self._samples.popleft()
        samples = list(self._samples)
        return [summarize(samples, now, w) for w in windows]
