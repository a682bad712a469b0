"""The operator's decisions, without a cluster: the phase machine, the merge per target, the
desired ConfigMap data, the pod-template stamp, the Events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from payflow import faults as vocab
from payflow import naming
from payflow.operator import core
from payflow.operator.core import Phase
from payflow.operator.durations import format_time

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
BASELINE_ENV = vocab.FaultSet.from_env({"INJECT_LATENCY_MS": "20"}).to_env()


def body(
    name: str,
    faults: dict[str, Any] | None = None,
    *,
    target: str = "payflow",
    duration: str | None = None,
    delivery: str = "live",
    status: dict[str, Any] | None = None,
    deleting: bool = False,
    generation: int = 1,
) -> core.Incident:
    meta: dict[str, Any] = {"name": name, "namespace": "demo", "uid": f"uid-{name}", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-26T09:59:00Z"
    spec: dict[str, Any] = {"target": target, "faults": faults if faults is not None else {"oom": {}}}
    if duration:
        spec["duration"] = duration
    spec["delivery"] = delivery
    return core.Incident.from_body({"metadata": meta, "spec": spec, "status": status or {}})


def configmap(
    data: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> core.ConfigMap:
    return core.ConfigMap(
        name="payflow-faults",
        data={**BASELINE_ENV, "OTHER": "x"} if data is None else data,
        annotations={naming.BASELINE_ANNOTATION: json.dumps(BASELINE_ENV)}
        if annotations is None
        else annotations,
        resource_version="7",
    )


def target(
    *, opted_in: bool = True, cm: core.ConfigMap | None = None, deployments: int = 1, missing: bool = False
) -> core.Target:
    deps = tuple(core.Deployment(f"payflow-api-{i}", f"d{i}", {}) for i in range(deployments))
    return core.Target("demo", "payflow", opted_in, None if missing else (cm or configmap()), deps)


def active_status(activated: datetime, expires: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "phase": "Active",
        "activatedAt": format_time(activated),
        "expiresAt": format_time(expires) if expires else None,
        **extra,
    }


# --- the phase machine --------------------------------------------------------------------


def test_new_incident_becomes_active_with_its_expiry() -> None:
    d = core.decide(body("a", {"latency": {"delayMs": 100}}, duration="15m"), target(), NOW)
    assert d.phase is Phase.ACTIVE
    assert d.contributes
    assert d.activated_at == NOW
    assert d.expires_at == NOW + timedelta(minutes=15)
    assert d.faults == vocab.FaultSet.from_spec({"latency": {"delayMs": 100}})


def test_active_incident_keeps_its_activation() -> None:
    activated = NOW - timedelta(minutes=5)
    d = core.decide(body("a", duration="15m", status=active_status(activated)), target(), NOW)
    assert d.phase is Phase.ACTIVE
    assert d.activated_at == activated
    assert d.expires_at == activated + timedelta(minutes=15)


def test_duration_run_out_is_expired_even_when_noticed_late() -> None:
    activated = NOW - timedelta(minutes=20)
    d = core.decide(body("a", duration="15m", status=active_status(activated)), target(), NOW)
    assert d.phase is Phase.EXPIRED
    assert not d.contributes
    assert d.expires_at == activated + timedelta(minutes=15)
    assert d.ended_at == NOW
    assert "the operator was away" in d.message


def test_duration_shortened_below_the_elapsed_time_expires_at_once() -> None:
    activated = NOW - timedelta(minutes=2)
    d = core.decide(body("a", duration="1m", status=active_status(activated)), target(), NOW)
    assert d.phase is Phase.EXPIRED


def test_expired_is_final() -> None:
    status = {"phase": "Expired", "endedAt": "2026-11-26T09:00:00.000Z", "message": "done"}
    d = core.decide(body("a", status=status), target(), NOW)
    assert d.phase is Phase.EXPIRED
    assert d.ended_at == datetime(2026, 11, 26, 9, tzinfo=UTC)


def test_not_opted_in_is_refused() -> None:
    d = core.decide(body("a"), target(opted_in=False), NOW)
    assert (d.phase, d.reason) == (Phase.REFUSED, "NamespaceNotOptedIn")
    assert f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}" in d.message


def test_missing_configmap_is_pending_and_the_duration_waits() -> None:
    d = core.decide(body("a", duration="5m"), target(missing=True), NOW)
    assert (d.phase, d.reason) == (Phase.PENDING, "TargetNotFound")
    assert d.activated_at is None
    assert d.expires_at is None
    assert "payflow-faults" in d.message


def test_rollout_without_deployment_is_pending() -> None:
    d = core.decide(body("a", delivery="rollout"), target(deployments=0), NOW)
    assert (d.phase, d.reason) == (Phase.PENDING, "DeploymentNotFound")
    assert core.decide(body("a", delivery="live"), target(deployments=0), NOW).phase is Phase.ACTIVE


@pytest.mark.parametrize(
    ("faults", "duration", "delivery", "fragment"),
    [
        ({"latency": {"delayMs": 999999}}, None, "live", "faults.latency.delayMs"),
        ({"nope": {}}, None, "live", "faults.nope"),
        ({}, None, "live", "at least one fault"),
        ({"oom": {}}, "forever", "live", "duration"),
        ({"oom": {}}, None, "canary", "canary"),
    ],
)
def test_a_spec_the_schema_should_have_refused_fails(
    faults: dict[str, Any], duration: str | None, delivery: str, fragment: str
) -> None:
    d = core.decide(body("a", faults, duration=duration, delivery=delivery), target(), NOW)
    assert (d.phase, d.reason) == (Phase.FAILED, "InvalidSpec")
    assert fragment in d.message


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    d = core.decide(body("a"), target(), NOW)
    first = core.conditions(d, [], 1, NOW)
    assert {c["type"]: c["status"] for c in first} == {"Accepted": "True", "Injected": "True"}
    later = core.conditions(d, first, 2, NOW + timedelta(hours=1))
    assert [c["lastTransitionTime"] for c in later] == [c["lastTransitionTime"] for c in first]
    assert all(c["observedGeneration"] == 2 for c in later)
    refused = core.decide(body("a"), target(opted_in=False), NOW)
    flipped = core.conditions(refused, first, 2, NOW + timedelta(hours=1))
    assert all(c["status"] == "False" for c in flipped)
    assert flipped[0]["lastTransitionTime"] == "2026-11-26T11:00:00Z"


# --- events ---------------------------------------------------------------------------------


def _event(incident: core.Incident, t: core.Target) -> core.Event:
    event = core.transition_event(incident, core.decide(incident, t, NOW))
    assert event is not None
    return event


def test_events_follow_the_transitions() -> None:
    assert _event(body("a"), target()).reason == "Injected"
    applied = vocab.FaultSet.from_spec({"oom": {}}).to_dict()
    active = body("a", status=active_status(NOW, appliedFaults=applied))
    assert core.transition_event(active, core.decide(active, target(), NOW)) is None
    changed = body("a", {"panic": {}}, status=dict(active.status))
    assert _event(changed, target()).message.startswith("Fault set changed")
    refused = _event(active, target(opted_in=False))
    assert (refused.type, refused.reason) == ("Warning", "Refused")
    assert "cleared" in refused.message
    late = body("a", duration="1m", status=active_status(NOW - timedelta(minutes=2)))
    assert _event(late, target()).reason == "Expired"


# --- the target -----------------------------------------------------------------------------


def test_merge_of_every_active_incident_into_the_configmap() -> None:
    a = body("a", {"latency": {"delayMs": 300}, "errorRate": {"ratio": 0.3}})
    b = body("b", {"latency": {"delayMs": 900}, "errorRate": {"ratio": 0.3}}, duration="10m")
    plan = core.plan_target(target(), [a, b], NOW)
    assert plan.merged is not None
    assert plan.merged.value("latency", "delayMs") == 900
    assert plan.merged.value("errorRate", "ratio") == 0.51
    patch = plan.configmap_patch
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == "7"  # conditional on what was read
    assert patch["data"] == {
        "INJECT_LATENCY_MS": "900",
        "INJECT_ERROR_RATE": "0.51",
    }
    sources = json.loads(patch["metadata"]["annotations"][naming.SOURCES_ANNOTATION])
    assert sources == {
        "latency": [
            {"incident": "a", "expiresAt": None},
            {"incident": "b", "expiresAt": "2026-11-26T10:10:00.000Z"},
        ],
        "errorRate": [
            {"incident": "a", "expiresAt": None},
            {"incident": "b", "expiresAt": "2026-11-26T10:10:00.000Z"},
        ],
    }
    assert plan.wake_at == NOW + timedelta(minutes=10)
    assert [p.decision.phase for p in plan.incidents] == [Phase.ACTIVE, Phase.ACTIVE]


def test_the_baseline_merges_with_the_incidents() -> None:
    plan = core.plan_target(target(), [body("a", {"latency": {"delayMs": 5}})], NOW)
    assert plan.merged is not None
    assert plan.merged.value("latency", "delayMs") == 20


def test_no_incident_left_restores_the_baseline_and_keeps_other_keys() -> None:
    injected = {
        **BASELINE_ENV,
        "INJECT_OOM": "true",
        "INJECT_OOM_GROWTH_KIB_PER_REQUEST": "256",
        "OTHER": "x",
    }
    cm = configmap(data=injected, annotations={
        naming.BASELINE_ANNOTATION: json.dumps(BASELINE_ENV),
        naming.SOURCES_ANNOTATION: '{"oom":[{"incident":"gone","expiresAt":null}]}',
    })  # fmt: skip
    plan = core.plan_target(target(cm=cm), [body("gone", deleting=True)], NOW)
    assert plan.configmap_patch is not None
    assert plan.configmap_patch["data"] == {"INJECT_OOM": "false", "INJECT_OOM_GROWTH_KIB_PER_REQUEST": None}
    assert plan.configmap_patch["metadata"]["annotations"] == {naming.SOURCES_ANNOTATION: "{}"}
    assert plan.incidents == ()  # a deleting incident gets no status: it is going away


def test_a_manual_edit_of_an_owned_key_is_put_back() -> None:
    a = body("a", {"errorRate": {"ratio": 0.3}}, status=active_status(NOW))
    first = core.plan_target(target(), [a], NOW)
    assert first.configmap_patch is not None
    applied = {**BASELINE_ENV, "OTHER": "x", **{k: v for k, v in first.configmap_patch["data"].items() if v}}
    annotations = {
        naming.BASELINE_ANNOTATION: json.dumps(BASELINE_ENV),
        **first.configmap_patch["metadata"]["annotations"],
    }
    settled = core.plan_target(target(cm=configmap(applied, annotations)), [a], NOW)
    assert settled.configmap_patch is None  # nothing to do: it is idempotent
    edited = {**applied, "INJECT_ERROR_RATE": "0", "INJECT_PANIC": "true", "OTHER": "edited"}
    plan = core.plan_target(target(cm=configmap(edited, annotations)), [a], NOW)
    assert plan.configmap_patch is not None
    assert plan.configmap_patch["data"] == {"INJECT_ERROR_RATE": "0.3", "INJECT_PANIC": "false"}


def test_without_the_annotation_the_data_found_is_recorded_as_baseline() -> None:
    cm = configmap(annotations={})
    plan = core.plan_target(target(cm=cm), [body("a", {"panic": {}})], NOW)
    assert plan.configmap_patch is not None
    recorded = json.loads(plan.configmap_patch["metadata"]["annotations"][naming.BASELINE_ANNOTATION])
    assert recorded == BASELINE_ENV


def test_a_bad_baseline_fails_the_incidents_and_touches_nothing() -> None:
    cm = configmap(annotations={naming.BASELINE_ANNOTATION: '{"INJECT_LATENCY_MS": "fast"}'})
    plan = core.plan_target(target(cm=cm), [body("a")], NOW)
    assert plan.configmap_patch is None
    assert plan.deployment_patches == ()
    assert plan.incidents[0].decision.phase is Phase.FAILED
    assert "INJECT_LATENCY_MS" in plan.incidents[0].decision.message


def test_a_namespace_never_opted_in_is_not_touched() -> None:
    plan = core.plan_target(target(opted_in=False), [body("a")], NOW)
    assert plan.configmap_patch is None
    assert plan.deployment_patches == ()
    assert plan.incidents[0].decision.phase is Phase.REFUSED


def test_opting_out_clears_what_was_injected() -> None:
    cm = configmap(
        data={**BASELINE_ENV, "INJECT_OOM": "true", "INJECT_OOM_GROWTH_KIB_PER_REQUEST": "256"},
        annotations={
            naming.BASELINE_ANNOTATION: json.dumps(BASELINE_ENV),
            naming.SOURCES_ANNOTATION: '{"oom":[{"incident":"a","expiresAt":null}]}',
        },
    )
    plan = core.plan_target(target(opted_in=False, cm=cm), [body("a", status=active_status(NOW))], NOW)
    assert plan.configmap_patch is not None
    assert plan.configmap_patch["data"]["INJECT_OOM"] == "false"


def test_incidents_of_other_targets_are_ignored() -> None:
    plan = core.plan_target(target(), [body("x", {"panic": {}}, target="another")], NOW)
    assert plan.incidents == ()
    assert plan.merged == vocab.FaultSet.from_env(BASELINE_ENV)


def test_status_is_written_only_when_it_changes() -> None:
    plan = core.plan_target(target(), [body("a")], NOW)
    written = plan.incidents[0].status
    assert written is not None
    assert written["phase"] == "Active"
    assert written["faultNames"] == "oom"
    again = core.plan_target(target(), [body("a", status=written)], NOW + timedelta(seconds=30))
    assert again.incidents[0].status is None


def test_pending_targets_ask_for_a_recheck() -> None:
    assert core.plan_target(target(missing=True), [body("a")], NOW).pending
    assert not core.plan_target(target(), [body("a")], NOW).pending


# --- delivery rollout -------------------------------------------------------------------------


def test_rollout_stamps_the_pod_template_and_removing_it_restores_the_baseline() -> None:
    oom = vocab.FaultSet.from_spec({"oom": {}})
    baseline = vocab.FaultSet.from_env(BASELINE_ENV)
    plan = core.plan_target(target(), [body("caching", delivery="rollout"), body("live", {"panic": {}})], NOW)
    ((deployment, patch),) = plan.deployment_patches
    stamp = patch["spec"]["template"]["metadata"]["annotations"]
    assert stamp[naming.ROLLOUT_INCIDENTS_ANNOTATION] == "caching"
    assert stamp[naming.DIGEST_ANNOTATION] == vocab.merge([("", baseline), ("caching", oom)]).faults.digest()

    stamped = core.Deployment(deployment.name, deployment.uid, stamp)
    gone = core.plan_target(
        core.Target("demo", "payflow", True, configmap(), (stamped,)),
        [body("caching", delivery="rollout", deleting=True)],
        NOW,
    )
    ((_, unstamp),) = gone.deployment_patches
    assert unstamp["spec"]["template"]["metadata"]["annotations"] == {
        naming.DIGEST_ANNOTATION: None,
        naming.ROLLOUT_INCIDENTS_ANNOTATION: None,
    }
    assert core.template_patch(core.Deployment("d", "u", {}), core.template_annotations(baseline, [])) is None


def test_a_live_incident_does_not_restart_the_pods() -> None:
    plan = core.plan_target(target(), [body("live", {"panic": {}})], NOW)
    assert plan.deployment_patches == ()


# --- deletion: level-based clearing -------------------------------------------------------------


def held_configmap(sources: str) -> core.ConfigMap:
    """The ConfigMap as the operator leaves it with latency from "a" and oom from "a" and "b"."""
    data = {**BASELINE_ENV, "INJECT_OOM": "true", "INJECT_OOM_GROWTH_KIB_PER_REQUEST": "256", "OTHER": "x"}
    annotations = {naming.BASELINE_ANNOTATION: json.dumps(BASELINE_ENV), naming.SOURCES_ANNOTATION: sources}
    return configmap(data=data, annotations=annotations)


SOURCES = json.dumps(
    {
        "oom": [{"incident": "a", "expiresAt": None}, {"incident": "b", "expiresAt": None}],
        "latency": [{"incident": "a", "expiresAt": None}],
    }
)


def test_held_by_reads_the_sources_annotation_and_the_rollout_stamp() -> None:
    stamped = core.Deployment("payflow-api", "d", {naming.ROLLOUT_INCIDENTS_ANNOTATION: "b,c"})
    assert core.held_by(held_configmap(SOURCES), (stamped,)) == {
        "a": ("oom", "latency"),  # in the vocabulary's order
        "b": ("oom",),
        "c": (),
    }
    assert core.held_by(None) == {}
    for garbled in ("not json", "[1, 2]", '{"oom": "a"}', '{"oom": [{"incident": 3}, "x"]}', "{}"):
        assert core.held_by(held_configmap(garbled)) == {}, garbled


def test_an_incident_gone_without_a_trace_is_cleared_and_announced() -> None:
    # The operator never saw "b" go (it was away): "b" is simply not there any more.
    a = body("a", {"oom": {}, "latency": {"delayMs": 5}}, status=active_status(NOW))
    plan = core.plan_target(target(cm=held_configmap(SOURCES)), [a], NOW)
    assert [(c.name, c.faults) for c in plan.cleared] == [("b", ("oom",))]
    assert plan.cleared[0].event == core.Event("Normal", "Cleared", "Deleted: oom cleared on payflow.")
    assert plan.configmap_patch is not None
    sources = json.loads(plan.configmap_patch["metadata"]["annotations"][naming.SOURCES_ANNOTATION])
    assert [s["incident"] for s in sources["oom"]] == ["a"]


def test_every_incident_gone_restores_the_baseline_and_announces_each() -> None:
    plan = core.plan_target(target(cm=held_configmap(SOURCES)), [body("b", deleting=True)], NOW)
    assert [c.name for c in plan.cleared] == ["a", "b"]  # "b" is being deleted: it counts as gone
    assert plan.merged == vocab.FaultSet.from_env(BASELINE_ENV)
    assert plan.configmap_patch is not None
    assert plan.configmap_patch["metadata"]["annotations"] == {naming.SOURCES_ANNOTATION: "{}"}
    at_baseline = configmap(annotations={**configmap().annotations, naming.SOURCES_ANNOTATION: "{}"})
    settled = core.plan_target(target(cm=at_baseline), [], NOW)
    assert settled.cleared == ()
    assert settled.configmap_patch is None


def test_incidents_that_end_otherwise_are_not_announced_as_deleted() -> None:
    expired = body("a", status={"phase": "Expired", "endedAt": format_time(NOW)})
    refused = core.plan_target(target(opted_in=False, cm=held_configmap(SOURCES)), [expired, body("b")], NOW)
    assert refused.cleared == ()
    assert refused.configmap_patch is not None  # opted out: the baseline goes back all the same


def test_nothing_is_announced_when_the_baseline_is_rejected() -> None:
    cm = held_configmap(SOURCES)
    bad = core.ConfigMap(cm.name, cm.data, {**cm.annotations, naming.BASELINE_ANNOTATION: "nope"})
    plan = core.plan_target(target(cm=bad), [], NOW)
    assert plan.configmap_patch is None
    assert plan.cleared == ()


def test_a_namespace_gone_or_terminating_is_closing() -> None:
    assert core.namespace_closing(None)
    assert core.namespace_closing({"metadata": {"deletionTimestamp": "2026-11-26T10:00:00Z"}})
    assert core.namespace_closing({"metadata": {}, "status": {"phase": "Terminating"}})
    assert not core.namespace_closing({"metadata": {"name": "demo"}, "status": {"phase": "Active"}})
    assert core.namespace_opted_in({"metadata": {"labels": {naming.OPT_IN_LABEL: naming.OPT_IN_VALUE}}})
    assert not core.namespace_opted_in({"metadata": {}})


def test_the_release_of_a_faults_configmap() -> None:
    assert core.configmap_release("payflow-faults", {naming.INSTANCE_LABEL: "payflow"}) == "payflow"
    assert core.configmap_release("shop-faults", {}) == "shop"
    assert core.configmap_release("shop-faults", {naming.INSTANCE_LABEL: "other"}) == "shop"
    assert core.configmap_release("-faults", {}) is None
    assert core.configmap_release("payflow-config", {naming.INSTANCE_LABEL: "payflow"}) is None
