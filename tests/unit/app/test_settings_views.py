from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from payflow.app.series import Bucket
from payflow.app.settings import Settings, get_settings, redact_url
from payflow.app.views import CursorError, decode_cursor, encode_cursor, format_amount
from payflow.app.window import RequestWindow, bin_ms, latency_bin, percentile, summarize
from payflow.faults import ALL_ENV_KEYS, ENV_PREFIX, FaultSet


def test_settings_read_the_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:secret@db:5432/pay")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@cache:6379/0")
    monkeypatch.setenv("PAYFLOW_RELEASE", "shop")
    monkeypatch.setenv("PAYFLOW_NAMESPACE", "demo")
    monkeypatch.setenv("PAYFLOW_WATCH_FAULTS", "false")
    monkeypatch.setenv("PAYFLOW_OOM_CEILING_MB", "128")
    monkeypatch.setenv("PAYFLOW_PORT", "9000")
    monkeypatch.setenv("KUBECONFIG", "/tmp/kc")
    s = Settings()
    assert (s.release, s.namespace, s.watch_faults, s.oom_ceiling_mb, s.port) == (
        "shop",
        "demo",
        False,
        128,
        9000,
    )
    assert s.faults_configmap == "shop-faults"
    assert s.kubeconfig == "/tmp/kc"
    public = str(s.public())
    assert "secret" not in public
    assert "pw" not in public
    assert "kc" not in public


def test_settings_hand_every_fault_key_to_the_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's settings take the INJECT_* keys as they are, and FaultSet.from_env parses them:
    every key of the vocabulary reaches it, and no setting of its own uses the prefix."""
    env = FaultSet.from_spec(
        {
            "oom": {},
            "latency": {"delayMs": 5},
            "errorRate": {"ratio": 0.1},
            "cpuBurn": {},
            "panic": {},
            "dbTimeout": {},
        }
    ).to_env()
    assert set(env) == ALL_ENV_KEYS
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.fault_env == env
    assert FaultSet.from_env(s.fault_env).to_env() == env
    for name, field in Settings.model_fields.items():
        assert not name.upper().startswith(ENV_PREFIX)
        assert not str(field.validation_alias or "").startswith(ENV_PREFIX)


def test_get_settings_is_cached() -> None:
    get_settings.cache_clear()
    assert get_settings() is get_settings()
    get_settings.cache_clear()


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_cursor_round_trip_and_errors() -> None:
    at, tx = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC), uuid4()
    assert decode_cursor(encode_cursor(at, tx)) == (at, tx)
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor(at, tx)[:-3], "WyIyMDI2LTAxLTAyIiwgIngiXQ"):
        with pytest.raises(CursorError):
            decode_cursor(bad)


def test_format_amount() -> None:
    from decimal import Decimal

    assert format_amount(Decimal("12.5000"), "EUR") == "12.50"
    assert format_amount(Decimal("1500.0000"), "JPY") == "1500"
    assert format_amount(Decimal("1.5"), "KWD") == "1.500"


def test_window_percentiles_are_within_the_bin_precision() -> None:
    assert percentile({}, 0.5) is None
    hist: dict[int, int] = {}
    for ms in (1.0, 2.0, 3.0, 4.0):
        hist[latency_bin(ms)] = hist.get(latency_bin(ms), 0) + 1
    assert percentile(hist, 0.5) == pytest.approx(2.0, rel=0.025)
    assert latency_bin(0.001) == 0
    assert bin_ms(latency_bin(0.35)) == pytest.approx(0.35, rel=0.025)  # sub-millisecond stays readable


def test_the_window_sums_the_seconds_it_covers() -> None:
    seconds = []
    for i in range(100):  # 100 s, one request a second: 10, 20, ... 1000 ms; every 10th a 5xx
        ms = 10.0 * (i + 1)
        seconds.append((100 - i, Bucket(requests=1, errors=int(i % 10 == 0), hist={latency_bin(ms): 1})))
    w = summarize(seconds, 100.0, 60)
    assert w.requests == 61  # t = 40 ... 100
    assert w.error_ratio == round(7 / 61, 4)
    assert w.p50_ms == pytest.approx(310.0, rel=0.025)
    assert w.p95_ms == pytest.approx(580.0, rel=0.025)
    assert w.rate_per_s == round(61 / 60, 3)


def test_a_busy_window_counts_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("payflow.app.window.time.monotonic", lambda: now[0])
    window = RequestWindow(horizon_s=300)
    for second in range(300):  # 1,000 requests a second for five minutes: 300,000 in all
        now[0] = 1000.0 + second
        for _ in range(1000):
            window.add(0.002, server_error=False)
    five_min = window.stats()[1]
    assert five_min.requests == 300_000
    assert five_min.rate_per_s == 1000.0
    assert five_min.p50_ms == pytest.approx(2.0, rel=0.025)


def test_filtered_query_keeps_the_given_conditions_and_every_value_a_parameter() -> None:
    from payflow.app.repository import filtered_query

    sql, params = filtered_query(
        "SELECT x FROM t",
        [("(a, b) < (%s, %s)", (1, "z")), ("c = %s", None), ("d >= %s", "2026")],
        "a DESC",
        50,
    )
    assert sql == "SELECT x FROM t WHERE (a, b) < (%s, %s) AND d >= %s ORDER BY a DESC LIMIT %s"
    assert params == [1, "z", "2026", 50]
    assert filtered_query("SELECT x FROM t", [("c = %s", None)], "a", 5) == (
        "SELECT x FROM t ORDER BY a LIMIT %s",
        [5],
    )
