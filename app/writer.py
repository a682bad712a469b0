"""Group insert: the POSTs that arrive while the database is busy share their next statement.

Each new transaction goes to :meth:`TransactionWriter.insert`. At most ``max_statements`` insert
statements run at a time; a POST that arrives when that many are running waits, and the next
statement writes every POST waiting by then (up to ``max_batch``), in one database transaction
and one round trip. Nothing waits on a timer: alone, a POST is written at once, with the
one-row statement (``repository.INSERT_TRANSACTION``), exactly as without this class.

Under load this takes most of the per-statement work off each POST: the pool checkout, psycopg's
send and receive, PostgreSQL's parse, executor start and commit. What each POST gets back does not
change: its own row, created (201) or replayed (the key was taken: by an earlier request, another
replica, or an earlier POST of the same statement).

Waiting: a POST waits for its connection no longer than it would alone, the pool's timeout
(``PAYFLOW_DB_POOL_TIMEOUT_S``) from its arrival, queue included: a POST still queued at that
deadline fails with the pool's ``PoolTimeout`` (503), and a statement waits for its connection
only until the earliest deadline of the POSTs it carries.

Failures: a statement that fails because of the database (unreachable, pool exhausted, statement
timeout) fails every POST it carried with that same error, as each of them would have failed
alone. Any other failure of a shared statement (a row the database refuses, a deadlock or
serialization failure) is retried one POST at a time, so that each gets its own answer and no
valid POST fails because of another. Each statement inserts its rows in key order, so two
statements that share keys take their locks in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from payflow.app import metrics, repository
from payflow.app.repository import NewTransaction, Row

log = logging.getLogger("payflow.app.writer")

Outcome = tuple[Row, bool]  # the row, and True when this POST created it
# Errors that every POST of the statement would have met alone: not retried one by one.
SHARED_FAILURES: tuple[type[BaseException], ...] = (PoolTimeout, psycopg.OperationalError)


def assign(keys: list[str], created: dict[str, Row], existing: dict[str, Row]) -> list[Outcome | None]:
    """Each entry's outcome, in order: the first entry of a created key created it; any other
    entry of a key replays the row that holds it (``created`` or ``existing``); None when no row
    holds the key (deleted between the two statements)."""
    claimed: set[str] = set()
    out: list[Outcome | None] = []
    for key in keys:
        if key in created and key not in claimed:
            claimed.add(key)
            out.append((created[key], True))
        else:
            row = created.get(key) or existing.get(key)
            out.append(None if row is None else (row, False))
    return out


class _Waiting:
    """A POST waiting for a statement: its transaction, its future, its deadline (loop time)
    and the timer that fails it if it is still queued then."""

    __slots__ = ("deadline", "future", "new", "timer")

    def __init__(self, new: NewTransaction, future: asyncio.Future[Outcome], deadline: float) -> None:
        self.new = new
        self.future = future
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None


@dataclass
class TransactionWriter:
    pool: AsyncConnectionPool[Any]
    max_batch: int = 64
    max_statements: int = 2
    _queue: list[_Waiting] = field(default_factory=list)
    _running: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def insert(self, new: NewTransaction) -> Outcome:
        """Create the transaction, or return the row that already holds its Idempotency-Key
        (the boolean is True when this call created it); raises what the database raised."""
        if not self._running and not self._queue:
            # Nothing in flight: write it from the caller's task, one hop less than a batch task.
            self._running += 1
            try:
                metrics.WRITE_BATCH.observe(1)
                return await self._insert_one(new)
            finally:
                self._running -= 1
                self._dispatch()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(new, loop.create_future(), loop.time() + self.pool.timeout)
        self._queue.append(waiting)
        self._dispatch()
        if not waiting.future.done() and waiting in self._queue:
            waiting.timer = loop.call_at(waiting.deadline, self._expire, waiting)
        return await waiting.future

    def _expire(self, waiting: _Waiting) -> None:
        """The deadline of a POST still queued: it fails as it would have waiting for the pool."""
        if waiting in self._queue:
            self._queue.remove(waiting)
            if not waiting.future.done():
                waiting.future.set_exception(
                    PoolTimeout(f"couldn't get a connection after {self.pool.timeout:.2f} sec")
                )

    def _dispatch(self) -> None:
        while self._queue and self._running < self.max_statements:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            for waiting in batch:
                if waiting.timer is not None:
                    waiting.timer.cancel()
            self._running += 1
            task = asyncio.create_task(self._run(batch), name="payflow-write")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            metrics.WRITE_BATCH.observe(len(batch))
            wait_s = max(0.0, min(w.deadline for w in batch) - asyncio.get_running_loop().time())
            if len(batch) == 1:
                await self._settle(batch[0].future, self._insert_one(batch[0].new, wait_s))
            else:
                await self._insert_many(batch, wait_s)
        finally:
            for waiting in batch:  # only if this task was cancelled (shutdown)
                if not waiting.future.done():
                    waiting.future.cancel()
            self._running -= 1
            self._dispatch()

    async def _insert_one(self, new: NewTransaction, wait_s: float | None = None) -> Outcome:
        async with self.pool.connection(timeout=wait_s) as conn:
            return await repository.insert_transaction(conn, new)

    async def _insert_many(self, batch: list[_Waiting], wait_s: float) -> None:
        news = [w.new for w in batch]
        keys = [new.idempotency_key for new in news]
        try:
            async with self.pool.connection(timeout=wait_s) as conn:
                created = await repository.insert_transactions(conn, news)
                missing = sorted({k for k in keys if k not in created})
                existing = await repository.transactions_by_key(conn, missing) if missing else {}
        except psycopg.Error as exc:  # PoolTimeout is one too
            if isinstance(exc, SHARED_FAILURES) and not isinstance(exc, psycopg.errors.TransactionRollback):
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                return
            log.warning(
                "a group insert failed; writing its %d transactions one by one: %s",
                len(batch),
                exc,
                extra={"error": type(exc).__name__},
            )
            for waiting in batch:
                await self._settle(waiting.future, self._insert_one(waiting.new))
            return
        for waiting, outcome in zip(batch, assign(keys, created, existing), strict=True):
            if waiting.future.done():
                continue
            if outcome is None:
                waiting.future.set_exception(LookupError(waiting.new.idempotency_key))
            else:
                waiting.future.set_result(outcome)

    @staticmethod
    async def _settle(future: asyncio.Future[Outcome], work: Awaitable[Outcome]) -> None:
        """Await ``work`` and hand its result or error to ``future`` (whose caller may be gone)."""
        try:
            result = await work
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)
