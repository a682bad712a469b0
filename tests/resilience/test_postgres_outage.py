"""PostgreSQL stopped for 10 s under load: the API answers clear 503s with its JSON error body,
/ready says unavailable, service is back within 5 s of the database's return, and no payment
the client saw acknowledged is lost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.resilience.conftest import OwnStack
from tests.resilience.support import App, BackgroundLoad, audit, report, retry_everything, while_running
from tests.support import wait_for

OUTAGE_S = 10.0  # the fault: how long PostgreSQL stays down
RECOVERY_S = 5.0  # the acceptance deadline after its return
RATE = 25.0  # requests per second
WARM_S = 3.0
AFTER_S = 8.0
DB_CODES = {"db_unavailable", "db_pool_exhausted"}


def test_postgres_stopped_for_10s_under_load(own_stack: OwnStack, tmp_path: Path) -> None:
    stack = own_stack("postgres", "redis")
    app = App(stack, tmp_path)
    app.start()
    probe = httpx.Client(base_url=app.url, timeout=8)
    ready_during: list[tuple[int, str]] = []

    def ready() -> tuple[int, str]:
        return app.ready(probe)

    def serving() -> bool:
        return ready() == (200, "ready") and probe.get("/api/stats").status_code == 200

    load = BackgroundLoad(app.url, RATE, WARM_S + OUTAGE_S + RECOVERY_S + AFTER_S, seed=3)
    with load:
        wait_for(lambda: len(load.ledger.acknowledged()) >= 10, 15, "payments acknowledged before the outage")
        stack.stop_component("postgres")
        down_at = time.monotonic()
        while_running(down_at + OUTAGE_S, lambda: ready_during.append(ready()))
        stack.start_component("postgres")
        back_at = time.monotonic()
        wait_for(serving, 30, "the API serving again after PostgreSQL's return")
        recovered_s = time.monotonic() - back_at
    probe.close()

    answers = [a for _, a in load.ledger.snapshot()]
    during = [a for a in answers if down_at + 1.0 <= a.at <= back_at]  # 1 s for the stop to show
    failed = [a for a in during if a.status is None or a.status >= 500]
    unclear = [a for a in failed if not (a.status == 503 and a.json_error and a.error_code in DB_CODES)]
    codes: dict[str, int] = {}
    for a in failed:
        codes[str(a.error_code)] = codes.get(str(a.error_code), 0) + 1
    acknowledged = load.ledger.acknowledged()
    retried = retry_everything(app.url, load.ledger)
    figures: dict[str, Any] = {
        "outage_s": OUTAGE_S,
        "requests_during_outage": len(during),
        "answers_during_outage": load.ledger.statuses(down_at + 1.0, back_at),
        "error_codes_during_outage": codes,
        "unclear_failures": len(unclear),
        "ready_probes_during_outage": len(ready_during),
        "ready_probes_not_ready": sum(1 for r in ready_during if r[0] == 503),
        "recovery_s_after_return": round(recovered_s, 2),
        "final_retry_answers": retried,
        **audit(stack.database_url, load.ledger, acknowledged),
    }
    report("postgres-outage", figures)

    assert failed, "the outage went unnoticed: no request failed while PostgreSQL was down"
    assert not unclear, f"failures that are not a 503 with the JSON error body: {unclear[:5]}"
    # /ready turns false within the first probe or two and stays false until the database is back.
    assert ready_during[-1] == (503, "unavailable")
    assert figures["ready_probes_not_ready"] >= len(ready_during) - 2, ready_during
    assert recovered_s <= RECOVERY_S, f"service came back {recovered_s:.1f}s after PostgreSQL, not within 5s"
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0


def test_stopping_postgres_is_a_fast_shutdown_that_keeps_commits(own_stack: OwnStack) -> None:
    """The local stack stops PostgreSQL with its fast shutdown: open sessions (a pool's) do not
    hold it up until the SIGKILL, and what was committed is there after the restart."""
    stack = own_stack("postgres")
    with psycopg.connect(stack.database_url, autocommit=True) as held:  # a pooled session never ends
        held.execute("CREATE TABLE kept (n int)")
        held.execute("INSERT INTO kept SELECT generate_series(1, 1000)")
        started = time.monotonic()
        stack.stop_component("postgres")
        stopped_in = time.monotonic() - started
    assert stopped_in < 5, f"PostgreSQL took {stopped_in:.1f}s to stop with a session open"
    log = (stack.logs / "postgres.log").read_text()
    assert "received fast shutdown request" in log
    stack.start_component("postgres")
    assert "not properly shut down" not in (stack.logs / "postgres.log").read_text()
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1000,)
