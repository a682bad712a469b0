"""Request time series for the dashboard's charts: per-bucket aggregates, pure and mergeable.

A bucket holds what a chart needs of the API requests that ended in ``[start, start + BASE_STEP_S)``
(wall-clock seconds): their count, their 5xx count and a latency histogram on log-spaced bins. Buckets
merge by adding counts, so the buckets of several replicas (or of several flushes) add up exactly, and
percentiles are read from the merged histogram (within one bin: at most ``GROWTH - 1`` relative error).

The hot path (:meth:`SeriesRecorder.add`) is a dict lookup and three integer increments; the I/O
(:mod:`payflow.app.series_store`) drains the recorder once a second into Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BASE_STEP_S = 5  # the resolution kept; a query's step is a multiple of it
HORIZON_S = 15 * 60  # what the dashboard shows; Redis keeps buckets a little longer (see series_store)
GROWTH = 1.1  # bin i (i >= 1) holds latencies in (GROWTH**(i-1), GROWTH**i] ms; bin 0 holds <= 1 ms
BINS = 160  # GROWTH**159 ms is about 1.1 h, beyond any request timeout (the last bin takes the rest)
_INV_LOG_GROWTH = 1.0 / math.log(GROWTH)


def latency_bin(duration_s: float) -> int:
    """The histogram bin of a request duration."""
    ms = duration_s * 1000.0
    if ms <= 1.0:
        return 0
    return min(BINS - 1, math.ceil(math.log(ms) * _INV_LOG_GROWTH - 1e-9))


def bin_value_ms(index: int) -> float:
    """What a bin stands for: the geometric middle of its bounds (bin 0: 1 ms)."""
    if index <= 0:
        return 1.0
    return float(GROWTH ** (index - 0.5))


class Bucket:
    """The aggregates of one bucket. Mutable on purpose: the hot path increments in place."""

    __slots__ = ("errors", "hist", "requests")

    def __init__(self, requests: int = 0, errors: int = 0, hist: dict[int, int] | None = None) -> None:
        self.requests = requests
        self.errors = errors
        self.hist: dict[int, int] = hist if hist is not None else {}

    def add(self, duration_s: float, server_error: bool) -> None:
        self.requests += 1
        if server_error:
            self.errors += 1
        i = latency_bin(duration_s)
        self.hist[i] = self.hist.get(i, 0) + 1

    def merge(self, other: Bucket) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for i, n in other.hist.items():
            self.hist[i] = self.hist.get(i, 0) + n

    def copy(self) -> Bucket:
        return Bucket(self.requests, self.errors, dict(self.hist))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bucket) and (self.requests, self.errors, self.hist) == (
            other.requests,
            other.errors,
            other.hist,
        )

    def __repr__(self) -> str:
        return f"Bucket(requests={self.requests}, errors={self.errors}, hist={self.hist})"

    # --- the Redis hash form: {"n": requests, "e": errors, "h<i>": count} --------------------------

    def to_fields(self) -> dict[str, int]:
        fields = {"n": self.requests, "e": self.errors}
        fields.update({f"h{i}": n for i, n in self.hist.items() if n})
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> Bucket:
        """The inverse of :meth:`to_fields`; unknown or malformed fields are skipped."""
        bucket = cls()
        for raw_key, raw_value in fields.items():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            try:
                value = int(raw_value)
            except (TypeError, ValueError):
                continue
            if key == "n":
                bucket.requests = value
            elif key == "e":
                bucket.errors = value
            elif key.startswith("h") and key[1:].isdigit() and int(key[1:]) < BINS:
                bucket.hist[int(key[1:])] = value
        return bucket


Buckets = dict[int, Bucket]  # bucket start (epoch seconds, a multiple of BASE_STEP_S) -> aggregates


def bucket_start(t: float, step: int = BASE_STEP_S) -> int:
    return int(t // step) * step


def merge_into(target: Buckets, *sources: Mapping[int, Bucket]) -> Buckets:
    """Add every bucket of ``sources`` into ``target`` (copies, never aliases); returns ``target``."""
    for source in sources:
        for start, bucket in source.items():
            have = target.get(start)
            if have is None:
                target[start] = bucket.copy()
            else:
                have.merge(bucket)
    return target


def prune(buckets: Buckets, oldest: int) -> Buckets:
    """Drop the buckets that start before ``oldest`` (in place); returns ``buckets``."""
    for start in [s for s in buckets if s < oldest]:
        del buckets[start]
    return buckets


def histogram_percentile(hist: Mapping[int, int], q: float, value: Callable[[int], float]) -> float | None:
    """The nearest-rank ``q`` percentile of a histogram (bin index to count), as ``value`` of its
    bin; None when the histogram is empty."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        if seen >= rank:
            return value(i)
    return value(max(hist))  # pragma: no cover - unreachable with positive counts


