"""The fault history of the faults that crash the app, on real pods: the timeline an RCA tool is
scored against stays complete when the process dies.

For ``panic`` and ``oom`` (live delivery), each test waits until a pod has crashed twice under
the fault and is down right now (waiting out the kubelet's back-off), deletes the incident then,
and reads ``/api/faults/history`` once every pod is back. Each replica's history must:

- name the incident on every transition, with one ``on`` per replica (no ``on`` per restart);
- end with an ``off`` naming the incident; for the pod that was down, written at its next
  start (``ended_while_down``) and dated no later than the deletion;
- hold one ``crash`` row per crash: for ``panic`` written by the process (exit code 70), for
  ``oom`` read from the pod's ``lastState.terminated`` (OOMKilled, 137, at the kubelet's
  ``finishedAt``), never more than the container restarts.

The kubelet's back-off is real (10 s, doubling), so deadlines are minutes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from payflow import naming
from tests.e2e.conftest import NS, RELEASE, Cluster
from tests.support import wait_for

pytestmark = pytest.mark.e2e

SETTLE_DEADLINE = 360.0  # every app pod Ready again: a back-off can reach minutes
CRASH_DEADLINE = 240.0  # two crashes of one pod under the fault (back-off 10 s, then 20 s)
HISTORY_DEADLINE = 120.0
DOWN_JUST_NOW = timedelta(seconds=6)  # after a 2nd restart the back-off holds a pod down 20 s
SLACK = timedelta(seconds=2)  # the API's times have whole seconds


def utcnow() -> datetime:
    return datetime.now(UTC)


def kube_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def live_pods(c: Cluster) -> list[dict[str, Any]]:
    return [p for p in c.app_pods() if not p["metadata"].get("deletionTimestamp")]


def app_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod["status"].get("containerStatuses") or []
    return next((s for s in statuses if s["name"] == "app"), statuses[0] if statuses else {})


def restarts(pod: dict[str, Any]) -> int:
    return int(app_status(pod).get("restartCount", 0))


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def last_end(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The latest termination of the app container (``state`` or ``lastState``)."""
    s = app_status(pod)
    ends = [
        t
        for t in ((s.get("state") or {}).get("terminated"), (s.get("lastState") or {}).get("terminated"))
        if t
    ]
    return max(ends, key=lambda t: kube_time(t["finishedAt"])) if ends else None


def fresh_pods(c: Cluster) -> dict[str, int]:
    """New app pods (``kubectl rollout restart``), Ready: the kubelet's back-off belongs to a pod
    and doubles with each crash up to 5 min, so pods that crashed in an earlier test would come
    back only minutes after the next incident ends. Their restart counts (0)."""
    c.k("rollout", "restart", f"deployment/{RELEASE}")
    c.k("rollout", "status", f"deployment/{RELEASE}", "--timeout=300s")
    return settle(c)


def settle(c: Cluster) -> dict[str, int]:
    """Every app pod Ready (as many as the Deployment wants); their restart counts."""

    def probe() -> dict[str, int] | None:
        pods = live_pods(c)
        wanted = c.json("get", "deployment", RELEASE)["spec"]["replicas"]
        if len(pods) == wanted and all(is_ready(p) for p in pods):
            return {p["metadata"]["name"]: restarts(p) for p in pods}
        return None

    return wait_for(probe, timeout=SETTLE_DEADLINE, interval=1.0, what="every app pod Ready")


def history(c: Cluster, fault: str, since: datetime) -> list[dict[str, Any]]:
    """``/api/faults/history`` of ``fault`` since ``since``, oldest first: through the Service,
    else through any app pod that answers (while the others crash)."""
    query = urlencode({"fault": fault, "since": since.isoformat(), "limit": 1000})
    paths = [f"/api/v1/namespaces/{NS}/services/{RELEASE}:80/proxy/api/faults/history?{query}"]
    paths += [
        f"/api/v1/namespaces/{NS}/pods/{p['metadata']['name']}:8080/proxy/api/faults/history?{query}"
        for p in live_pods(c)
    ]
    last: AssertionError | None = None
    for path in paths:
        try:
            items: list[dict[str, Any]] = json.loads(c.k("get", "--raw", path))["items"]
        except AssertionError as exc:
            last = exc
            continue
        return sorted(items, key=lambda r: (r["at"], r["id"]))
    raise AssertionError(f"no app pod answered /api/faults/history: {last}")


