"""The group insert on real PostgreSQL: concurrent POSTs share statements, and each still gets
exactly its own outcome (created, replayed, or its own error)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from payflow.app import metrics, payments
from payflow.app.migrations import migrate
from payflow.app.repository import NewTransaction
from payflow.app.writer import TransactionWriter
from payflow.devstack.process import free_port


def _new(key: str, amount: str = "10.00", status: str = "authorized") -> NewTransaction:
    return NewTransaction(
        idempotency_key=key,
        request_hash=f"hash-{amount}",
        amount=Decimal(amount),
        currency="EUR",
        merchant_ref="m_writer",
        customer_ref="c_writer",
        card_token="tok_visa_4242",
        description=None,
        # a status outside the vocabulary stands for a row the database refuses (its CHECK)
        decision=payments.Decision(SimpleNamespace(value=status), None),  # type: ignore[arg-type]
    )


def _batches() -> tuple[float, float]:
    """(statements, transactions) written so far, from the app's own histogram."""
    samples = {s.name: s.value for m in metrics.WRITE_BATCH.collect() for s in m.samples}
    return samples["payflow_db_write_batch_size_count"], samples["payflow_db_write_batch_size_sum"]


@pytest.fixture
async def pool(postgres_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await migrate(conn)
    async with AsyncConnectionPool(
        postgres_url, min_size=2, max_size=4, kwargs={"autocommit": True}, open=False
    ) as p:
        await p.wait(timeout=30)
        yield p


def _rows(postgres_url: str, keys: list[str]) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, amount, status,"
            " (SELECT count(*) FROM transaction_events e WHERE e.transaction_id = t.id)"
            " FROM transactions t WHERE idempotency_key = ANY(%s)",
            (keys,),
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


async def test_concurrent_posts_share_statements_and_each_gets_its_row(
    pool: AsyncConnectionPool[Any], postgres_url: str
) -> None:
    writer = TransactionWriter(pool, max_statements=1)
    keys = [f"w-{uuid.uuid4().hex}" for _ in range(40)]
    statements0, written0 = _batches()
    outcomes = await asyncio.gather(*(writer.insert(_new(k, f"{i + 1}.00")) for i, k in enumerate(keys)))
    statements, written = _batches()
    assert written - written0 == 40
    assert statements - statements0 < 40  # some statements carried several POSTs
    for i, (key, (row, created)) in enumerate(zip(keys, outcomes, strict=True)):
        assert created
        assert (row["idempotency_key"], row["amount"]) == (key, Decimal(f"{i + 1}.00"))
    rows = _rows(postgres_url, keys)
    assert len(rows) == 40
    assert {events for _, _, events in rows.values()} == {2}  # pending and the decision, each


async def test_one_key_in_one_statement_is_created_once_and_replayed(
    pool: AsyncConnectionPool[Any], postgres_url: str
) -> None:
    writer = TransactionWriter(pool, max_statements=1)
    key = f"w-{uuid.uuid4().hex}"
    first = f"w-{uuid.uuid4().hex}"  # goes alone; the twelve below queue behind it, together
    outcomes = await asyncio.gather(
        writer.insert(_new(first)),
        *(writer.insert(_new(key)) for _ in range(11)),
        writer.insert(_new(key, "99.00")),
    )
    same = outcomes[1:12]
    assert sum(created for _, created in same) == 1
    assert len({row["id"] for row, _ in same}) == 1
    other_row, other_created = outcomes[12]
    assert not other_created
    assert other_row["request_hash"] == "hash-10.00"  # the route answers 409: not this body's row
    assert _rows(postgres_url, [key])[key][0] == Decimal("10.00")


async def test_a_row_the_database_refuses_fails_alone(
    pool: AsyncConnectionPool[Any], postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer = TransactionWriter(pool, max_statements=1)
    keys = [f"w-{uuid.uuid4().hex}" for _ in range(8)]
    news = [_new(k, status="bogus" if i == 4 else "authorized") for i, k in enumerate(keys)]
    with caplog.at_level(logging.WARNING, logger="payflow.app.writer"):
        results = await asyncio.gather(*(writer.insert(n) for n in news), return_exceptions=True)
    assert isinstance(results[4], psycopg.errors.CheckViolation)
    assert all(isinstance(r, tuple) and r[1] for i, r in enumerate(results) if i != 4)
    assert any("one by one" in r.getMessage() for r in caplog.records)
    assert set(_rows(postgres_url, keys)) == set(keys) - {keys[4]}


async def test_without_a_database_every_post_gets_the_pool_error() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    async with AsyncConnectionPool(url, min_size=1, max_size=2, timeout=0.5, open=False) as dead:
        writer = TransactionWriter(dead)
        results = await asyncio.gather(
            *(writer.insert(_new(f"w-{i}")) for i in range(6)), return_exceptions=True
        )
    assert all(isinstance(r, PoolTimeout) for r in results), results


async def test_a_queued_post_waits_no_longer_than_the_pool_timeout(postgres_url: str) -> None:
    # Every connection taken (as the dbTimeout fault does): each POST must fail after the pool's
    # timeout from its own arrival, not after the statements queued ahead of it gave up in turn.
    async with AsyncConnectionPool(
        postgres_url, min_size=2, max_size=2, timeout=1.0, kwargs={"autocommit": True}, open=False
    ) as small:
        await small.wait(timeout=30)
        held = [await small.getconn(), await small.getconn()]
        writer = TransactionWriter(small, max_statements=2)
        loop = asyncio.get_running_loop()

        async def timed(i: int) -> tuple[object, float]:
            start = loop.time()
            try:
                return await writer.insert(_new(f"w-{uuid.uuid4().hex}-{i}")), loop.time() - start
            except PoolTimeout as exc:
                return exc, loop.time() - start

        results = await asyncio.gather(*(timed(i) for i in range(8)))
        for conn in held:
            await small.putconn(conn)
    assert all(isinstance(r, PoolTimeout) for r, _ in results), results
    waited = sorted(w for _, w in results)
    assert waited[-1] < 1.0 + 0.5, waited  # the timeout, plus scheduling slack; not 2 or 3 timeouts
