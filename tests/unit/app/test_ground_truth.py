"""What a replica writes to the fault history at start, at a crash and for a gone replica: the
pure decisions, given what it recorded last and what is in force now."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from payflow.app.faults import ground_truth as gt
from payflow.app.faults.ground_truth import ContainerStatus, Observed, Recorded, Start, Termination
from payflow.app.faults.state import AtBasis, Change, Incident, Kind, Source, Transition
from payflow.faults import FaultSet

T0 = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)
BOOM = (Incident("boom", "2026-11-26T23:00:00Z"),)
PANIC = FaultSet.from_spec({"panic": {"meanIntervalSeconds": 2}})
PANIC_PARAMS = PANIC.get("panic")


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def recorded(
    fault: str = "panic",
    change: Change = Change.ON,
    at: float = 0,
    last_seen: float | None = None,
    params: Mapping[str, Any] | None = PANIC_PARAMS,
    row_id: int = 7,
) -> Recorded:
    return Recorded(
        row_id,
        fault,
        change,
        params if change is not Change.OFF else None,
        BOOM if change is not Change.OFF else (),
        s(at),
        s(last_seen if last_seen is not None else at),
    )


NOTHING = FaultSet()


def start(
    faults: FaultSet = NOTHING,
    incidents: Mapping[str, tuple[Incident, ...]] | None = None,
    now: float = 60,
    configmap_changed_at: float | None = None,
) -> Start:
    return Start(
        "shop",
        "app-0",
        s(now),
        faults,
        incidents or {},
        None if configmap_changed_at is None else s(configmap_changed_at),
    )


# --- at start ----------------------------------------------------------------------------------


def test_a_fault_that_ended_while_the_process_was_down_gets_its_off_naming_the_incident() -> None:
    prior = {"panic": recorded(at=0, last_seen=5)}  # on at 0, the last crash at 5
    rows = gt.start_rows(start(FaultSet(), configmap_changed_at=20), prior, {})
    assert len(rows) == 1
    (off,) = rows
    assert (off.fault, off.change, off.kind) == ("panic", Change.OFF, Kind.TRANSITION)
    assert off.incidents == BOOM
    assert off.previous == PANIC_PARAMS
    assert off.params is None
    assert off.source is Source.RECOVERY
    assert off.reason == gt.ENDED_WHILE_DOWN
    assert (off.at, off.at_basis) == (s(20), AtBasis.CONFIGMAP_CHANGE)
    assert off.key == gt.recovery_key("shop", "app-0", "panic", 7)


def test_the_end_time_prefers_what_another_replica_saw_then_the_configmap_then_the_last_evidence() -> None:
    prior = {"panic": recorded(at=0, last_seen=5)}
    seen = {"panic": [Observed(s(3), Change.OFF, None), Observed(s(12), Change.OFF, None)]}
    # a sibling's off before our last evidence belongs to an earlier interval: the later one counts
    (off,) = gt.start_rows(start(configmap_changed_at=20), prior, seen)
    assert (off.at, off.at_basis) == (s(12), AtBasis.SIBLING)
    (off,) = gt.start_rows(start(configmap_changed_at=20), prior, {})
    assert off.at_basis is AtBasis.CONFIGMAP_CHANGE
    # a ConfigMap written last before our last evidence cannot date the end
    (off,) = gt.start_rows(start(configmap_changed_at=4), prior, {})
    assert (off.at, off.at_basis) == (s(5), AtBasis.LAST_SEEN)
    # ... unless in the same second (the API's times have whole seconds): then at the evidence
    (off,) = gt.start_rows(start(configmap_changed_at=4.5), prior, {})
    assert (off.at, off.at_basis) == (s(5), AtBasis.CONFIGMAP_CHANGE)
    (off,) = gt.start_rows(start(), prior, {})
    assert (off.at, off.at_basis) == (s(5), AtBasis.LAST_SEEN)
    # never after the start that finds it
    (off,) = gt.start_rows(start(now=30, configmap_changed_at=45), prior, {})
    assert off.at == s(30)


def test_a_restart_under_the_same_fault_writes_nothing() -> None:
    """The interval goes on across the crash: no second `on` (the crash has its own row)."""
    prior = {"panic": recorded()}
    assert gt.start_rows(start(PANIC, {"panic": BOOM}), prior, {}) == []
    # even if the annotation could not be read this time
    assert gt.start_rows(start(PANIC), prior, {}) == []


def test_a_first_start_under_a_fault_names_the_incidents_of_the_configmap() -> None:
    (on,) = gt.start_rows(start(PANIC, {"panic": BOOM}), {}, {})
    assert (on.change, on.source, on.at_basis, on.at) == (
        Change.ON,
        Source.ENVIRONMENT,
        AtBasis.OBSERVED,
        s(60),
    )
    assert on.incidents == BOOM
    assert on.params == PANIC_PARAMS
    assert on.key is None
    # after an off, likewise
    (again,) = gt.start_rows(start(PANIC, {"panic": BOOM}), {"panic": recorded(change=Change.OFF)}, {})
    assert again.change is Change.ON


def test_other_parameters_after_the_restart_are_a_change_while_down() -> None:
    prior = {"panic": recorded(at=0, last_seen=5)}
    faster = FaultSet.from_spec({"panic": {"meanIntervalSeconds": 1}})
    seen = {
        "panic": [
            Observed(s(8), Change.CHANGED, {"probability": 0.5, "meanIntervalSeconds": 9}),
            Observed(s(9), Change.CHANGED, faster.get("panic")),
        ]
    }
    other = (Incident("faster", None),)
    (changed,) = gt.start_rows(start(faster, {"panic": other}, configmap_changed_at=20), prior, seen)
    assert (changed.change, changed.reason) == (Change.CHANGED, gt.CHANGED_WHILE_DOWN)
    assert changed.previous == PANIC_PARAMS
    assert changed.params == faster.get("panic")
    assert changed.incidents == other
    assert (changed.at, changed.at_basis) == (s(9), AtBasis.SIBLING)


def test_faults_that_stay_off_write_nothing_and_each_fault_is_decided_alone() -> None:
    both = FaultSet.from_spec({"latency": {"delayMs": 100}, "panic": {"meanIntervalSeconds": 2}})
    prior = {"oom": recorded("oom", params=FaultSet.from_spec({"oom": {}}).get("oom"), row_id=3)}
    rows = gt.start_rows(start(both, {"latency": BOOM}), prior, {})
    assert [(r.fault, r.change) for r in rows] == [
        ("oom", Change.OFF),
        ("latency", Change.ON),
        ("panic", Change.ON),
    ]
    assert rows[2].incidents == ()  # the annotation names no incident for panic: the baseline's


def test_the_start_is_idempotent_once_its_rows_are_the_prior() -> None:
    """A retry after the rows were written (the database failed after the commit) adds none."""
    now = start(PANIC, {"panic": BOOM})
    (on,) = gt.start_rows(now, {}, {})
    assert on.change is Change.ON
    assert gt.start_rows(now, {"panic": recorded(at=60)}, {}) == []
    oom = FaultSet.from_spec({"oom": {}}).get("oom")
    (off,) = gt.start_rows(start(), {"oom": recorded("oom", params=oom)}, {})
    assert off.change is Change.OFF
    assert gt.start_rows(start(), {"oom": recorded("oom", change=Change.OFF)}, {}) == []


def test_a_stopping_process_ends_its_faults() -> None:
    (off,) = gt.stop_rows(PANIC, {"panic": BOOM}, s(9))
    assert (off.change, off.reason, off.source, off.at) == (Change.OFF, gt.STOPPED, Source.PROCESS, s(9))
    assert off.incidents == BOOM
    assert gt.stop_rows(FaultSet(), {}, s(9)) == []


def test_a_gone_replica_gets_its_intervals_closed() -> None:
    oom = FaultSet.from_spec({"oom": {}})
    intervals = [
        recorded("oom", params=oom.get("oom"), at=0, last_seen=30, row_id=11),
        recorded("panic", at=0, last_seen=40, row_id=12),
        recorded("latency", change=Change.OFF, row_id=13),
    ]
    # oom ended (off now: the ConfigMap's last write dates it); panic is still in force
    rows = gt.gone_rows(start(PANIC, configmap_changed_at=50), "app-old", "app-old", intervals, {})
    assert [(r.fault, r.change, r.reason) for r in rows] == [
        ("oom", Change.OFF, gt.REPLICA_GONE),
        ("panic", Change.OFF, gt.REPLICA_GONE),
    ]
    assert (rows[0].at, rows[0].at_basis) == (s(50), AtBasis.CONFIGMAP_CHANGE)
    assert (rows[1].at, rows[1].at_basis) == (s(40), AtBasis.LAST_SEEN)
    assert {(r.replica, r.pod) for r in rows} == {("app-old", "app-old")}
    assert rows[0].key == gt.recovery_key("shop", "app-old", "oom", 11)
    assert rows[0].incidents == BOOM
    # another replica saw the oom fault go off: then it ended for the gone one too
    seen = {"oom": [Observed(s(45), Change.OFF, None)]}
    rows = gt.gone_rows(start(PANIC, configmap_changed_at=50), "app-old", "app-old", intervals, seen)
    assert (rows[0].at, rows[0].at_basis) == (s(45), AtBasis.SIBLING)


# --- crashes ----------------------------------------------------------------------------------------


def term(
    reason: str = "OOMKilled", code: int = 137, started: float = 10, finished: float = 40
) -> Termination:
    return Termination("containerd://abc", code, reason, s(started), s(finished))


OOM_IN_FORCE = {"oom": (FaultSet.from_spec({"oom": {}}).get("oom"), BOOM)}


def test_an_oom_kill_under_the_oom_fault_is_recorded_from_the_container_status() -> None:
    row = gt.crash_from_status(term(), OOM_IN_FORCE, release="shop", pod="app-0", already=[])
    assert row is not None
    assert (row.kind, row.change, row.fault) == (Kind.CRASH, Change.CRASH, "oom")
    assert (row.reason, row.exit_code, row.container_id) == ("OOMKilled", 137, "containerd://abc")
    assert (row.at, row.at_basis, row.source) == (s(40), AtBasis.CONTAINER_STATUS, Source.KUBELET)
    assert row.incidents == BOOM
    assert row.key == gt.crash_key("shop", "app-0", "containerd://abc")


def test_a_termination_no_fault_explains_is_not_a_crash_row() -> None:
    assert gt.crash_from_status(term(), {}, release="shop", pod="p", already=[]) is None
    assert gt.crash_from_status(term("Error", 1), OOM_IN_FORCE, release="shop", pod="p", already=[]) is None
    panic = {"panic": (PANIC_PARAMS, BOOM)}
    row = gt.crash_from_status(term("Error", 70), panic, release="shop", pod="p", already=[])
    assert row is not None
    assert (row.fault, row.reason, row.exit_code) == ("panic", "Error", 70)
    assert gt.attribute(term("Error", 70), OOM_IN_FORCE) is None


def test_a_crash_the_process_recorded_itself_is_not_recorded_twice() -> None:
    panic = {"panic": (PANIC_PARAMS, BOOM)}
    t = term("Error", 70, started=10, finished=40)
    lo, hi = gt.crash_window(t)
    assert lo <= s(39.6) <= hi  # the process wrote its row just before it ended (whole seconds)
    assert gt.crash_from_status(t, panic, release="shop", pod="p", already=[s(39.6)]) is None
    # a crash of an earlier container does not count
    assert gt.crash_from_status(t, panic, release="shop", pod="p", already=[s(2)]) is not None
    # without a container ID the key falls back on the finish time
    row = gt.crash_from_status(
        Termination(None, 70, "Error", None, s(40)), panic, release="shop", pod="p", already=[]
    )
    assert row is not None
    assert row.key == gt.crash_key("shop", "p", s(40).isoformat())


def test_what_was_in_force_joins_the_recorded_state_and_now() -> None:
    prior = {"oom": recorded("oom", params=FaultSet.from_spec({"oom": {}}).get("oom")), "panic": recorded()}
    prior["latency"] = recorded("latency", change=Change.OFF)
    faults = gt.in_force(prior, FaultSet.from_spec({"panic": {"meanIntervalSeconds": 5}}), {})
    assert set(faults) == {"oom", "panic"}
    assert faults["panic"][0] == {"probability": 0.05, "meanIntervalSeconds": 5}
    assert faults["panic"][1] == BOOM  # now's annotation could not name it: the recorded incidents


def test_the_crash_row_of_the_process_itself() -> None:
    row = gt.crash_now(
        "panic",
        PANIC_PARAMS,
        BOOM,
        s(5),
        reason=gt.PANIC,
        exit_code=70,
        release="shop",
        pod="app-0",
        container_id="containerd://abc",
    )
    assert (row.kind, row.source, row.reason, row.exit_code) == (Kind.CRASH, Source.PROCESS, "panic", 70)
    # the same key as the next start would give it from the container status: written once
    assert row.key == gt.crash_key("shop", "app-0", "containerd://abc")
    local = gt.crash_now(
        "oom",
        None,
        (),
        s(5),
        reason=gt.MEMORY_CEILING,
        exit_code=137,
        release="shop",
        pod=None,
        container_id=None,
    )
    assert local.key is None


# --- the API's objects --------------------------------------------------------------------------


POD: dict[str, Any] = {
    "status": {
        "containerStatuses": [
            {
                "name": "sidecar",
                "restartCount": 0,
                "state": {"running": {"startedAt": "2026-11-26T21:00:00Z"}},
            },
            {
                "name": "app",
                "containerID": "containerd://new",
                "restartCount": 3,
                "state": {"running": {"startedAt": "2026-11-26T22:01:00Z"}},
                "lastState": {
                    "terminated": {
                        "containerID": "containerd://old",
                        "exitCode": 137,
                        "reason": "OOMKilled",
                        "startedAt": "2026-11-26T22:00:10Z",
                        "finishedAt": "2026-11-26T22:00:40Z",
                    }
                },
            },
        ]
    }
}


def test_the_container_status_of_a_pod() -> None:
    status = gt.container_status(POD, "app")
    assert status == ContainerStatus(
        "containerd://new", s(60), 3, Termination("containerd://old", 137, "OOMKilled", s(10), s(40))
    )
    assert gt.container_status(POD, "other") is None
    only = {"status": {"containerStatuses": [POD["status"]["containerStatuses"][1]]}}
    assert gt.container_status(only, "renamed") == status
    assert gt.container_status({"status": {}}, "app") is None
    waiting = {"status": {"containerStatuses": [{"name": "app", "state": {"waiting": {}}, "lastState": {}}]}}
    assert gt.container_status(waiting, "app") == ContainerStatus(None, None, 0, None)


def test_the_status_describes_this_process_only_once_the_kubelet_reported_the_restart() -> None:
    status = gt.container_status(POD, "app")
    assert status is not None
    assert gt.describes_this_process(status, s(60.7))  # whole seconds, a moment before the process
    assert not gt.describes_this_process(status, s(90))  # still the previous container
    waiting = ContainerStatus(None, None, 3, None)
    assert not gt.describes_this_process(waiting, s(60))


def test_when_the_configmap_last_changed() -> None:
    cm = {
        "metadata": {
            "managedFields": [
                {"manager": "helm", "time": "2026-11-26T21:00:00Z"},
                {"manager": "payflow-operator", "time": "2026-11-26T22:00:20Z"},
                {"manager": "odd"},
            ]
        }
    }
    assert gt.configmap_changed_at(cm) == s(20)
    assert gt.configmap_changed_at({"metadata": {}}) is None
    assert gt.configmap_changed_at({"metadata": {"managedFields": [{"time": "not a time"}]}}) is None


def test_an_end_names_the_incidents_the_start_read_when_the_state_has_none() -> None:
    # A replica restarted under a panic fault has it from its environment: its state names no
    # incident, the ConfigMap it read at start does. The live "off" must name it (seen on the node).
    held = {"panic": (Incident("crashy", None),)}
    off = Transition(T0, "panic", Change.OFF, None, None, Source.CONFIGMAP, ())
    on = Transition(T0, "latency", Change.ON, None, None, Source.CONFIGMAP, ())
    named = gt.name_ends([off, on], held)
    assert [i.incident for i in named[0].incidents] == ["crashy"]
    assert named[1].incidents == ()  # an "on" names what the ConfigMap says now, not the start
    already = Transition(T0, "panic", Change.OFF, None, None, Source.CONFIGMAP, (Incident("other", None),))
    assert gt.name_ends([already], held)[0].incidents == already.incidents
