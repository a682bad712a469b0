"""The API benchmark's results, and a small keep-alive HTTP/1.1 client on asyncio streams for
its sequential probes (the ConfigMap delay); the load itself comes from wrk (bench/wrk.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    # Latency quantiles with the share of requests each stands for (from wrk, which reports a
    # distribution rather than every sample); merged with ``latencies`` by :meth:`percentile`.
    weighted: list[tuple[float, float]] = field(default_factory=list)
    count: int = 0  # measured requests
    failures: int = 0  # requests that got no 2xx: an error status or a socket error
    elapsed: float = 0.0
    done: int = 0  # every completed request, warm-up included (the denominator of cpu_s)
    cpu_s: float = 0.0  # CPU seconds of the party under test over the whole run, when measured

    @property
    def cpu_per_request_us(self) -> float:
        return self.cpu_s / self.done * 1e6 if self.done else float("nan")

    def add(self, latency: float) -> None:
        self.latencies.append(latency)
        self.count += 1

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
