"""HTTP load from wrk (Debian's ``wrk`` package, written in C), for the API benchmark.

The server under test shares two cores with PostgreSQL and the load generator. A Python client
spends 100 to 200 us of CPU on each request, CPU the server then lacks, and that would be
charged to the server's figure; in production the clients run elsewhere. wrk spends a few
microseconds. The baselines that measure psycopg itself keep running in the benchmark's process:
there the client's CPU *is* what is measured.

One wrk process per turn: ``-t1`` (one thread, so most of the machine stays with the server),
``-c concurrency`` keep-alive connections, each sending its next request when the last one is
answered. A Lua script makes each POST's ``Idempotency-Key`` unique and, at the end, prints the
request count and the latency quantiles (per mille), so turns can be merged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.api_client import Result

MARK = "PAYFLOW_WRK "

# wrk's Lua API: https://github.com/wg/wrk/blob/master/SCRIPTING. `request` is only defined when
# each request must differ (a unique key); otherwise wrk sends one pre-built request, cheaper.
_SCRIPT = """
wrk.method = {method}
wrk.path = {path}
wrk.body = {body}
wrk.headers = {headers}
local key_header = {key_header}
if key_header ~= nil then
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  local prefix = string.format("wrk-%d-%d-", os.time(), math.random(1, 1073741824))
  local n = 0
  request = function()
    n = n + 1
    wrk.headers[key_header] = prefix .. n
    return wrk.format()
  end
end
done = function(summary, latency, requests)
  local q = {{}}
  for i = 1, 999 do q[i] = latency:percentile(i / 10) end
  local e = summary.errors
  io.write(string.format('{mark}{{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"quantiles_us":[%s]}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    table.concat(q, ",")))
end
"""


def _lua_string(value: str) -> str:
    """A Lua long-bracket string literal holding ``value`` verbatim."""
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


def script(method: str, path: str, body: bytes, headers: dict[str, str], key_header: str | None) -> str:
    pairs = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
    return _SCRIPT.format(
        method=_lua_string(method),
        path=_lua_string(path),
        body=_lua_string(body.decode()) if body else "nil",
        headers="{" + pairs + "}",
        key_header=_lua_string(key_header) if key_header else "nil",
        mark=MARK,
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk not found: `make tools` installs it (Debian package wrk)")
    return found


def parse(stdout: str, stderr: str = "") -> dict[str, object]:
    for line in stdout.splitlines():
        if line.startswith(MARK):
            data: dict[str, object] = json.loads(line[len(MARK) :])
            return data
    raise RuntimeError(f"wrk printed no summary:\n{stdout}\n{stderr}")


def run_wrk(
    host: str,
    port: int,
    concurrency: int,
    seconds: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    key_header: str | None = None,
) -> Result:
    """One wrk run; the result holds its rate, its failures (answers outside 2xx/3xx and socket
    errors) and its latency quantiles."""
    hdrs = dict(headers or {})
    if body:
        hdrs.setdefault("Content-Type", "application/json")
    with tempfile.TemporaryDirectory(prefix="payflow-wrk-") as tmp:
        lua = Path(tmp) / "bench.lua"
        lua.write_text(script(method, path, body, hdrs, key_header))
        proc = subprocess.run(
            [
                wrk_binary(),
                "-t1",
                f"-c{concurrency}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(lua),
                f"http://{host}:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    if proc.stderr.strip():  # a script error: wrk then sends GET / instead, so stop here
        raise RuntimeError(f"wrk: {proc.stderr.strip()}")
    data = parse(proc.stdout, proc.stderr)
    requests = int(data["requests"])  # type: ignore[call-overload]
    quantiles: list[float] = data["quantiles_us"]  # type: ignore[assignment]
    result = Result()
    result.elapsed = int(data["duration_us"]) / 1e6  # type: ignore[call-overload]
    result.done = result.count = requests
    result.weighted = [(q / 1e6, requests / len(quantiles)) for q in quantiles]
    # wrk counts answers outside 2xx/3xx without telling which status they had.
    result.failures = int(data["non2xx"]) + int(data["socket_errors"])  # type: ignore[call-overload]
    return result
