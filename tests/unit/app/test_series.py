"""The dashboard's time buckets: binning, merging, percentiles, roll-up, the Redis form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payflow.app import series
from payflow.app.series import BASE_STEP_S, GROWTH, Bucket, SeriesRecorder


def test_latency_bins_are_monotonic_and_bounded() -> None:
    assert series.latency_bin(0.0) == 0
    assert series.latency_bin(0.001) == 0
    assert series.latency_bin(0.0011) == 1
    durations = [i / 1000 for i in range(1, 20000, 7)]
    bins = [series.latency_bin(d) for d in durations]
    assert bins == sorted(bins)
    assert series.latency_bin(10**9) == series.BINS - 1


@given(st.floats(min_value=0.0011, max_value=600.0))
def test_a_bin_value_is_within_one_bin_of_the_duration(duration_s: float) -> None:
    ms = duration_s * 1000
    value = series.bin_value_ms(series.latency_bin(duration_s))
    assert ms / GROWTH <= value <= ms * GROWTH


def test_percentiles_from_a_histogram() -> None:
    b = Bucket()
    for _ in range(90):
        b.add(0.010, False)
    for _ in range(10):
        b.add(5.0, True)
    p50 = series.percentile_ms(b.hist, 0.5)
    p95 = series.percentile_ms(b.hist, 0.95)
    assert p50 is not None
    assert 10 / GROWTH <= p50 <= 10 * GROWTH
    assert p95 is not None
    assert 5000 / GROWTH <= p95 <= 5000 * GROWTH
    assert series.percentile_ms({}, 0.5) is None


bucket_st = st.builds(
    Bucket,
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.dictionaries(st.integers(0, series.BINS - 1), st.integers(1, 1000), max_size=8),
)


@given(bucket_st, bucket_st, bucket_st)
def test_merging_is_commutative_and_associative(a: Bucket, b: Bucket, c: Bucket) -> None:
    ab_c = a.copy()
    ab_c.merge(b)
    ab_c.merge(c)
    c_ba = c.copy()
    c_ba.merge(b)
    c_ba.merge(a)
    assert ab_c == c_ba


def test_merge_into_copies_and_adds() -> None:
    one = {0: Bucket(2, 1, {3: 2})}
    target = series.merge_into({}, one, {0: Bucket(1, 0, {3: 1, 4: 0}), 5: Bucket(1, 1, {9: 1})})
    assert target == {0: Bucket(3, 1, {3: 3, 4: 0}), 5: Bucket(1, 1, {9: 1})}
    assert one == {0: Bucket(2, 1, {3: 2})}  # the sources are not aliased
    assert series.prune(target, 5) == {5: Bucket(1, 1, {9: 1})}


@given(bucket_st)
def test_the_redis_form_round_trips(b: Bucket) -> None:
    fields = b.to_fields()
    encoded = {k.encode(): str(v).encode() for k, v in fields.items()}
    expected = Bucket(b.requests, b.errors, {i: n for i, n in b.hist.items() if n})
    assert Bucket.from_fields(encoded) == expected


def test_the_redis_form_skips_what_it_does_not_know() -> None:
    assert Bucket.from_fields({b"n": b"4", b"x": b"1", b"h999": b"1", b"h2": b"nan", b"e": b"1"}) == Bucket(
        4, 1, {}
    )


def test_the_recorder_buckets_by_wall_clock_and_drains() -> None:
    now = [1000.0]
    rec = SeriesRecorder(clock=lambda: now[0])
    rec.add(0.002, False)
    now[0] = 1004.9
    rec.add(0.002, True)
    now[0] = 1005.0
    rec.add(0.5, False)
    drained = rec.drain()
    assert sorted(drained) == [1000, 1005]
    assert (drained[1000].requests, drained[1000].errors) == (2, 1)
    assert drained[1005].requests == 1
    assert rec.drain() == {}


def test_series_has_one_point_per_step_and_rolls_buckets_up() -> None:
    now = 10_000.0 + 12.5  # 12.5 s into the step of 10 s starting at 10 010
    buckets = {
        9_990: Bucket(50, 5, {10: 50}),
        9_995: Bucket(50, 0, {20: 50}),
        10_010: Bucket(25, 25, {30: 25}),
    }
    points = series.series(buckets, now, minutes=1, step=10)
    assert [p.t for p in points] == list(range(9_960, 10_020, 10))
    by_t = {p.t: p for p in points}
    rolled = by_t[9_990]
    assert rolled.requests == 100
    assert rolled.rate_per_s == 10.0
    assert rolled.error_ratio == 0.05
    assert rolled.p50_ms == round(series.bin_value_ms(10), 2)
    assert rolled.p95_ms == round(series.bin_value_ms(20), 2)
    quiet = by_t[9_970]
    assert (quiet.requests, quiet.rate_per_s, quiet.error_ratio, quiet.p50_ms) == (0, 0.0, None, None)
    filling = points[-1]
    assert filling.t == 10_010
    assert filling.rate_per_s == 10.0  # 25 requests in the 2.5 s elapsed
    assert filling.error_ratio == 1.0


def test_the_series_covers_the_whole_window() -> None:
    points = series.series({}, 1_000_000.0, minutes=15, step=BASE_STEP_S)
    assert len(points) == 15 * 60 // BASE_STEP_S
    assert points[-1].t == 1_000_000


@pytest.mark.parametrize(
    ("minutes", "step", "reason"),
    [
        (15, 5, None),
        (15, 60, None),
        (15, 7, "multiple of 5"),
        (16, 5, "at most 15"),
        (1, 120, "must not exceed"),
    ],
)
def test_queries_are_validated(minutes: int, step: int, reason: str | None) -> None:
    got = series.validate_query(minutes, step)
    assert (got is None) if reason is None else (got is not None and reason in got)


@given(st.lists(st.tuples(st.floats(0, 120), st.booleans()), max_size=50))
def test_the_recorder_hot_path_agrees_with_bucket_add(requests: list[tuple[float, bool]]) -> None:
    rec = SeriesRecorder(clock=lambda: 42.0)
    expected = Bucket()
    for duration, error in requests:
        rec.add(duration, error)
        expected.add(duration, error)
    assert rec.drain() == ({40: expected} if requests else {})
