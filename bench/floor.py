"""The floor: one generation's bare exchanges on the gateway's own stack, nothing else.

What is the least CPU a Python process on our stack (uvicorn with httptools on uvloop,
Starlette, aiohttp, asyncpg) spends on what every generation must do? This server does
only that, for `POST /v1/openai/images/generations`: look the bearer key up in a dict,
parse the JSON body, take a hold (one statement: a conditional debit and a row insert),
call the upstream (`bench/fake_upstream.py`), decode its base64 image, write it to a file
in a thread, settle (one statement), answer the URL with orjson. No validation, pricing,
routing, limits, logging, metrics, usage-row columns, encryption or error handling: a
floor, not a gateway. Measured beside the gateway in docs/benchmarks.md (issue #12).

    taskset -c 1 .venv/bin/python bench/fake_upstream.py --port 9100 &
    taskset -c 0 .venv/bin/python bench/floor.py --port 9200 [--no-db] [--no-file] [--batch] &
    BENCH_KEY=k taskset -c 1 wrk -t1 -c16 -d15s -s bench/post.lua http://127.0.0.1:9200

Its two tables (`floor_accounts`, `floor_generations`) are created afresh in `--dsn`'s
database at start-up and dropped at shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

KEYS = {"Bearer k": "account"}
PRICE = 16_000
SCHEMA = """
DROP TABLE IF EXISTS floor_generations, floor_accounts;
CREATE TABLE floor_accounts (id text PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO floor_accounts VALUES ('account', 1000000000000000);
CREATE TABLE floor_generations (
    id text PRIMARY KEY, account text NOT NULL, held bigint NOT NULL, cost bigint,
    status text NOT NULL, prompt text
);
"""
HOLD = """
WITH debit AS (
    UPDATE floor_accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2
    RETURNING id
)
INSERT INTO floor_generations (id, account, held, status, prompt)
SELECT $3, debit.id, $2, 'processing', $4 FROM debit RETURNING id
"""
SETTLE = """
WITH closed AS (
    UPDATE floor_generations SET status = 'success', cost = $2, held = 0
    WHERE id = $1 AND status = 'processing' RETURNING account, held
)
UPDATE floor_accounts SET balance = balance FROM closed
WHERE floor_accounts.id = closed.account RETURNING balance
"""


# The same two statements, each returning exactly one row (as a batch needs).
HOLD_ONE = """
WITH debit AS (
    UPDATE floor_accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2
    RETURNING id
), opened AS (
    INSERT INTO floor_generations (id, account, held, status, prompt)
    SELECT $3, debit.id, $2, 'processing', $4 FROM debit RETURNING id
) SELECT count(*) FROM opened
"""
SETTLE_ONE = """
WITH closed AS (
    UPDATE floor_generations SET status = 'success', cost = $2, held = 0
    WHERE id = $1 AND status = 'processing' RETURNING account, held
), credit AS (
    UPDATE floor_accounts SET balance = balance FROM closed
    WHERE floor_accounts.id = closed.account RETURNING balance
) SELECT (SELECT held FROM closed)
"""


class Batches:
    """`--batch`: group commit as the gateway's `db.group_commit` does it, bare: statements
    queued while a batch is in flight go together in one `fetchmany` (no error handling)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.pending: dict[str, list[tuple[tuple[Any, ...], asyncio.Future[Any]]]] = {}
        self.flying = 0
        self.flights: set[asyncio.Task[None]] = set()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.setdefault(sql, []).append((args, future))
        if self.flying < 2:
            self.flying += 1
            flight = asyncio.get_running_loop().create_task(self.fly())
            self.flights.add(flight)
            flight.add_done_callback(self.flights.discard)
        return await future

    async def fly(self) -> None:
        try:
            while self.pending:
                sql, batch = self.pending.popitem()
                async with self.pool.acquire() as connection:
                    rows = await connection.fetchmany(sql, [args for args, _ in batch])
                for (_, future), row in zip(batch, rows, strict=True):
                    future.set_result(row[0])
        finally:
            self.flying -= 1


class Floor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.outputs = tempfile.mkdtemp(prefix="ir-floor-")
        self.names = itertools.count()
        self.pool: Any = None
        self.http: aiohttp.ClientSession | None = None
        self.batches: Batches | None = None

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.args.db:
            self.pool = await asyncpg.create_pool(self.args.dsn, min_size=4, max_size=20)
            async with self.pool.acquire() as connection:
                await connection.execute(SCHEMA)
            if self.args.batch:
                self.batches = Batches(self.pool)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
        try:
            yield
        finally:
            await self.http.close()
            if self.pool is not None:
                async with self.pool.acquire() as connection:
                    await connection.execute("DROP TABLE floor_generations, floor_accounts")
                await self.pool.close()

    async def generate(self, request: Request) -> Response:
        account = KEYS.get(request.headers.get("authorization", ""))
        if account is None:
            return Response(b'{"error":"Invalid API key"}', 401, media_type="application/json")
        body = orjson.loads(await request.body())
        generation_id = secrets.token_hex(12)
        if self.batches is not None:
            await self.batches.fetchval(HOLD_ONE, account, PRICE, generation_id, body["prompt"])
        elif self.pool is not None:
            async with self.pool.acquire() as connection:
                await connection.fetchval(HOLD, account, PRICE, generation_id, body["prompt"])
        assert self.http is not None
        async with self.http.post(
            f"{self.args.upstream}/v1/images/generations",
            json={"model": "dall-e-2", "prompt": body["prompt"], "response_format": "b64_json"},
            headers={"Authorization": "Bearer floor"},
        ) as reply:
            answer = orjson.loads(await reply.read())
        image = base64.b64decode(answer["data"][0]["b64_json"])
        name = f"{generation_id}.png"
        if self.args.file:
            await asyncio.to_thread(self.write, name, image)
        if self.batches is not None:
            await self.batches.fetchval(SETTLE_ONE, generation_id, PRICE)
        elif self.pool is not None:
            async with self.pool.acquire() as connection:
                await connection.fetchval(SETTLE, generation_id, PRICE)
        answer = {"created": int(time.time()), "data": [{"url": f"http://floor/{name}"}]}
        return Response(orjson.dumps(answer), media_type="application/json")

    def write(self, name: str, data: bytes) -> None:
        # As the gateway's LocalStore does: a temp file, then an atomic rename.
        temp = os.path.join(self.outputs, f".tmp-{next(self.names)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, os.path.join(self.outputs, name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-db", dest="db", action="store_false", help="skip both statements")
    parser.add_argument("--no-file", dest="file", action="store_false", help="skip the file")
    parser.add_argument("--batch", action="store_true", help="group-commit the two statements")
    args = parser.parse_args()
    floor = Floor(args)
    app = Starlette(
        routes=[Route("/v1/openai/images/generations", floor.generate, methods=["POST"])],
        lifespan=floor.lifespan,
    )
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning"
    )


if __name__ == "__main__":
    main()
