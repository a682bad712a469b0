"""The operator killed with SIGKILL at seeded random moments, over many cycles of incidents
applied, updated, deleted and expiring (short durations). After every cycle, and so after
every restart, the ConfigMap holds ``payflow.faults.merge`` of the baseline and the incidents
still active, and no incident is stuck: deleted ones are gone (none carries a finalizer),
expired ones are Expired, the others Active at their latest generation.

Cycles: PAYFLOW_RESILIENCE_CYCLES (12 in `make test`, 100 in `make resilience-operator`);
seed: PAYFLOW_RESILIENCE_SEED."""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from payflow import naming
from payflow.operator.durations import parse_time
from tests.resilience.support import Kube, Operator, expected_faults, report, scale, while_running
from tests.support import wait_for

CONVERGE_S = 20.0  # generous: the operator restarts, lists, and reconciles on a shared machine


def random_faults(rng: random.Random) -> dict[str, Any]:
    """One or two faults with parameters inside the vocabulary's ranges."""
    makers: dict[str, Callable[[], dict[str, Any]]] = {
        "latency": lambda: {"delayMs": rng.randint(1, 500), "jitterMs": rng.randint(0, 50)},
        "errorRate": lambda: {"ratio": round(rng.uniform(0.01, 0.5), 2)},
        "cpuBurn": lambda: {"cores": rng.choice([0.1, 0.5, 1.0])},
        "panic": lambda: {"probability": round(rng.uniform(0.0, 0.2), 2), "meanIntervalSeconds": 600},
        "dbTimeout": lambda: {"holdSeconds": rng.randint(1, 60), "connections": rng.randint(0, 5)},
        "oom": lambda: {"growthKiBPerRequest": rng.randint(1, 1024)},
    }
    return {name: makers[name]() for name in rng.sample(sorted(makers), rng.choice([1, 1, 2]))}


def problems(kube: Kube) -> list[str]:
    """What is wrong now, from what a user can read: the incidents and the ConfigMap."""
    now = datetime.now(UTC)
    found: list[str] = []
    active: list[dict[str, Any]] = []
    for item in kube.incidents():
        meta, spec, status = item["metadata"], item["spec"], item.get("status") or {}
        name = meta["name"]
        if meta.get("deletionTimestamp"):
            found.append(f"{name}: stuck deleting, finalizers {meta.get('finalizers')}")
            continue
        if meta.get("finalizers"):
            found.append(f"{name}: finalizers {meta['finalizers']} (nothing may hold it or its namespace)")
        expires = parse_time(status["expiresAt"]) if status.get("expiresAt") else None
        if spec.get("duration") and expires is None:
            found.append(f"{name}: has a duration but no expiresAt (phase {status.get('phase')})")
        expired = expires is not None and now >= expires
        want = "Expired" if expired else "Active"
        if status.get("phase") != want:
            found.append(f"{name}: phase {status.get('phase')}, want {want}")
        if not expired:
            active.append(spec["faults"])
            if status.get("observedGeneration") != meta.get("generation"):
                found.append(f"{name}: generation {meta.get('generation')} not observed")
    data = kube.configmap_data()
    if data.get("APP_UNRELATED_KEY") != "kept":
        found.append("a key the operator does not own was changed")
    if kube.faults() != expected_faults(active):
        found.append(f"ConfigMap {kube.faults().to_env()} != merge {expected_faults(active).to_env()}")
    return found


@pytest.fixture
def crash_release(kubeconfig: Path) -> Iterator[Kube]:
    """A namespace of its own on the session's API server, with the CRD and a faults ConfigMap.
    Afterwards its incidents lose their finalizer (no operator may run by then) and it goes."""
    kube = Kube(kubeconfig, f"res-{uuid.uuid4().hex[:8]}")
    kube.install()
    yield kube
    for item in kube.incidents():
        kube.custom.patch_namespaced_custom_object(
            naming.GROUP,
            naming.VERSION,
            kube.namespace,
            naming.PLURAL,
            item["metadata"]["name"],
            {"metadata": {"finalizers": None}},
        )
    kube.core.delete_namespace(kube.namespace)
    kube.close()


def test_operator_sigkilled_at_random_moments(crash_release: Kube, tmp_path: Path) -> None:
    kube = crash_release
    cycles = scale("PAYFLOW_RESILIENCE_CYCLES", 12)
    seed = scale("PAYFLOW_RESILIENCE_SEED", 7)
    rng = random.Random(seed)
    operator = Operator(kube.kubeconfig, kube.namespace, tmp_path)
    operator.start()
    counter = 0
    actions: dict[str, int] = {}
    leaks: list[dict[str, Any]] = []
    restart_s: list[float] = []
    converge_s: list[float] = []
    kills = 0
    expired_seen: set[str] = set()

    def live() -> list[dict[str, Any]]:
        return [i for i in kube.incidents() if not i["metadata"].get("deletionTimestamp")]

    def act() -> None:
        nonlocal counter
        items = live()
        choices = ["apply", "apply-expiring"] + (["update", "delete"] if items else [])
        action = rng.choice(choices)
        actions[action] = actions.get(action, 0) + 1
        if action.startswith("apply"):
            counter += 1
            duration = f"{rng.randint(1, 4)}s" if action == "apply-expiring" else None
            kube.create(f"i{counter}", random_faults(rng), duration)
        else:
            name = rng.choice(items)["metadata"]["name"]
            if action == "update":
                kube.update(name, random_faults(rng))
            else:
                kube.delete(name)

    try:
        for cycle in range(cycles):
            kill = rng.random() < 0.6
            kill_first = kill and rng.random() < 0.3  # the operator is down while the change happens
            if kill_first:
                operator.kill()
                kills += 1
            act()
            if kill and not kill_first:
                moment = time.monotonic() + rng.uniform(0.0, 0.4)  # mid-reconcile, or just after
                while_running(moment, lambda: None, interval=0.01)
                operator.kill()
                kills += 1
            if kill:
                if rng.random() < 0.5:
                    act()  # one more change while it is down
                restart_s.append(operator.start())
            started = time.monotonic()
            try:
                wait_for(lambda: not problems(kube), CONVERGE_S, f"cycle {cycle} to converge")
                converge_s.append(time.monotonic() - started)
            except AssertionError:
                leaks.append({"cycle": cycle, "problems": problems(kube)})
            expired_seen.update(
                i["metadata"]["name"] for i in live() if (i.get("status") or {}).get("phase") == "Expired"
            )
        # The end: every incident deleted; the baseline alone, nothing left behind.
        for item in live():
            kube.delete(item["metadata"]["name"])
        try:
            wait_for(
                lambda: not kube.incidents() and kube.faults() == expected_faults([]), CONVERGE_S, "clean up"
            )
        except AssertionError:
            leaks.append({"cycle": "end", "problems": problems(kube), "left": len(kube.incidents())})
    finally:
        operator.stop()

    figures: dict[str, Any] = {
        "seed": seed,
        "cycles": cycles,
        "kills": kills,
        "actions": dict(sorted(actions.items())),
        "incidents_created": counter,
        "incidents_seen_expired": len(expired_seen),
        "operator_restart_s_median": round(statistics.median(restart_s), 2) if restart_s else None,
        "converge_s_median": round(statistics.median(converge_s), 2) if converge_s else None,
        "converge_s_max": round(max(converge_s), 2) if converge_s else None,
        "leaks": len(leaks),
    }
    report("operator-crashes", figures)
    assert kills > 0
    assert not leaks, leaks
