"""Prometheus metrics (names by the conventions: ``_total`` counters, ``_seconds``, base units).

Defined once per process in the default registry, which also carries the process and platform
collectors (``process_cpu_seconds_total``, ``process_resident_memory_bytes``...)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "payflow_http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "payflow_http_request_duration_seconds",
    "HTTP request duration.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TRANSACTIONS = Counter("payflow_transactions_total", "Transactions created.", ["status", "currency"])

POOL_SIZE = Gauge("payflow_db_pool_size", "Connections in the PostgreSQL pool.")
POOL_IN_USE = Gauge("payflow_db_pool_in_use", "Pool connections lent out.")
POOL_WAITING = Gauge("payflow_db_pool_waiting", "Requests waiting for a pool connection.")
POOL_MAX = Gauge("payflow_db_pool_max", "The pool's maximum size.")
WRITE_BATCH = Histogram(
    "payflow_db_write_batch_size",
    "Transactions written by one insert statement (concurrent POSTs share one: see payflow.app.writer).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
POOL_TIMEOUTS = Counter("payflow_db_pool_timeouts_total", "Requests that gave up waiting for the pool.")

CACHE_HITS = Counter("payflow_cache_hits_total", "Cache hits.", ["cache"])
CACHE_MISSES = Counter("payflow_cache_misses_total", "Cache misses.", ["cache"])
CACHE_ERRORS = Counter(
    "payflow_cache_errors_total", "Cache calls that failed (the API served without it).", ["cache"]
)
CACHE_ENTRIES = Gauge("payflow_cache_entries", "Entries in the in-process response cache.", ["cache"])
CACHE_BYTES = Gauge("payflow_cache_bytes", "Bytes held by the in-process response cache.", ["cache"])
REDIS_UP = Gauge("payflow_redis_up", "1 when the last Redis call succeeded.")

FAULT_ACTIVE = Gauge("payflow_fault_active", "1 when the fault is in force.", ["fault"])
FAULT_PARAM = Gauge("payflow_fault_parameter", "The parameters of the faults in force.", ["fault", "param"])
FAULT_REJECTIONS = Counter(
    "payflow_fault_config_rejections_total", "Fault configurations rejected as invalid.", ["source"]
)
FAULT_TRANSITIONS = Counter("payflow_fault_transitions_total", "Fault transitions.", ["fault", "change"])
FAULT_INJECTIONS = Counter(
    "payflow_fault_injections_total", "Requests or ticks on which a fault acted.", ["fault"]
)
FAULT_WATCH_UP = Gauge("payflow_fault_watch_connected", "1 while the ConfigMap watch is connected.")


# --- labelled children, looked up once ------------------------------------------------------------
# ``labels()`` takes a lock and builds a key on every call; the hot path asks these caches instead.
# They hold what the metrics already hold (prometheus-client keeps every child), so no new bound.

_HTTP_CHILDREN: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
_TX_CHILDREN: dict[tuple[str, str], Counter] = {}


def http_request(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    """The (request counter, duration histogram) children of a route, method and status."""
    key = (route, method, status)
    children = _HTTP_CHILDREN.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(route, method, str(status)), HTTP_DURATION.labels(route, method))
        _HTTP_CHILDREN[key] = children
    return children


def transactions(status: str, currency: str) -> Counter:
    """The ``payflow_transactions_total`` child of a status and currency."""
    child = _TX_CHILDREN.get((status, currency))
    if child is None:
        child = _TX_CHILDREN[(status, currency)] = TRANSACTIONS.labels(status, currency)
    return child
