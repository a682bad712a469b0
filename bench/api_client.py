"""A small keep-alive HTTP/1.1 client on asyncio streams, for the API benchmark: much lighter
than a full client, so the load generator takes less of the CPU the server needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RequestFactory = Callable[[int], tuple[str, str, bytes, dict[str, str] | None]]


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    # Latency quantiles with the share of requests each stands for (from wrk, which reports a
    # distribution rather than every sample); merged with ``latencies`` by :meth:`percentile`.
    weighted: list[tuple[float, float]] = field(default_factory=list)
    count: int = 0  # measured requests
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0  # requests that got no 2xx: an error status or a socket error
    elapsed: float = 0.0
    done: int = 0  # every completed request, warm-up included (the denominator of cpu_s)
    cpu_s: float = 0.0  # CPU seconds of the party under test over the whole run, when measured

    @property
    def cpu_per_request_us(self) -> float:
        return self.cpu_s / self.done * 1e6 if self.done else float("nan")

    def add(self, latency: float, status: int) -> None:
        self.latencies.append(latency)
        self.count += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not 200 <= status < 300 and status != 0:
            self.failures += 1

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        samples = sorted([(v, 1.0) for v in self.latencies] + self.weighted)
        if not samples:
            return float("nan")
        target = q * sum(w for _, w in samples)
        seen = 0.0
        for value, weight in samples:
            seen += weight
            if seen >= target:
                return value
        return samples[-1][0]


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
        if chunked:
            data = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readline()
            return status, data
        return status, await self.reader.readexactly(length)


async def run_http(
    host: str,
    port: int,
    concurrency: int,
    duration: float,
    make_request: RequestFactory,
    warmup: float = 0.5,
) -> Result:
    """``concurrency`` connections, each sending requests back to back for ``duration`` s after
    a warm-up; the latencies of the measured part."""
    result = Result()
    conns = [Connection(host, port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + duration
    counter = [0]

    async def worker(conn: Connection) -> None:
        while True:
            now = time.perf_counter()
            if now >= t_end:
                return
            counter[0] += 1
            method, path, body, headers = make_request(counter[0])
            t0 = time.perf_counter()
            status, _ = await conn.request(method, path, body, headers)
            t1 = time.perf_counter()
            result.done += 1
            if t0 >= t_measure and t1 <= t_end:
                result.add(t1 - t0, status)

    await asyncio.gather(*(worker(c) for c in conns))
    result.elapsed = duration
    await asyncio.gather(*(c.close() for c in conns))
    return result
