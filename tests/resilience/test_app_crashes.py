"""The app crashing under load: the panic fault kills it (exit 70) while the open-loop load
generator runs, and the local stack's supervisor restarts it the way the kubelet does (a
:class:`~payflow.devstack.workloads.Workload`, back-off and all). Afterwards the client retries
every POST it sent with the same Idempotency-Key, acknowledged or not.

Every payment the client saw succeed is in the database exactly once, under the id it was
given; no retry created a second row. Crashes: PAYFLOW_RESILIENCE_CRASHES (3 in `make test`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from payflow.devstack.workloads import Workload, crash_backoff
from tests.resilience.conftest import OwnStack
from tests.resilience.support import (
    App,
    BackgroundLoad,
    audit,
    report,
    retry_everything,
    scale,
    while_running,
)
from tests.support import wait_for

PANIC_EXIT = 70
RATE = 30.0
PANIC = {  # each API request crashes the process with this chance; no crash without traffic
    "INJECT_PANIC": "true",
    "INJECT_PANIC_PROBABILITY": "0.03",
    "INJECT_PANIC_MEAN_INTERVAL_S": "0",
}


def test_acknowledged_payments_survive_app_crashes(own_stack: OwnStack, tmp_path: Path) -> None:
    crashes_wanted = scale("PAYFLOW_RESILIENCE_CRASHES", 3)
    stack = own_stack("postgres", "redis")
    app = App(stack, tmp_path)
    # The first `crashes_wanted` "pods" carry the panic fault; the one after starts without it.
    workload = Workload(
        "app",
        lambda restarts: app.process(restarts, PANIC if restarts < crashes_wanted else None),
        app.healthy,
    )
    workload.start()
    workload.wait_ready(timeout=60)
    # Long enough for every crash, its back-off and a start, then calm traffic at the end.
    backoffs = sum(crash_backoff(n) for n in range(1, crashes_wanted + 1))
    duration = backoffs + 4.0 * crashes_wanted + 6.0

    def crashes() -> int:
        return sum(1 for h in workload.history if h["exit"] == PANIC_EXIT)

    load = BackgroundLoad(app.url, RATE, duration, seed=2)
    try:
        with load:
            while_running(time.monotonic() + duration, lambda: workload.tick(time.monotonic()))
        wait_for(
            lambda: workload.tick(time.monotonic()) is None and workload.running and app.healthy(),
            60,
            "the app running again after the last crash",
        )
        acknowledged = load.ledger.acknowledged()
        during_load = load.ledger.statuses()
        retried = retry_everything(app.url, load.ledger)  # the client retries after the crashes
    finally:
        workload.stop()

    figures: dict[str, Any] = {
        "crashes": crashes(),
        "exits": [h["exit"] for h in workload.history],
        "restarts": workload.restarts,
        "load_seconds": round(duration, 1),
        "answers_during_load": during_load,
        "final_retry_answers": retried,
        **audit(stack.database_url, load.ledger, acknowledged),
    }
    report("app-crashes", figures)

    assert crashes() == crashes_wanted, workload.history
    assert figures["lost"] == 0
    assert figures["duplicated"] == 0
    # Every retry answered: replayed, or created once (what the crash lost before it committed).
    assert set(retried) <= {"201 replayed", "201 created"}, retried
    assert figures["stored"] == figures["keys"]  # after the retries, every payment sent is stored
