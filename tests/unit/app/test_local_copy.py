"""The replica's copy of /api/stats: fresh for its TTL, then served stale only for a grace."""

from __future__ import annotations

import pytest

from payflow.app import cache


def test_fresh_then_stale_within_the_grace_then_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("payflow.app.cache.time.monotonic", lambda: now[0])
    copy = cache.LocalCopy()
    assert copy.fresh() is None
    assert copy.stale(2.0) is None
    copy.store(b"v1", 0.5)
    assert copy.fresh() == b"v1"
    now[0] = 100.6  # expired
    assert copy.fresh() is None
    assert copy.stale(2.0) == b"v1"
    now[0] = 102.6  # expired more than the grace ago
    assert copy.stale(2.0) is None
