"""The pure part of the load generator: what to send and when, and how to summarise it."""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    CREATE = "create"  # POST /api/transactions with an Idempotency-Key
    RETRY = "retry"  # the same POST again, with the same key: must replay, never duplicate
    LIST = "list"  # GET /api/transactions?limit=20
    STATS = "stats"  # GET /api/stats
    LOOKUP = "lookup"  # GET /api/transactions/{id} of a transaction created earlier


@dataclass(frozen=True)
class Mix:
    """The share of each kind of request; a realistic read-heavy payment API by default."""

    create: float = 0.35
    retry: float = 0.05
    list: float = 0.2
    stats: float = 0.15
    lookup: float = 0.25

    def __post_init__(self) -> None:
        shares = self.shares()
        if any(s < 0 for s in shares.values()) or not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9):
            raise ValueError(f"the mix must be non-negative shares that add up to 1, got {shares}")

    def shares(self) -> dict[Kind, float]:
        return {Kind(k): getattr(self, k) for k in ("create", "retry", "list", "stats", "lookup")}

    @classmethod
    def parse(cls, text: str) -> Mix:
        """``"create=0.5,list=0.5"``: kinds not named get 0."""
        values: dict[str, float] = dict.fromkeys(("create", "retry", "list", "stats", "lookup"), 0.0)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, share = part.partition("=")
            if name not in values:
                raise ValueError(f"unknown request kind {name!r}; kinds: {', '.join(values)}")
            values[name] = float(share)
        return cls(**values)


class Picker:
    """Draws request kinds according to a mix, from a seeded random generator."""

    def __init__(self, mix: Mix, rng: random.Random) -> None:
        self._kinds = list(mix.shares())
        self._cumulative: list[float] = []
        total = 0.0
        for share in mix.shares().values():
            total += share
            self._cumulative.append(total)
        self._rng = rng

    def pick(self) -> Kind:
        i = bisect.bisect_right(self._cumulative, self._rng.random() * self._cumulative[-1])
        return self._kinds[min(i, len(self._kinds) - 1)]


def arrivals(rate: float, duration: float, rng: random.Random) -> Iterator[float]:
    """Arrival times (seconds from the start) of a Poisson process of ``rate`` per second,
    up to ``duration``: exponential gaps, independent of how the server answers."""
    if rate <= 0 or duration <= 0:
        return
    t = rng.expovariate(rate)
    while t < duration:
        yield t
        t += rng.expovariate(rate)


CURRENCIES = (("USD", 2), ("EUR", 2), ("GBP", 2), ("JPY", 0))


def new_payment(rng: random.Random) -> dict[str, Any]:
    """A plausible payment: small amounts are common, large ones rare (log-normal)."""
    currency, exponent = CURRENCIES[rng.randrange(len(CURRENCIES))]
    major = min(5000.0, rng.lognormvariate(3.0, 1.0))
    amount = Decimal(str(round(major * (100 if currency == "JPY" else 1), exponent)))
    if amount <= 0:
        amount = Decimal(1).scaleb(-exponent)
    token = (
        "tok_"
        + ("decline" if rng.random() < 0.03 else "visa")
        + "_"
        + uuid.UUID(int=rng.getrandbits(128)).hex[:12]
    )
    return {
        "amount": f"{amount:.{exponent}f}",
        "currency": currency,
        "merchant_ref": f"merchant-{rng.randrange(1, 50):03d}",
        "customer_ref": f"customer-{rng.randrange(1, 5000):05d}",
        "card_token": token,
        "description": "loadgen order",
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, by nearest rank; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Tally:
    """What the generator saw, by kind: sent, succeeded (2xx), failed, latencies."""

    sent: dict[str, int] = field(default_factory=dict)
    succeeded: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    dropped: int = 0  # arrivals not sent because too many requests were already in flight (not in sent)

    def record(self, kind: Kind, status: int | None, seconds: float) -> None:
        ok = status is not None and 200 <= status < 300
        bucket = self.succeeded if ok else self.failed
        bucket[kind] = bucket.get(kind, 0) + 1
        label = str(status) if status is not None else "error"
        self.statuses[label] = self.statuses.get(label, 0) + 1
        self.latencies.append(seconds)

    def summary(self, elapsed: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        sent = sum(self.sent.values())
        return {
            "elapsed_s": round(elapsed, 3),
            "arrivals": sent + self.dropped,
            "sent": sent,
            "rate_per_s": round(sent / elapsed, 2) if elapsed > 0 else 0.0,
            "succeeded": sum(self.succeeded.values()),
            "failed": sum(self.failed.values()),
            "dropped": self.dropped,
            "by_kind": {k: self.sent.get(k, 0) for k in sorted(self.sent)},
            "by_status": dict(sorted(self.statuses.items())),
            "latency_ms": {
                "p50": round(percentile(lat, 0.50) * 1000, 1) if lat else None,
                "p95": round(percentile(lat, 0.95) * 1000, 1) if lat else None,
                "p99": round(percentile(lat, 0.99) * 1000, 1) if lat else None,
            },
        }
