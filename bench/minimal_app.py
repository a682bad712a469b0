"""The least a POST can be on this stack, as a reference for bench/api.py: uvicorn (one worker,
uvloop, httptools, as the app) and a psycopg pool (sized as the app's) running the app's own
insert statement, and nothing else: no validation, no idempotency check, no decision, no
metrics, no log line, no faults.

The gap between its rate and the raw psycopg loop's is what HTTP and the ASGI server alone cost
on this machine; no app built on them can close it.

    DATABASE_URL=... PAYFLOW_PORT=... python -m bench.minimal_app
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.types import Message, Receive, Scope, Send

from payflow.app.repository import INSERT_TRANSACTION
from payflow.app.settings import Settings

POOL_MAX = int(Settings.model_fields["db_pool_max"].default)
_HEADERS = [(b"content-type", b"application/json")]


class MinimalApp:
    def __init__(self, database_url: str) -> None:
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database_url, min_size=POOL_MAX, max_size=POOL_MAX, kwargs={"autocommit": True}, open=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["path"] == "/health":
            await self.reply(send, 200, b'{"status":"ok"}')
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        data = json.loads(body)
        key = dict(scope["headers"])[b"idempotency-key"].decode()
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                INSERT_TRANSACTION,
                {
                    "key": key,
                    "hash": "minimal",
                    "amount": Decimal(data["amount"]),
                    "currency": data["currency"],
                    "merchant": data["merchant_ref"],
                    "customer": data["customer_ref"],
                    "token": data["card_token"],
                    "description": data.get("description"),
                    "status": "authorized",
                    "reason": None,
                },
            )
            row = await cur.fetchone()
        assert row is not None
        out = {"id": str(row[0]), "amount": str(row[3]), "status": row[9], "created_at": row[11].isoformat()}
        await self.reply(send, 201, json.dumps(out).encode())

    @staticmethod
    async def reply(send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                await self.pool.open(wait=True, timeout=30)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    import uvicorn

    uvicorn.run(
        MinimalApp(os.environ["DATABASE_URL"]),
        host="127.0.0.1",
        port=int(os.environ["PAYFLOW_PORT"]),
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
