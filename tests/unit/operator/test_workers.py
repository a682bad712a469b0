"""The per-target workers: serial per target, coalescing, errors reach the waiters and retry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from payflow.operator.reconciler import TargetKey, TargetWorkers

KEY: TargetKey = ("demo", "payflow")


async def test_requests_coalesce_and_never_overlap() -> None:
    running = 0
    calls: list[TargetKey] = []
    gate = asyncio.Event()
    first_started = asyncio.Event()

    async def reconcile(key: TargetKey) -> datetime | None:
        nonlocal running
        running += 1
        assert running == 1, "two reconciles of one target at once"
        calls.append(key)
        first_started.set()
        await gate.wait()
        running -= 1
        return None

    workers = TargetWorkers(reconcile, resync=3600)
    first = asyncio.create_task(workers.reconcile(KEY))
    await first_started.wait()
    waiters = [asyncio.create_task(workers.reconcile(KEY)) for _ in range(5)]
    gate.set()
    await asyncio.gather(first, *waiters)
    assert len(calls) == 2  # the first, and one more for the five that asked meanwhile
    await workers.close()


async def test_targets_run_in_parallel() -> None:
    started: set[TargetKey] = set()
    both = asyncio.Event()

    async def reconcile(key: TargetKey) -> datetime | None:
        started.add(key)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 2)
        return None

    workers = TargetWorkers(reconcile, resync=3600)
    await asyncio.gather(workers.reconcile(("a", "x")), workers.reconcile(("b", "x")))
    await workers.close()


async def test_an_error_reaches_the_waiter_and_a_retry_follows() -> None:
    attempts = 0
    healed = asyncio.Event()

    async def reconcile(key: TargetKey) -> datetime | None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("API server away")
        healed.set()
        return None

    workers = TargetWorkers(reconcile, resync=3600, max_backoff=0.05)
    with pytest.raises(RuntimeError, match="API server away"):
        await workers.reconcile(KEY)
    await asyncio.wait_for(healed.wait(), 2)  # retried by itself
    await workers.close()


async def test_a_target_is_looked_at_again_at_its_next_expiry() -> None:
    woke = asyncio.Event()
    calls = 0

    async def reconcile(key: TargetKey) -> datetime | None:
        nonlocal calls
        calls += 1
        if calls > 1:
            woke.set()
            return None
        return datetime.now(UTC) + timedelta(milliseconds=50)

    workers = TargetWorkers(reconcile, resync=3600)
    await workers.reconcile(KEY)
    await asyncio.wait_for(woke.wait(), 2)
    await workers.close()


async def test_a_target_without_incidents_is_forgotten() -> None:
    workers: TargetWorkers

    async def reconcile(key: TargetKey) -> datetime | None:
        workers.forget(key)  # what the reconciler does when no incident is left
        return None

    workers = TargetWorkers(reconcile, resync=0.01)
    workers.poke(KEY)
    task = workers._states[KEY].task
    assert task is not None
    await task  # the worker drops the target's state once its last reconcile is done
    assert KEY not in workers._states
    await workers.close()
