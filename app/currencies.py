"""Supported ISO 4217 currencies, with their minor units and the authorization limit (in
major units) of the processing model."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType


@dataclass(frozen=True)
class Currency:
    code: str
    minor_units: int
    limit: Decimal  # larger amounts are declined (limit_exceeded)


def _c(code: str, minor: int, limit: str) -> tuple[str, Currency]:
    return code, Currency(code, minor, Decimal(limit))


CURRENCIES = MappingProxyType(
    dict(
        [
            _c("AUD", 2, "15000"),
            _c("BHD", 3, "4000"),
            _c("BRL", 2, "50000"),
            _c("CAD", 2, "15000"),
            _c("CHF", 2, "10000"),
            _c("CLP", 0, "10000000"),
            _c("CNY", 2, "70000"),
            _c("CZK", 2, "250000"),
            _c("DKK", 2, "70000"),
            _c("EUR", 2, "10000"),
            _c("GBP", 2, "8000"),
            _c("HKD", 2, "80000"),
            _c("HUF", 2, "4000000"),
            _c("INR", 2, "800000"),
            _c("ISK", 0, "1500000"),
            _c("JOD", 3, "7000"),
            _c("JPY", 0, "1500000"),
            _c("KRW", 0, "13000000"),
            _c("KWD", 3, "3000"),
            _c("MXN", 2, "200000"),
            _c("NOK", 2, "100000"),
            _c("NZD", 2, "16000"),
            _c("OMR", 3, "4000"),
            _c("PLN", 2, "40000"),
            _c("SEK", 2, "100000"),
            _c("SGD", 2, "13000"),
            _c("TND", 3, "30000"),
            _c("USD", 2, "10000"),
            _c("VND", 0, "250000000"),
            _c("ZAR", 2, "180000"),
        ]
    )
)
