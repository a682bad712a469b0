"""The load generator's plan: Poisson arrivals, the request mix, plausible payments."""

from __future__ import annotations

import itertools
import random
import statistics
from decimal import Decimal

import pytest

from payflow.loadgen.model import Kind, Mix, Picker, Tally, arrivals, new_payment, percentile


def test_arrivals_are_poisson_at_the_set_rate() -> None:
    times = list(arrivals(rate=50, duration=600, rng=random.Random(7)))
    assert len(times) == pytest.approx(50 * 600, rel=0.02)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Exponential gaps: mean 1/rate and a coefficient of variation of 1 (not a fixed tick).
    assert statistics.fmean(gaps) == pytest.approx(1 / 50, rel=0.02)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.03)
    assert times == sorted(times)
    assert times[-1] < 600


def test_no_rate_or_no_time_means_no_arrival() -> None:
    assert list(arrivals(0, 10, random.Random(1))) == []
    assert list(arrivals(10, 0, random.Random(1))) == []


def test_the_mix_is_honoured() -> None:
    picker = Picker(Mix(), random.Random(3))
    counts = {k: 0 for k in Kind}
    for _ in range(20000):
        counts[picker.pick()] += 1
    for kind, share in Mix().shares().items():
        assert counts[kind] / 20000 == pytest.approx(share, abs=0.015)


def test_mix_parsing() -> None:
    assert Mix.parse("create=0.5,list=0.5").shares()[Kind.CREATE] == 0.5
    assert Mix.parse("stats=1").shares()[Kind.LOOKUP] == 0.0
    with pytest.raises(ValueError, match="unknown request kind 'delete'"):
        Mix.parse("delete=1")
    with pytest.raises(ValueError, match="add up to 1"):
        Mix.parse("create=0.5")


def test_payments_respect_each_currency_minor_units() -> None:
    rng = random.Random(11)
    for _ in range(500):
        body = new_payment(rng)
        amount = Decimal(body["amount"])
        assert amount > 0
        exponent = 0 if body["currency"] == "JPY" else 2
        assert -amount.as_tuple().exponent == exponent  # type: ignore[operator]
        assert body["card_token"].startswith("tok_")
        assert not any(ch.isdigit() for ch in body["card_token"][:8])


def test_percentiles_by_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 0.5) == 50.0
    assert percentile(xs, 0.95) == 95.0
    assert percentile(xs, 1.0) == 100.0


def test_tally_summary() -> None:
    tally = Tally()
    tally.sent = {Kind.CREATE: 3, Kind.STATS: 1}
    tally.record(Kind.CREATE, 201, 0.010)
    tally.record(Kind.CREATE, 500, 0.020)
    tally.record(Kind.CREATE, None, 0.030)
    tally.record(Kind.STATS, 200, 0.040)
    s = tally.summary(elapsed=2.0)
    assert (s["arrivals"], s["sent"], s["succeeded"], s["failed"], s["rate_per_s"]) == (4, 4, 2, 2, 2.0)
    assert s["by_status"] == {"200": 1, "201": 1, "500": 1, "error": 1}
    assert s["latency_ms"]["p50"] == 20.0