def names(row: dict[str, Any]) -> list[str]:
    return [i["incident"] for i in row["incidents"]]


class Incident:
    """One live incident of the release, deleted at the end whatever happens."""

    def __init__(self, c: Cluster, faults: str) -> None:
        self.c = c
        self.name = f"e2e-gt-{uuid.uuid4().hex[:8]}"
        self.faults = faults
        self.deleted_at: tuple[datetime, datetime] | None = None

    def apply(self) -> None:
        self.c.k(
            "apply",
            "-f",
            "-",
            input=(
                f"apiVersion: {naming.GROUP}/{naming.VERSION}\nkind: {naming.KIND}\n"
                f"metadata: {{name: {self.name}}}\n"
                f"spec: {{target: {RELEASE}, delivery: live, faults: {self.faults}}}\n"
            ),
        )
        wait_for(
            lambda: self.c.json("get", "pfi", self.name).get("status", {}).get("phase") == "Active",
            timeout=60,
            interval=0.5,
            what=f"incident {self.name} Active",
        )

    def delete(self) -> None:
        before = utcnow()
        self.c.k("delete", "pfi", self.name, "--ignore-not-found", "--wait=true", "--timeout=120s")
        if self.deleted_at is None:
            self.deleted_at = (before, utcnow())


@pytest.fixture
def incidents(cluster: Cluster) -> Iterator[list[Incident]]:
    made: list[Incident] = []
    yield made
    for i in made:
        i.delete()


def crash_twice_then_end_while_down(
    c: Cluster, incident: Incident, t0: datetime, before: dict[str, int], reason: str | None, exit_code: int
) -> tuple[str, list[datetime]]:
    """Wait until a pod has restarted twice under the fault and is down right now after an
    end with ``reason``/``exit_code``, then delete the incident: it ends while that pod waits
    out its back-off. The pod, and the ends of its containers since ``t0`` that the test saw."""
    seen: dict[str, set[datetime]] = {}

    def down_after_two() -> tuple[str, dict[str, Any]] | None:
        for pod in live_pods(c):
            name = pod["metadata"]["name"]
            end = last_end(pod)
            if end is None or end.get("exitCode") != exit_code or (reason and end.get("reason") != reason):
                continue
            finished = kube_time(end["finishedAt"])
            if finished < t0 - SLACK:  # an end before this test (an earlier incident)
                continue
            seen.setdefault(name, set()).add(finished)
            running = "running" in (app_status(pod).get("state") or {})
            if (
                restarts(pod) - before.get(name, 0) >= 2
                and not running
                and utcnow() - finished < DOWN_JUST_NOW
            ):
                return name, end
        return None

    pod, _ = wait_for(
        down_after_two, timeout=CRASH_DEADLINE, interval=0.5, what="a pod down after its 2nd crash"
    )
    incident.delete()
    return pod, sorted(seen[pod])


def check_history(
    c: Cluster, fault: str, incident: Incident, t0: datetime, down_pod: str, before: dict[str, int]
) -> list[dict[str, Any]]:
    """What every replica's history must say once every pod is back (see the module's doc)."""
    assert incident.deleted_at is not None
    deleted_by = incident.deleted_at[1] + SLACK
    after = settle(c)

    seen: list[list[dict[str, Any]]] = [[]]

    def closed() -> list[dict[str, Any]] | None:
        seen[0] = history(c, fault, t0 - SLACK)
        rows = [r for r in seen[0] if incident.name in names(r)]
        replicas = {r["replica"] for r in rows if r["kind"] == "transition"}
        last = {
            rep: [r for r in rows if r["kind"] == "transition" and r["replica"] == rep][-1]
            for rep in replicas
        }
        return rows if down_pod in replicas and all(r["change"] == "off" for r in last.values()) else None

    try:
        rows = wait_for(closed, timeout=HISTORY_DEADLINE, interval=2.0, what=f"every {fault} interval closed")
    except AssertionError as exc:
        shown = [
            {k: r.get(k) for k in ("at", "replica", "kind", "change", "source", "reason")}
            | {"incidents": names(r)}
            for r in seen[0]
        ]
        raise AssertionError(
            f"{exc}\ndown pod {down_pod}; the history:\n" + "\n".join(map(str, shown))
        ) from None
    transitions = [r for r in rows if r["kind"] == "transition"]
    for replica in {r["replica"] for r in transitions}:
        mine = [r for r in transitions if r["replica"] == replica]
        assert [r["change"] for r in mine] == ["on", "off"], f"{replica}: one on, then one off: {mine}"
        on, off = mine
        assert names(on) == [incident.name]
        assert names(off) == [incident.name]
        assert t0 - SLACK <= kube_time(on["at"]) <= kube_time(off["at"]) <= deleted_by, (on, off)
    # the pod that was down when the incident ended: its off was written at its next start
    (off,) = [r for r in transitions if r["replica"] == down_pod and r["change"] == "off"]
    assert (off["reason"], off["source"]) == ("ended_while_down", "recovery"), off
    assert off["at_basis"] in ("sibling", "configmap_change"), off
    assert kube_time(off["recorded_at"]) > kube_time(off["at"])
    assert off["pod"] == down_pod
    # a crash row for each crash at most (none twice), at least one for each pod that crashed
    crashes = [r for r in rows if r["kind"] == "crash"]
    assert crashes, "crash rows"
    for crash in crashes:
        assert (crash["change"], crash["fault"], crash["pod"]) == ("crash", fault, crash["replica"]), crash
        assert t0 - SLACK <= kube_time(crash["at"]) <= deleted_by, crash
    for pod, count in after.items():
        mine = [r for r in crashes if r["pod"] == pod]
        assert len(mine) <= count - before.get(pod, 0), f"{pod}: {len(mine)} crash rows for fewer restarts"
    assert len([r for r in crashes if r["pod"] == down_pod]) >= 2
    return rows


