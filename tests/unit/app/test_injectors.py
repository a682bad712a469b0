from __future__ import annotations

import random
from pathlib import Path

import pytest

from payflow.app.cache import ResponseCache
from payflow.app.faults import injectors
from payflow.app.faults.watcher import backoff_delays


def test_latency_with_jitter_stays_in_bounds() -> None:
    rng = random.Random(1)
    values = [injectors.latency_seconds({"delayMs": 200, "jitterMs": 50}, rng) for _ in range(200)]
    assert min(values) >= 0.2
    assert max(values) <= 0.25
    assert injectors.latency_seconds({"delayMs": 100, "jitterMs": 0}, rng) == 0.1


def test_chance() -> None:
    rng = random.Random(2)
    assert not any(injectors.chance(0.0, rng) for _ in range(100))
    assert all(injectors.chance(1.0, rng) for _ in range(100))
    hits = sum(injectors.chance(0.3, rng) for _ in range(10000))
    assert 2800 < hits < 3200


def test_tick_probability() -> None:
    assert injectors.tick_probability(0, 1) == 0
    assert injectors.tick_probability(30, 1) == pytest.approx(1 / 30, rel=0.02)


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("max\n", None),
        ("536870912\n", 536870912),
        ("9223372036854771712", None),
        ("", None),
        (None, None),
        ("x", None),
    ],
)
def test_parse_memory_limit(text: str | None, limit: int | None) -> None:
    assert injectors.parse_memory_limit(text) == limit


def test_cgroup_limit_is_read_from_the_cgroup_dir(tmp_path: Path) -> None:
    assert injectors.cgroup_memory_limit(str(tmp_path)) is None
    (tmp_path / "memory.max").write_text("268435456\n")
    assert injectors.cgroup_memory_limit(str(tmp_path)) == 268435456


@pytest.mark.parametrize(
    ("cores", "cpus", "plan"),
    [(1.0, 2, (1, 1.0)), (0.5, 2, (1, 0.5)), (1.5, 2, (2, 0.75)), (4.0, 2, (2, 1.0)), (0.0, 2, (0, 0.0))],
)
def test_burn_plan_is_bounded_by_the_cpus(cores: float, cpus: int, plan: tuple[int, float]) -> None:
    assert injectors.burn_plan(cores, cpus) == plan


def test_response_cache_evicts_until_the_oom_fault_stops_it() -> None:
    cache = ResponseCache(max_entries=2)
    for i in range(5):
        cache.put(str(i), b"x" * 10)
    assert cache.entries == 2
    assert cache.get("0") is None
    assert cache.get("4") == b"x" * 10
    cache.set_evicting(False)
    for i in range(5, 10):
        cache.put(str(i), b"y" * 10)
    cache.leak(1000)
    assert cache.entries == 8
    assert cache.total_bytes == 7 * 10 + 1000
    cache.set_evicting(True)
    assert cache.entries == 2
    assert cache.total_bytes == 20


def test_backoff_is_capped() -> None:
    delay = backoff_delays(base=0.2, cap=5.0)
    values = [delay(n) for n in range(20)]
    assert all(0.2 <= v <= 5.0 for v in values)
