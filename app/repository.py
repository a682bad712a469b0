"""All SQL of the app: transactions, stats and fault transitions. Routes never hold SQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from payflow.app.faults.ground_truth import Observed, Recorded
from payflow.app.faults.state import Change, Transition, incidents_of
from payflow.app.payments import Decision

Row = dict[str, Any]
Conn = AsyncConnection[Any]

_COLUMNS = (
    "id, idempotency_key, request_hash, amount, currency, merchant_ref, customer_ref, card_token,"
    " description, status, decline_reason, created_at, decided_at"
)

_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))


@dataclass(frozen=True)
class NewTransaction:
    idempotency_key: str
    request_hash: str
    amount: Decimal
    currency: str
    merchant_ref: str
    customer_ref: str
    card_token: str
    description: str | None
    decision: Decision


# One round trip, one database transaction: the row (under its unique Idempotency-Key) and its two
# events. Public so that bench/api.py's fair baseline performs exactly these writes.
# Only constant SQL is interpolated; every value is a parameter.
_INSERT_INTO = """INSERT INTO transactions (idempotency_key, request_hash, amount, currency, merchant_ref,
                              customer_ref, card_token, description, status, decline_reason, decided_at)"""

# What follows the new rows in both inserts: a replayed key writes nothing; each new row gets
# its two events (pending, then the decision) in the same statement, and comes back.
_THEN_EVENTS = f"""ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING {_COLUMNS}
), events AS (
    INSERT INTO transaction_events (transaction_id, status, reason, at)
    SELECT id, 'pending', NULL, created_at FROM tx
    UNION ALL
    SELECT id, status, decline_reason, decided_at FROM tx
)
SELECT {_COLUMNS} FROM tx
"""  # noqa: S608

INSERT_TRANSACTION = f"""
WITH tx AS (
    {_INSERT_INTO}
    VALUES (%(key)s, %(hash)s, %(amount)s, %(currency)s, %(merchant)s, %(customer)s, %(token)s,
            %(description)s, %(status)s, %(reason)s, clock_timestamp())
    {_THEN_EVENTS}"""


# The same writes for several transactions in one statement (see payflow.app.writer): the rows
# come as one array per column, so the statement's text, and its prepared plan, fit any count.
INSERT_TRANSACTIONS = f"""
WITH input AS (
    SELECT * FROM unnest(%(keys)s::text[], %(hashes)s::text[], %(amounts)s::numeric[],
                         %(currencies)s::text[], %(merchants)s::text[], %(customers)s::text[],
                         %(tokens)s::text[], %(descriptions)s::text[], %(statuses)s::text[],
                         %(reasons)s::text[])
        WITH ORDINALITY AS i (key, hash, amount, currency, merchant, customer, token, description,
                              status, reason, n)
), tx AS (
    {_INSERT_INTO}
    SELECT key, hash, amount, currency, merchant, customer, token, description, status, reason,
           clock_timestamp()
    FROM input ORDER BY key, n  -- key order: concurrent statements lock shared keys alike
    {_THEN_EVENTS}"""  # noqa: S608


async def insert_transactions(conn: Conn, batch: list[NewTransaction]) -> dict[str, Row]:
    """Create the transactions of ``batch`` in one statement (one database transaction: all of
    them or none); the rows created, by Idempotency-Key. A key already taken, by an earlier
    request or by an earlier entry of ``batch``, has no row here: see :func:`transactions_by_key`."""
    cur = await conn.execute(
        INSERT_TRANSACTIONS,
        {
            "keys": [n.idempotency_key for n in batch],
            "hashes": [n.request_hash for n in batch],
            "amounts": [n.amount for n in batch],
            "currencies": [n.currency for n in batch],
            "merchants": [n.merchant_ref for n in batch],
            "customers": [n.customer_ref for n in batch],
            "tokens": [n.card_token for n in batch],
            "descriptions": [n.description for n in batch],
            "statuses": [n.decision.status.value for n in batch],
            "reasons": [n.decision.reason for n in batch],
        },
    )
    return {row[1]: dict(zip(_NAMES, row, strict=True)) for row in await cur.fetchall()}


async def transactions_by_key(conn: Conn, keys: list[str]) -> dict[str, Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM transactions WHERE idempotency_key = ANY(%s)",  # noqa: S608
            (keys,),
        )
        return {row["idempotency_key"]: row for row in await cur.fetchall()}


async def insert_transaction(conn: Conn, new: NewTransaction) -> tuple[Row, bool]:
    """Create the transaction (pending, then decided: both events and the row in one statement,
    so one database transaction), or return the row that already holds this Idempotency-Key.
    The boolean is True when this call created it."""
    cur = await conn.execute(
        INSERT_TRANSACTION,
        {
            "key": new.idempotency_key,
            "hash": new.request_hash,
            "amount": new.amount,
            "currency": new.currency,
            "merchant": new.merchant_ref,
            "customer": new.customer_ref,
            "token": new.card_token,
            "description": new.description,
            "status": new.decision.status.value,
            "reason": new.decision.reason,
        },
    )
    row = await cur.fetchone()
    if row is not None:  # the hot path: one round trip, rows as plain tuples
        return dict(zip(_NAMES, row, strict=True)), True
    # The key is taken (ON CONFLICT DO NOTHING waited for its writer to commit): read the winner.
    async with conn.cursor(row_factory=dict_row) as replay:
        await replay.execute(
            f"SELECT {_COLUMNS} FROM transactions WHERE idempotency_key = %s",  # noqa: S608
            (new.idempotency_key,),
        )
        existing = await replay.fetchone()
    if existing is None:  # only if the row was deleted between the two statements
        raise LookupError(new.idempotency_key)
    return existing, False


async def get_transaction(conn: Conn, tx_id: UUID) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM transactions WHERE id = %s", (tx_id,))  # noqa: S608
        return await cur.fetchone()


async def transaction_events(conn: Conn, tx_id: UUID) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT status, reason, at FROM transaction_events WHERE transaction_id = %s ORDER BY id",
            (tx_id,),
        )
        return await cur.fetchall()


async def list_transactions(
    conn: Conn,
    *,
    limit: int,
    after: tuple[datetime, UUID] | None,
    status: str | None,
    currency: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> list[Row]:
    """Newest first; ``after`` is the (created_at, id) of the last row of the previous page."""
    sql, params = filtered_query(
        f"SELECT {_COLUMNS} FROM transactions",  # noqa: S608 - constant columns; values are parameters
        [
            ("(created_at, id) < (%s, %s)", after),
            ("status = %s", status),
            ("currency = %s", currency),
            ("created_at >= %s", created_from),
            ("created_at < %s", created_to),
        ],
        "created_at DESC, id DESC",
        limit,
    )
    return await _fetch_dicts(conn, sql, params)


async def transaction_totals(conn: Conn) -> list[Row]:
    """Count and volume by status and currency, plus the count of the last minute."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT status, currency, count(*) AS count, sum(amount) AS volume,"
            " count(*) FILTER (WHERE created_at > now() - interval '60 seconds') AS last_minute"
            " FROM transactions GROUP BY status, currency ORDER BY status, currency"
        )
        return await cur.fetchall()


_HISTORY_COLUMNS = (
    "at, fault, change, params, previous, source, incidents, replica, release,"
    " kind, pod, reason, exit_code, container_id, at_basis, dedup_key"
)


# A row whose key is already taken is dropped: written once, by whoever is first.
INSERT_HISTORY = (
    f"INSERT INTO fault_transitions ({_HISTORY_COLUMNS})"  # noqa: S608 - constant columns
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (dedup_key) DO NOTHING"
)


def history_values(
    transitions: list[Transition], replica: str, release: str, pod: str | None
) -> list[tuple[Any, ...]]:
    """The parameters of :data:`INSERT_HISTORY` for each row. A row's own ``replica`` (and
    then its ``pod``) win over the writer's."""
    return [
        (
            t.at,
            t.fault,
            t.change.value,
            None if t.params is None else Jsonb(dict(t.params)),
            None if t.previous is None else Jsonb(dict(t.previous)),
            t.source.value,
            Jsonb([i.to_dict() for i in t.incidents]),
            t.replica or replica,
            release,
            t.kind.value,
            t.pod if t.replica else (t.pod or pod),
            t.reason,
            t.exit_code,
            t.container_id,
            t.at_basis.value,
            t.key,
        )
        for t in transitions
    ]


async def insert_fault_transitions(
    conn: Conn, transitions: list[Transition], replica: str, release: str, pod: str | None = None
) -> None:
    """Write the rows in one database transaction."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(INSERT_HISTORY, history_values(transitions, replica, release, pod))


def _recorded(row: Row) -> Recorded:
    return Recorded(
        row_id=row["id"],
        fault=row["fault"],
        change=Change(row["change"]),
        params=row["params"],
        incidents=incidents_of(row["incidents"] if isinstance(row["incidents"], list) else []),
        at=row["at"],
        last_seen=max(row["at"], row["crashed_at"] or row["at"]),
    )


# The last transition of each (replica, fault), with the latest crash of that fault after it.
_LAST_RECORDED = """
SELECT DISTINCT ON (t.replica, t.fault) t.id, t.replica, t.pod, t.fault, t.change, t.params,
       t.incidents, t.at,
       (SELECT max(c.at) FROM fault_transitions c
         WHERE c.release = t.release AND c.replica = t.replica AND c.fault = t.fault
           AND c.kind = 'crash' AND c.at >= t.at) AS crashed_at
FROM fault_transitions t
WHERE t.release = %s AND t.kind = 'transition' AND {where}
ORDER BY t.replica, t.fault, t.at DESC, t.id DESC
"""


async def last_recorded(conn: Conn, release: str, replica: str) -> dict[str, Recorded]:
    """What ``replica`` last recorded for each fault (the state its last process left)."""
    sql = _LAST_RECORDED.format(where="t.replica = %s")
    rows = await _fetch_dicts(conn, sql, [release, replica])
    return {row["fault"]: _recorded(row) for row in rows}


async def open_elsewhere(
    conn: Conn, release: str, replica: str, since: datetime, limit: int = 200
) -> dict[tuple[str, str], list[Recorded]]:
    """The faults other replicas of the release (those with a pod name) left on, recorded
    after ``since``: by (replica, pod)."""
    sql = _LAST_RECORDED.format(where="t.replica <> %s AND t.pod IS NOT NULL AND t.at >= %s")
    open_only = f"SELECT * FROM ({sql}) last WHERE change <> 'off' LIMIT %s"  # noqa: S608 - constant SQL
    rows = await _fetch_dicts(conn, open_only, [release, replica, since, limit])
    out: dict[tuple[str, str], list[Recorded]] = {}
    for row in rows:
        out.setdefault((row["replica"], row["pod"]), []).append(_recorded(row))
    return out


async def observed_elsewhere(
    conn: Conn, release: str, replica: str, fault: str, after: datetime, limit: int = 50
) -> list[Observed]:
    """The transitions of ``fault`` that other replicas of the release saw happen after ``after``."""
    rows = await _fetch_dicts(
        conn,
        "SELECT at, change, params FROM fault_transitions"
        " WHERE release = %s AND replica <> %s AND fault = %s AND kind = 'transition'"
        " AND at_basis = 'observed' AND at > %s ORDER BY at, id LIMIT %s",
        [release, replica, fault, after, limit],
    )
    return [Observed(row["at"], Change(row["change"]), row["params"]) for row in rows]


async def crash_times(
    conn: Conn, release: str, pod: str, fault: str, start: datetime, end: datetime
) -> list[datetime]:
    """When crashes of ``fault`` were recorded for ``pod`` between ``start`` and ``end``."""
    rows = await _fetch_dicts(
        conn,
        "SELECT at FROM fault_transitions WHERE release = %s AND pod = %s AND fault = %s"
        " AND kind = 'crash' AND at BETWEEN %s AND %s",
        [release, pod, fault, start, end],
    )
    return [row["at"] for row in rows]


async def fault_history(
    conn: Conn,
    *,
    limit: int,
    since: datetime | None,
    fault: str | None,
    release: str | None,
    kind: str | None = None,
) -> list[Row]:
    sql, params = filtered_query(
        "SELECT id, at, fault, change, params, previous, source, incidents, replica, release,"
        " kind, pod, reason, exit_code, container_id, at_basis, coalesce(recorded_at, at) AS recorded_at"
        " FROM fault_transitions",
        [("at >= %s", since), ("fault = %s", fault), ("release = %s", release), ("kind = %s", kind)],
        "at DESC, id DESC",
        limit,
    )
    return await _fetch_dicts(conn, sql, params)


def filtered_query(
    select: str, conditions: list[tuple[str, Any]], order_by: str, limit: int
) -> tuple[str, list[Any]]:
    """``select`` narrowed by the conditions whose value is not None (a clause with one ``%s``
    per value; a tuple value fills several), ordered and limited; the SQL and its parameters.
    Only constant text goes into the SQL: every value is a parameter."""
    clauses: list[str] = []
    params: list[Any] = []
    for clause, value in conditions:
        if value is None:
            continue
        clauses.append(clause)
        params.extend(value if isinstance(value, tuple) else (value,))
    sql = select + (" WHERE " + " AND ".join(clauses) if clauses else "")
    return f"{sql} ORDER BY {order_by} LIMIT %s", [*params, limit]


async def _fetch_dicts(conn: Conn, sql: str, params: list[Any]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
