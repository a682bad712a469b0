"""Redis stopped under load: Redis is only a cache, so no request gets a 5xx (nor goes
unanswered), /ready says degraded, and the cache comes back by itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.resilience.conftest import OwnStack
from tests.resilience.support import App, BackgroundLoad, audit, report, while_running
from tests.support import wait_for

OUTAGE_S = 5.0
RATE = 25.0
WARM_S = 3.0
AFTER_S = 4.0


def test_redis_stopped_under_load_gives_no_5xx(own_stack: OwnStack, tmp_path: Path) -> None:
    stack = own_stack("postgres", "redis")
    app = App(stack, tmp_path)
    app.start()
    probe = httpx.Client(base_url=app.url, timeout=8)
    ready_during: list[tuple[int, str]] = []

    def ready() -> tuple[int, str]:
        return app.ready(probe)

    load = BackgroundLoad(app.url, RATE, WARM_S + OUTAGE_S + AFTER_S + 4, seed=4)
    with load:
        wait_for(lambda: len(load.ledger.acknowledged()) >= 10, 15, "payments acknowledged before the outage")
        stack.stop_component("redis")
        down_at = time.monotonic()
        while_running(down_at + OUTAGE_S, lambda: ready_during.append(ready()))
        stack.start_component("redis")
        back_at = time.monotonic()
        wait_for(lambda: ready() == (200, "ready"), 15, "/ready back to ready with Redis")
        recovered_s = time.monotonic() - back_at
    probe.close()

    answers = [a for _, a in load.ledger.snapshot()]
    bad = [a for a in answers if a.status is None or a.status >= 500]
    acknowledged = load.ledger.acknowledged()
    figures: dict[str, Any] = {
        "outage_s": OUTAGE_S,
        "requests": len(answers),
        "requests_during_outage": sum(1 for a in answers if down_at <= a.at <= back_at),
        "answers": load.ledger.statuses(),
        "answers_during_outage": load.ledger.statuses(down_at, back_at),
        "5xx_or_unanswered": len(bad),
        "ready_during_outage": sorted({f"{c} {s}" for c, s in ready_during}),
        "ready_again_s_after_return": round(recovered_s, 2),
        **audit(stack.database_url, load.ledger, acknowledged),
    }
    report("redis-outage", figures)

    assert figures["requests_during_outage"] > 0
    assert not bad, f"5xx or unanswered with Redis down: {bad[:5]}"
    assert (200, "degraded") in ready_during
    assert all(code == 200 for code, _ in ready_during), ready_during
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0
