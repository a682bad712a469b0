"""The payment rules: pure functions, no I/O.

Processing model (documented in docs/api.md): a transaction is created ``pending`` and decided
at once, in the same database transaction, by :func:`decide`:

1. an amount above the currency's limit is ``declined`` (``limit_exceeded``);
2. a card token starting ``tok_decline`` is ``declined`` (``card_declined``);
3. a card token starting ``tok_insufficient`` is ``declined`` (``insufficient_funds``);
4. a card token starting ``tok_fail`` is ``failed`` (``processor_unavailable``);
5. anything else is ``authorized``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from payflow.app.currencies import CURRENCIES, Currency

MAX_DIGITS = 16  # NUMERIC(20, 4) leaves 16 digits before the point
TOKEN_RE = re.compile(r"^tok_[A-Za-z0-9_]{4,60}$")
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")
_DIGIT_RUN = re.compile(r"\d(?:[ \-]?\d){12,18}")


class Status(StrEnum):
    PENDING = "pending"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    FAILED = "failed"


FINAL_STATUSES = (Status.AUTHORIZED, Status.DECLINED, Status.FAILED)


@dataclass(frozen=True)
class Decision:
    status: Status
    reason: str | None


def luhn_valid(digits: str) -> bool:
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True when ``text`` holds a Luhn-valid run of 13 to 19 digits (spaces or dashes allowed
    between them): a raw card number (PAN), which this API must never store."""
    for match in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"[ \-]", "", match.group())
        for length in range(len(digits), 12, -1):
            for start in range(len(digits) - length + 1):
                if luhn_valid(digits[start : start + length]):
                    return True
    return False


def check_currency(code: str) -> Currency:
    currency = CURRENCIES.get(code)
    if currency is None:
        raise ValueError(f"unsupported currency {code!r}; supported: {', '.join(sorted(CURRENCIES))}")
    return currency


def check_amount(amount: Decimal, currency: Currency) -> Decimal:
    """The amount, if it is positive, finite, and has no more decimals than the currency's minor
    units; ValueError otherwise."""
    if not amount.is_finite():
        raise ValueError("amount must be a finite number")
    if amount <= 0:
        raise ValueError("amount must be greater than 0")
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > currency.minor_units:
        raise ValueError(
            f"amount has more decimals than {currency.code} allows ({currency.minor_units} minor units)"
        )
    if amount.adjusted() >= MAX_DIGITS:
        raise ValueError(f"amount must be below 10^{MAX_DIGITS}")
    return amount.quantize(Decimal(1).scaleb(-currency.minor_units))


def parse_amount(raw: Any) -> Decimal:
    """An amount given as a JSON string or number (never through float)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise ValueError('amount must be a decimal string such as "12.50" (or an integer)')
    try:
        return Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        raise ValueError(f"amount {raw!r} is not a decimal number") from None


def check_card_token(token: str) -> str:
    if contains_card_number(token):
        raise ValueError("a raw card number is refused: send a card token (tok_...) from the vault")
    if not TOKEN_RE.match(token):
        raise ValueError("card token must look like tok_ followed by 4 to 60 letters, digits or _")
    return token


def check_reference(kind: str, ref: str) -> str:
    if contains_card_number(ref):
        raise ValueError(f"{kind} must not contain a card number")
    if not REF_RE.match(ref):
        raise ValueError(f"{kind} must be 1 to 64 characters: letters, digits, '.', '_', ':' or '-'")
    return ref


def decide(amount: Decimal, currency: Currency, card_token: str) -> Decision:
    """The outcome of a new transaction (see the module docstring for the rules)."""
    if amount > currency.limit:
        return Decision(Status.DECLINED, "limit_exceeded")
    if card_token.startswith("tok_decline"):
        return Decision(Status.DECLINED, "card_declined")
    if card_token.startswith("tok_insufficient"):
        return Decision(Status.DECLINED, "insufficient_funds")
    if card_token.startswith("tok_fail"):
        return Decision(Status.FAILED, "processor_unavailable")
    return Decision(Status.AUTHORIZED, None)


_ENCODE_STR = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str


def _canonical(value: Any) -> str:
    if isinstance(value, Decimal):
        value = str(value.normalize())
    if isinstance(value, str):
        return _ENCODE_STR(value)
    if value is None:
        return "null"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def request_fingerprint(fields: dict[str, Any]) -> str:
    """A stable hash of a creation request's meaning (amount as a normalised decimal), so that
    ``"10.50"`` and ``"10.5"`` are the same request under one Idempotency-Key.

    The hash is of ``json.dumps(fields, sort_keys=True, separators=(",", ":"))`` with each
    Decimal as its normalised string; built here piece by piece (the same text, a third of the
    time on the POST's path)."""
    text = ",".join(f"{_ENCODE_STR(k)}:{_canonical(fields[k])}" for k in sorted(fields))
    return hashlib.sha256(("{" + text + "}").encode()).hexdigest()