def test_panic_history_names_the_incident_records_each_crash_and_the_end_while_down(
    cluster: Cluster, incidents: list[Incident]
) -> None:
    before = fresh_pods(cluster)
    t0 = utcnow()
    incident = Incident(cluster, "{panic: {probability: 0.05, meanIntervalSeconds: 3}}")
    incidents.append(incident)
    incident.apply()
    down_pod, ends = crash_twice_then_end_while_down(cluster, incident, t0, before, None, 70)

    rows = check_history(cluster, "panic", incident, t0, down_pod, before)
    crashes = [r for r in rows if r["kind"] == "crash" and r["pod"] == down_pod]
    # the process wrote its own row just before it exited (the next start reads the kubelet's
    # end only when that row is missing: it waits 1 s at most for the database)
    for r in crashes:
        assert r["exit_code"] == 70, r
        assert (r["reason"], r["source"]) in (("panic", "process"), ("Error", "kubelet")), r
    assert any(r["source"] == "process" for r in crashes), crashes
    for end in ends:
        assert any(abs(kube_time(r["at"]) - end) <= SLACK for r in crashes), (end, crashes)


def test_oom_history_records_each_oom_kill_from_the_pod_status_and_the_end_while_down(
    cluster: Cluster, incidents: list[Incident]
) -> None:
    before = fresh_pods(cluster)
    t0 = utcnow()
    # fast enough to be killed within a minute, slow enough for each new container to read
    # its pod's status first (a few seconds)
    incident = Incident(cluster, "{oom: {growthKiBPerRequest: 1, floorKiBPerSecond: 4096}}")
    incidents.append(incident)
    incident.apply()
    down_pod, ends = crash_twice_then_end_while_down(cluster, incident, t0, before, "OOMKilled", 137)

    rows = check_history(cluster, "oom", incident, t0, down_pod, before)
    crashes = [r for r in rows if r["kind"] == "crash" and r["pod"] == down_pod]
    for r in crashes:
        assert (r["exit_code"], r["reason"], r["source"]) == (137, "OOMKilled", "kubelet"), r
        assert r["at_basis"] == "container_status"
        assert r["container_id"], r
    # each row is an OOM kill the test saw (at the kubelet's finishedAt), once; the first kill and
    # the last (recorded after the incident ended) always are. KNOWN GAP (issue 11, item 9): a kill
    # between them can go unrecorded (seen in every run on the node: the middle of three kills);
    # the kubelet keeps only the last termination, so the container after it must record it.
    recorded = [kube_time(r["at"]) for r in crashes]
    assert sorted(set(recorded)) == sorted(recorded), f"a kill recorded twice: {recorded}"
    assert all(any(abs(t - end) <= SLACK for end in ends) for t in recorded), (recorded, ends)
    assert ends[0] in recorded, (ends, recorded)
    missed = [e for e in ends if e not in recorded]
    print(f"oom kills seen {len(ends)}, recorded {len(recorded)}, missed {missed}")
