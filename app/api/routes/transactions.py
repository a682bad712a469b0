"""Transactions: create (idempotent), list (cursor pagination, filters), get one."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import StringConstraints, TypeAdapter, ValidationError

from payflow.app import metrics, payments, repository
from payflow.app.api.deps import ConnDep, ServicesDep
from payflow.app.api.routing import request_only
from payflow.app.currencies import CURRENCIES
from payflow.app.errors import ApiError
from payflow.app.models import (
    ERROR_RESPONSES,
    IsoDateTime,
    TransactionCreate,
    TransactionPage,
    TransactionPublic,
)
from payflow.app.services import Services
from payflow.app.views import CursorError, decode_cursor, encode_cursor, transaction_json

router = APIRouter(prefix="/api/transactions", tags=["transactions"], responses=ERROR_RESPONSES)

KEY_HEADER = "Idempotency-Key"
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
_KEY = TypeAdapter(IdempotencyKey)
_JSON_TYPES = ("application/json",)

# The POST reads its body and header itself (below), so FastAPI cannot derive them from the
# signature: the OpenAPI document gets them from here, from the same model and constraints.
_POST_OPENAPI = {
    "parameters": [
        {
            "name": KEY_HEADER,
            "in": "header",
            "required": True,
            "description": "Unique per payment attempt: a retry with the same key replays the first "
            "response; the same key with another body is a 409.",
            "schema": _KEY.json_schema(),
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TransactionCreate.model_json_schema()}},
    },
}


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # json.dumps with options builds one per call


def _json(payload: object, status: int, headers: dict[str, str] | None = None) -> Response:
    body = _ENCODER.encode(payload).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule: no Content-Type, application/json or application/*+json."""
    if not content_type:
        return True
    mime = content_type.partition(";")[0].strip().lower()
    return mime in _JSON_TYPES or (mime.startswith("application/") and mime.endswith("+json"))


def _errors(exc: ValidationError, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"type": e["type"], "loc": (*prefix, *e["loc"]), "msg": e["msg"], "input": e.get("input")}
        for e in exc.errors(include_url=False)
    ]


async def parse_create(request: Request) -> tuple[TransactionCreate, str]:
    """The body and the Idempotency-Key, validated like FastAPI would (the same constraints, one
    422 listing every error with ``header``/``body`` locations), but straight from the JSON bytes
    with pydantic-core: no dict round trip and no dependency resolution on the hot path."""
    errors: list[dict[str, Any]] = []
    key = request.headers.get(KEY_HEADER)
    if key is None:
        errors.append(
            {"type": "missing", "loc": ("header", KEY_HEADER), "msg": "Field required", "input": None}
        )
    else:
        try:
            key = _KEY.validate_python(key)
        except ValidationError as exc:
            errors.extend(_errors(exc, ("header", KEY_HEADER)))
    raw = await request.body()  # the middleware's limit applies here (413)
    body: TransactionCreate | None = None
    if not raw:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
    elif not _is_json(request.headers.get("content-type")):
        errors.append(
            {
                "type": "model_attributes_type",
                "loc": ("body",),
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": None,
            }
        )
    else:
        try:
            body = TransactionCreate.model_validate_json(raw)
        except ValidationError as exc:
            errors.extend(_errors(exc, ("body",)))
    if errors or body is None or key is None:
        raise RequestValidationError(errors)
    return body, key


# The hot path: a request-only route calls the endpoint directly (no dependency solving); its
# body and header are documented by _POST_OPENAPI, its response by the response model.
@request_only(
    router,
    "",
    methods=["POST"],
    status_code=201,
    response_model=TransactionPublic,
    summary="Create a transaction",
    openapi_extra=_POST_OPENAPI,
)
async def create_transaction(request: Request) -> Response:
    body, key = await parse_create(request)
    services: Services = request.app.state.services
    amount = body.decimal_amount
    new = repository.NewTransaction(
        idempotency_key=key,
        request_hash=payments.request_fingerprint(
            {
                "amount": amount,
                "currency": body.currency,
                "merchant_ref": body.merchant_ref,
                "customer_ref": body.customer_ref,
                "card_token": body.card_token,
                "description": body.description,
            }
        ),
        amount=amount,
        currency=body.currency,
        merchant_ref=body.merchant_ref,
        customer_ref=body.customer_ref,
        card_token=body.card_token,
        description=body.description,
        decision=payments.decide(amount, CURRENCIES[body.currency], body.card_token),
    )
    row, created = await services.writer.insert(new)
    if not created and row["request_hash"] != new.request_hash:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request body",
            [{"transaction_id": str(row["id"])}],
        )
    if created:
        metrics.transactions(row["status"], body.currency).inc()
    return _json(transaction_json(row), 201, {"Idempotent-Replayed": "false" if created else "true"})


@router.get("", response_model=TransactionPage, summary="List transactions, newest first")
async def list_transactions(
    conn: ConnDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    status: Annotated[Literal["pending", "authorized", "declined", "failed"] | None, Query()] = None,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    created_from: Annotated[
        IsoDateTime | None, Query(description="Inclusive lower bound (ISO 8601).")
    ] = None,
    created_to: Annotated[IsoDateTime | None, Query(description="Exclusive upper bound (ISO 8601).")] = None,
) -> Response:
    try:
        after = decode_cursor(cursor) if cursor else None
    except CursorError as exc:
        raise ApiError(400, "invalid_cursor", str(exc)) from None
    if currency is not None and currency not in CURRENCIES:
        raise ApiError(400, "invalid_filter", f"unsupported currency {currency!r}")
    for name, value in (("created_from", created_from), ("created_to", created_to)):
        if value is not None and value.tzinfo is None:
            raise ApiError(400, "invalid_filter", f"{name} needs a time zone (e.g. 2026-01-01T00:00:00Z)")
    rows = await repository.list_transactions(
        conn,
        limit=limit + 1,
        after=after,
        status=status,
        currency=currency,
        created_from=created_from,
        created_to=created_to,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return _json(
        {"items": [transaction_json(r) for r in rows], "next_cursor": next_cursor, "limit": limit}, 200
    )


@router.get("/{transaction_id}", response_model=TransactionPublic, summary="One transaction, with its events")
async def get_transaction(transaction_id: UUID, services: ServicesDep) -> Response:
    key = f"payflow:{services.settings.release}:tx:{transaction_id}"
    cached = services.responses.get(key)
    if cached is None:
        cached = await services.redis.get(key)
        if cached is not None:
            services.responses.put(key, cached)
    if cached is not None:
        return Response(cached, media_type="application/json", headers={"X-Cache": "hit"})
    async with services.pool.connection() as conn:
        row = await repository.get_transaction(conn, transaction_id)
        if row is None:
            raise ApiError(404, "not_found", f"no transaction {transaction_id}")
        events = await repository.transaction_events(conn, transaction_id)
    body = json.dumps(transaction_json(row, events), separators=(",", ":")).encode()
    services.responses.put(key, body)
    await services.redis.set(key, body, services.settings.lookup_ttl_s)
    return Response(body, media_type="application/json", headers={"X-Cache": "miss"})
