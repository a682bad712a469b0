from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import pytest

from payflow.app import payments
from payflow.app.currencies import CURRENCIES, Currency
from payflow.app.payments import Status

EUR, JPY, BHD = CURRENCIES["EUR"], CURRENCIES["JPY"], CURRENCIES["BHD"]


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4242424242424242", True),
        ("4111111111111111", True),
        ("4242424242424241", False),
        ("79927398713", True),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert payments.luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("4242424242424242", True),
        ("tok_4111 1111 1111 1111", True),
        ("5555-5555-5555-4444", True),
        ("order 378282246310005 paid", True),  # Amex, 15 digits
        ("tok_visa_4242", False),
        ("1234567890123", False),  # 13 digits, not Luhn-valid
        ("tok_123456789012", False),  # 12 digits: too short for a PAN
    ],
)
def test_contains_card_number(text: str, found: bool) -> None:
    assert payments.contains_card_number(text) is found


@pytest.mark.parametrize(
    ("raw", "currency", "expected"),
    [
        ("12.5", EUR, Decimal("12.50")),
        ("1500", JPY, Decimal("1500")),
        ("0.001", BHD, Decimal("0.001")),
        (7, EUR, Decimal("7.00")),
    ],
)
def test_amounts_in_minor_units(raw: str | int, currency: Currency, expected: Decimal) -> None:
    amount = payments.check_amount(payments.parse_amount(raw), currency)
    assert amount == expected
    assert str(amount) == str(expected)


@pytest.mark.parametrize(
    ("raw", "currency", "message"),
    [
        ("0", EUR, "greater than 0"),
        ("-1", EUR, "greater than 0"),
        ("1.001", EUR, "more decimals"),
        ("1.5", JPY, "more decimals"),
        ("NaN", EUR, "finite"),
        ("Infinity", EUR, "finite"),
        ("1e20", EUR, "below"),
    ],
)
def test_bad_amounts(raw: str, currency: Currency, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        payments.check_amount(payments.parse_amount(raw), currency)


@pytest.mark.parametrize("raw", ["twelve", 1.5, True, None, "1,5"])
def test_unparseable_amounts(raw: object) -> None:
    with pytest.raises(ValueError, match="amount"):
        payments.parse_amount(raw)


def test_over_precise_trailing_zeros_are_fine() -> None:
    assert payments.check_amount(Decimal("1.5000"), EUR) == Decimal("1.50")


def test_currency() -> None:
    assert payments.check_currency("USD").minor_units == 2
    with pytest.raises(ValueError, match="unsupported currency"):
        payments.check_currency("XYZ")


def test_card_tokens() -> None:
    assert payments.check_card_token("tok_visa_4242") == "tok_visa_4242"
    with pytest.raises(ValueError, match="raw card number"):
        payments.check_card_token("4242424242424242")
    with pytest.raises(ValueError, match="tok_"):
        payments.check_card_token("card-1")


def test_references() -> None:
    assert payments.check_reference("merchant_ref", "shop-1:eu") == "shop-1:eu"
    for bad in ("", "has space", "x" * 65, "-leading"):
        with pytest.raises(ValueError, match="merchant_ref"):
            payments.check_reference("merchant_ref", bad)


@pytest.mark.parametrize(
    ("amount", "token", "status", "reason"),
    [
        ("10.00", "tok_visa_4242", Status.AUTHORIZED, None),
        ("10000.00", "tok_visa_4242", Status.AUTHORIZED, None),
        ("10000.01", "tok_visa_4242", Status.DECLINED, "limit_exceeded"),
        ("10.00", "tok_decline_x", Status.DECLINED, "card_declined"),
        ("10.00", "tok_insufficient_x", Status.DECLINED, "insufficient_funds"),
        ("10.00", "tok_fail_x", Status.FAILED, "processor_unavailable"),
        ("20000", "tok_fail_x", Status.DECLINED, "limit_exceeded"),  # the limit is checked first
    ],
)
def test_decide(amount: str, token: str, status: Status, reason: str | None) -> None:
    decision = payments.decide(Decimal(amount), CURRENCIES["USD"], token)
    assert (decision.status, decision.reason) == (status, reason)


def test_fingerprint_is_about_meaning() -> None:
    base = {
        "currency": "EUR",
        "merchant_ref": "m",
        "customer_ref": "c",
        "card_token": "tok_aaaa",
        "description": None,
    }
    a = payments.request_fingerprint(base | {"amount": Decimal("10.50")})
    assert a == payments.request_fingerprint(base | {"amount": Decimal("10.5")})
    assert a != payments.request_fingerprint(base | {"amount": Decimal("10.51")})


@pytest.mark.parametrize(
    "description",
    [None, "order 42", 'quote " and \\ backslash', "caf\u00e9 \u2603 \U0001f600", "tab\tnewline\n"],
)
def test_fingerprint_is_the_hash_of_the_documented_canonical_json(description: str | None) -> None:
    # Rows written before the fingerprint was built by hand hold this hash: a retry of such a
    # request must still replay, not conflict.
    fields = {
        "amount": Decimal("12.500"),
        "currency": "EUR",
        "merchant_ref": "m_1",
        "customer_ref": "c_1",
        "card_token": "tok_visa_4242",
        "description": description,
    }
    canonical = {k: (str(v.normalize()) if isinstance(v, Decimal) else v) for k, v in fields.items()}
    expected = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode())
    assert payments.request_fingerprint(fields) == expected.hexdigest()
