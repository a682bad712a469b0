"""Request and response models, one per role."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from payflow.app import payments
from payflow.app.currencies import CURRENCIES

StatusName = Literal["pending", "authorized", "declined", "failed"]

# What the OpenAPI document promises for a date-time query parameter (RFC 3339). pydantic alone
# would also take a Unix timestamp ("0") or a date: those are refused (422), so the document
# tells the truth. The zone stays optional here: the routes refuse a naive time with a 400
# that says so.
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def _iso_datetime(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_DATETIME.fullmatch(value):
        raise ValueError("expected an ISO 8601 date-time such as 2026-01-01T00:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]


class TransactionCreate(BaseModel):
    """A payment to process. ``amount`` is a decimal string (or an integer), never a float."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "amount": "12.50",
                    "currency": "EUR",
                    "merchant_ref": "m_1001",
                    "customer_ref": "c_2002",
                    "card_token": "tok_visa_4242",
                    "description": "order 42",
                }
            ]
        },
    )

    amount: Annotated[
        str | int, Field(description='Decimal string, e.g. "12.50"; at most the currency\'s minor units.')
    ]
    currency: Annotated[str, Field(min_length=3, max_length=3, description="ISO 4217 code, e.g. EUR.")]
    merchant_ref: Annotated[str, Field(max_length=64)]
    customer_ref: Annotated[str, Field(max_length=64)]
    card_token: Annotated[
        str, Field(max_length=64, description="A vault token (tok_...); raw card numbers are refused.")
    ]
    # PostgreSQL text cannot hold NUL: refused here (422), said in the schema (found by schemathesis).
    description: Annotated[
        str | None, Field(max_length=200, json_schema_extra={"pattern": "^[^\\x00]*$"})
    ] = None
    _decimal: Decimal = PrivateAttr(default=Decimal(0))

    @field_validator("amount", mode="before")
    @classmethod
    def _no_float(cls, v: Any) -> Any:
        if isinstance(v, float):
            raise ValueError('amount must be a decimal string such as "12.50", not a JSON float')
        return v

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return payments.check_currency(v).code

    @field_validator("card_token")
    @classmethod
    def _token(cls, v: str) -> str:
        return payments.check_card_token(v)

    @field_validator("merchant_ref", "customer_ref")
    @classmethod
    def _ref(cls, v: str, info: ValidationInfo) -> str:
        return payments.check_reference(info.field_name or "reference", v)

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("description must not contain NUL characters")
        if v is not None and payments.contains_card_number(v):
            raise ValueError("description must not contain a card number")
        return v

    @model_validator(mode="after")
    def _amount(self) -> TransactionCreate:
        currency = CURRENCIES[self.currency]
        self._decimal = payments.check_amount(payments.parse_amount(self.amount), currency)
        return self

    @property
    def decimal_amount(self) -> Decimal:
        return self._decimal


class TransactionEvent(BaseModel):
    status: StatusName
    reason: str | None
    at: datetime


class TransactionPublic(BaseModel):
    id: UUID
    amount: str = Field(description="Decimal string in the currency's minor units.")
    currency: str
    merchant_ref: str
    customer_ref: str
    card_token: str
    description: str | None
    status: StatusName
    decline_reason: str | None
    created_at: datetime
    decided_at: datetime | None
    events: list[TransactionEvent] | None = None


class TransactionPage(BaseModel):
    items: list[TransactionPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at the end.")
    limit: int


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Any]
    requestId: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


class FaultTransitionPublic(BaseModel):
    """One row of the fault history: a transition, or a crash while the fault was in force.
    docs/api.md says what each field holds."""

    id: int
    at: datetime
    fault: str
    change: Literal["on", "off", "changed", "crash"]
    params: dict[str, int | float] | None
    previous: dict[str, int | float] | None
    source: Literal["environment", "configmap", "recovery", "process", "kubelet"]
    incidents: list[dict[str, Any]]
    replica: str
    release: str
    kind: Literal["transition", "crash"]
    pod: str | None
    reason: str | None
    exit_code: int | None
    container_id: str | None
    at_basis: Literal["observed", "sibling", "configmap_change", "last_seen", "container_status"]
    recorded_at: datetime


class FaultHistory(BaseModel):
    items: list[FaultTransitionPublic]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 413, 422, 500, 503, 504)
}