def percentile_ms(hist: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank ``q`` percentile of a histogram, as its bin's middle value."""
    return histogram_percentile(hist, q, bin_value_ms)


@dataclass(frozen=True)
class Point:
    t: int  # the bucket's start, epoch seconds
    requests: int
    rate_per_s: float
    error_ratio: float | None  # None without requests
    p50_ms: float | None
    p95_ms: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "t": self.t,
            "requests": self.requests,
            "rate_per_s": self.rate_per_s,
            "error_ratio": self.error_ratio,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }


def point(t: int, bucket: Bucket, seconds: float) -> Point:
    """One chart point: ``seconds`` is how long the bucket covers (less for the one still filling)."""
    n = bucket.requests
    p50 = percentile_ms(bucket.hist, 0.5)
    p95 = percentile_ms(bucket.hist, 0.95)
    return Point(
        t=t,
        requests=n,
        rate_per_s=round(n / max(seconds, 1.0), 3),
        error_ratio=round(bucket.errors / n, 4) if n else None,
        p50_ms=None if p50 is None else round(p50, 2),
        p95_ms=None if p95 is None else round(p95, 2),
    )


def validate_query(minutes: int, step: int) -> str | None:
    """Why a series query is refused, or None."""
    if step % BASE_STEP_S:
        return f"step must be a multiple of {BASE_STEP_S} seconds, got {step}"
    if minutes * 60 > HORIZON_S:
        return f"minutes must be at most {HORIZON_S // 60}, got {minutes}"
    if step > minutes * 60:
        return f"step ({step} s) must not exceed the window ({minutes} min)"
    return None


def series(buckets: Mapping[int, Bucket], now: float, minutes: int, step: int) -> list[Point]:
    """The points of the last ``minutes`` at ``step`` seconds (a multiple of BASE_STEP_S), oldest
    first, one per step even without requests (rate 0). The newest point covers the step still
    filling, and its rate divides by the seconds elapsed in it."""
    newest = bucket_start(now, step)
    first = newest - (minutes * 60 // step - 1) * step
    points = []
    for t in range(first, newest + step, step):
        merged = Bucket()
        for base in range(t, t + step, BASE_STEP_S):
            b = buckets.get(base)
            if b is not None:
                merged.merge(b)
        covered = min(float(step), now - t) if t == newest else float(step)
        points.append(point(t, merged, covered))
    return points


def starts_between(oldest: float, newest: float) -> Iterable[int]:
    """The bucket starts from the bucket of ``oldest`` to the bucket of ``newest``."""
    return range(bucket_start(oldest), bucket_start(newest) + BASE_STEP_S, BASE_STEP_S)


class SeriesRecorder:
    """This process's buckets not yet handed to the store (``pending``), kept in memory.

    Single-threaded by design: ``add`` runs on the event loop (the middleware), ``drain`` too (the
    flusher task), so no lock is needed and the hot path stays a few hundred nanoseconds."""

    __slots__ = ("_clock", "pending")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.pending: Buckets = {}

    def add(self, duration_s: float, server_error: bool) -> None:
        """The hot path: :meth:`Bucket.add` inlined (one call less per request)."""
        start = int(self._clock()) // BASE_STEP_S * BASE_STEP_S
        bucket = self.pending.get(start)
        if bucket is None:
            bucket = self.pending[start] = Bucket()
        bucket.requests += 1
        if server_error:
            bucket.errors += 1
        ms = duration_s * 1000.0
        i = 0 if ms <= 1.0 else min(BINS - 1, math.ceil(math.log(ms) * _INV_LOG_GROWTH - 1e-9))
        hist = bucket.hist
        hist[i] = hist.get(i, 0) + 1

    def drain(self) -> Buckets:
        """What was recorded since the last drain (the recorder starts empty again)."""
        drained, self.pending = self.pending, {}
        return drained
