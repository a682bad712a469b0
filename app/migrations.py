"""Versioned schema migrations, applied at start-up.

Each replica takes one PostgreSQL advisory lock before it looks at ``schema_migrations``, so
three replicas starting at once apply each version exactly once; a version already applied is
skipped, and every statement is itself idempotent (``IF NOT EXISTS``).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

log = logging.getLogger("payflow.app.migrations")

# pg_advisory_lock key: the bytes "payflow" as a number, so it is unlikely to meet another app's.
LOCK_KEY = int.from_bytes(b"payflow", "big")

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "transactions",
        """
        CREATE TABLE IF NOT EXISTS transactions (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            idempotency_key text NOT NULL UNIQUE,
            request_hash text NOT NULL,
            amount numeric(20, 4) NOT NULL CHECK (amount > 0),
            currency char(3) NOT NULL,
            merchant_ref text NOT NULL,
            customer_ref text NOT NULL,
            card_token text NOT NULL,
            description text,
            status text NOT NULL CHECK (status IN ('pending', 'authorized', 'declined', 'failed')),
            decline_reason text,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            decided_at timestamptz
        );
        CREATE INDEX IF NOT EXISTS transactions_created_idx ON transactions (created_at DESC, id DESC);
        CREATE INDEX IF NOT EXISTS transactions_status_idx ON transactions (status, created_at DESC, id DESC);
        CREATE INDEX IF NOT EXISTS transactions_currency_idx
            ON transactions (currency, created_at DESC, id DESC);
        CREATE TABLE IF NOT EXISTS transaction_events (
            id bigserial PRIMARY KEY,
            transaction_id uuid NOT NULL REFERENCES transactions (id) ON DELETE CASCADE,
            status text NOT NULL,
            reason text,
            at timestamptz NOT NULL
        );
        CREATE INDEX IF NOT EXISTS transaction_events_tx_idx ON transaction_events (transaction_id, id);
        """,
    ),
    (
        2,
        "fault_transitions",
        """
        CREATE TABLE IF NOT EXISTS fault_transitions (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL,
            fault text NOT NULL,
            change text NOT NULL CHECK (change IN ('on', 'off', 'changed')),
            params jsonb,
            previous jsonb,
            source text NOT NULL,
            incidents jsonb NOT NULL DEFAULT '[]',
            replica text NOT NULL,
            release text NOT NULL
        );
        CREATE INDEX IF NOT EXISTS fault_transitions_at_idx ON fault_transitions (at DESC, id DESC);
        """,
    ),
    (
        3,
        "fault_history_across_crashes",
        # Rows of kind 'crash' (the fault acted: the process ended), rows written after the fact
        # (at_basis says how their time is known; recorded_at when they were written: NULL for
        # the rows of before, which were written when they happened), and a key that lets a row
        # be written once. Old code keeps working: it writes the columns it knows, the defaults
        # fill the rest.
        """
        ALTER TABLE fault_transitions
            ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'transition',
            ADD COLUMN IF NOT EXISTS pod text,
            ADD COLUMN IF NOT EXISTS reason text,
            ADD COLUMN IF NOT EXISTS exit_code integer,
            ADD COLUMN IF NOT EXISTS container_id text,
            ADD COLUMN IF NOT EXISTS at_basis text NOT NULL DEFAULT 'observed',
            ADD COLUMN IF NOT EXISTS recorded_at timestamptz,
            ADD COLUMN IF NOT EXISTS dedup_key text;
        ALTER TABLE fault_transitions ALTER COLUMN recorded_at SET DEFAULT clock_timestamp();
        ALTER TABLE fault_transitions
            DROP CONSTRAINT IF EXISTS fault_transitions_change_check,
            DROP CONSTRAINT IF EXISTS fault_transitions_kind_check;
        ALTER TABLE fault_transitions
            ADD CONSTRAINT fault_transitions_change_check
                CHECK (change IN ('on', 'off', 'changed', 'crash')),
            ADD CONSTRAINT fault_transitions_kind_check
                CHECK (kind IN ('transition', 'crash') AND (kind = 'crash') = (change = 'crash'));
        CREATE UNIQUE INDEX IF NOT EXISTS fault_transitions_dedup_idx ON fault_transitions (dedup_key);
        CREATE INDEX IF NOT EXISTS fault_transitions_replica_idx
            ON fault_transitions (release, replica, fault, at DESC, id DESC);
        """,
    ),
)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply the missing migrations; the versions this call applied. ``conn`` must be in
    autocommit mode (the lock is held across the per-version transactions)."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                )
            log.info("applied migration %s (%s)", version, name, extra={"migration": version})
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now
