"""Pure shaping of rows into API payloads, and the pagination cursor."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from payflow.app.currencies import CURRENCIES


def format_amount(amount: Decimal, currency: str) -> str:
    c = CURRENCIES.get(currency)
    minor = c.minor_units if c else 4
    return str(amount.quantize(Decimal(1).scaleb(-minor)))


def transaction_json(row: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    currency = row["currency"].strip()
    out: dict[str, Any] = {
        "id": str(row["id"]),
        "amount": format_amount(row["amount"], currency),
        "currency": currency,
        "merchant_ref": row["merchant_ref"],
        "customer_ref": row["customer_ref"],
        "card_token": row["card_token"],
        "description": row["description"],
        "status": row["status"],
        "decline_reason": row["decline_reason"],
        "created_at": row["created_at"].isoformat(),
        "decided_at": row["decided_at"].isoformat() if row["decided_at"] else None,
    }
    if events is not None:
        out["events"] = [
            {"status": e["status"], "reason": e["reason"], "at": e["at"].isoformat()} for e in events
        ]
    return out


class CursorError(ValueError):
    pass


def encode_cursor(created_at: datetime, tx_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(tx_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, tx_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        return at, UUID(tx_id)
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise CursorError("invalid cursor: pass the next_cursor of a previous page unchanged") from exc
