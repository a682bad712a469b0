"""The operator's decisions, as pure functions: no I/O, no clock (``now`` is an argument).

One *target* (a release in a namespace) is reconciled at a time: :func:`plan_target` takes
what the API server says about the namespace, the faults ConfigMap, the app Deployments and
every incident naming the target, and returns what to write: the ConfigMap's ``INJECT_*``
keys and annotations, the pod-template annotations of the Deployments, each incident's
status and the Events that tell a reader what happened.

Clearing is level-based: the faults in force are always the merge of the incidents that exist
now, and the ConfigMap's ``payflow.dev/incidents`` annotation records which incidents it
holds, so a deleted incident is cleared by the next reconcile of its target, whenever it runs
(no finalizer: see docs/incidents.md, "Deletion").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from payflow import faults as vocab
from payflow import naming
from payflow.operator.durations import expiry, format_time, parse_duration, parse_time

BASELINE_SOURCE = ""  # the baseline's name among the merged contributions (no incident is named so)


class Phase(StrEnum):
    """The one readable state of an incident (``status.phase``)."""

    PENDING = "Pending"  # accepted, waiting for its target (the faults ConfigMap, or the Deployment)
    ACTIVE = "Active"  # its faults are in force
    EXPIRED = "Expired"  # its duration ran out; its faults were cleared (final)
    REFUSED = "Refused"  # the namespace is not opted in; nothing was touched
    FAILED = "Failed"  # it cannot be applied (a spec or baseline the vocabulary rejects)


class Delivery(StrEnum):
    LIVE = "live"  # the ConfigMap changes, the running pods switch at once, no restart
    ROLLOUT = "rollout"  # the pod template changes too: a new ReplicaSet, like a bad deploy


# Condition types and reasons (``status.conditions``).
ACCEPTED = "Accepted"
INJECTED = "Injected"

PHASE_DESCRIPTIONS: Mapping[Phase, str] = {
    Phase.PENDING: "Accepted; waiting for the target's faults ConfigMap (and, for delivery rollout, "
    "its app Deployment). Becomes Active when they appear; the duration has not started.",
    Phase.ACTIVE: "The faults are in force: merged into the target's faults ConfigMap (and, for "
    "delivery rollout, stamped on the Deployment's pod template).",
    Phase.EXPIRED: "The duration ran out; the faults were cleared. Final: delete the incident, or "
    "apply a new one, to inject again.",
    Phase.REFUSED: "The namespace is not opted in to fault injection; nothing was touched. Becomes "
    "Active when the namespace is labelled.",
    Phase.FAILED: "The incident cannot be applied (a spec or a ConfigMap baseline the fault vocabulary "
    "rejects). Re-evaluated when the spec or the ConfigMap changes.",
}


# --- what the API server says, as plain values ------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """One PayFlowIncident as read from the API server."""

    name: str
    namespace: str
    uid: str
    generation: int
    target: str
    faults: Mapping[str, Any] | None
    duration: str | None
    delivery: str
    deleting: bool
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Incident:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            target=str(spec.get("target") or ""),
            faults=spec.get("faults"),
            duration=spec.get("duration"),
            delivery=str(spec.get("delivery") or Delivery.LIVE),
            deleting=bool(meta.get("deletionTimestamp")),
            status=body.get("status") or {},
        )

    @property
    def phase(self) -> Phase | None:
        try:
            return Phase(str(self.status.get("phase")))
        except ValueError:
            return None

    @property
    def activated_at(self) -> datetime | None:
        return parse_time(self.status.get("activatedAt"))

    @property
    def expires_at(self) -> datetime | None:
        return parse_time(self.status.get("expiresAt"))

    @property
    def ref(self) -> dict[str, Any]:
        return incident_ref(self.namespace, self.name, self.uid)


def incident_ref(namespace: str, name: str, uid: str = "") -> dict[str, Any]:
    """What an Event about an incident names (the uid only when known: an incident deleted
    while the operator was away is known by its name alone)."""
    metadata = {"name": name, "namespace": namespace, **({"uid": uid} if uid else {})}
    return {"apiVersion": f"{naming.GROUP}/{naming.VERSION}", "kind": naming.KIND, "metadata": metadata}


@dataclass(frozen=True)
class ConfigMap:
    name: str
    data: Mapping[str, str]
    annotations: Mapping[str, str]
    resource_version: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ConfigMap:
        meta = body.get("metadata") or {}
        return cls(
            name=meta.get("name", ""),
            data=dict(body.get("data") or {}),
            annotations=dict(meta.get("annotations") or {}),
            resource_version=str(meta.get("resourceVersion") or ""),
        )


@dataclass(frozen=True)
class Deployment:
    name: str
    uid: str
    template_annotations: Mapping[str, str]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Deployment:
        meta = body.get("metadata") or {}
        template_meta = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            template_annotations=dict(template_meta.get("annotations") or {}),
        )

    def ref(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": namespace, "uid": self.uid},
        }


@dataclass(frozen=True)
class Target:
    """A release in a namespace, as found: the ConfigMap is None when it does not exist."""

    namespace: str
    name: str
    opted_in: bool
    configmap: ConfigMap | None
    deployments: tuple[Deployment, ...] = ()


def namespace_closing(body: Mapping[str, Any] | None) -> bool:
    """The namespace is gone (None) or being deleted: everything in it goes with it, so there
    is nothing to write there (and its objects may already be gone, its RBAC with them)."""
    if body is None:
        return True
    meta = body.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) or (body.get("status") or {}).get("phase") == "Terminating"


def namespace_opted_in(body: Mapping[str, Any]) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(naming.OPT_IN_LABEL) == naming.OPT_IN_VALUE)


def configmap_release(name: str, labels: Mapping[str, str]) -> str | None:
    """The release whose faults ConfigMap ``name`` is: its instance label when the name
    agrees, else the name without the suffix; None for another ConfigMap."""
    release = labels.get(naming.INSTANCE_LABEL)
    if release and naming.faults_configmap_name(release) == name:
        return release
    suffix = naming.faults_configmap_name("")
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return None


# --- one incident ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What one incident is, now."""

    phase: Phase
    reason: str  # the reason of the Injected condition (and of the Accepted one when it is False)
    message: str
    faults: vocab.FaultSet | None = None  # parsed spec.faults (None when it does not parse)
    activated_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def contributes(self) -> bool:
        return self.phase is Phase.ACTIVE


def truncate_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def decide(incident: Incident, target: Target, now: datetime, baseline_error: str | None = None) -> Decision:
    """The phase machine of one (not deleting) incident.

    Order of the checks: an Expired incident stays Expired; then the spec (faults, duration),
    the namespace's opt-in, the target's existence, the baseline; then Active, unless the
    duration counted from ``status.activatedAt`` has run out (also while the operator was away),
    which makes it Expired at once."""
    now = truncate_ms(now)
    previous = incident.phase
    if previous is Phase.EXPIRED:
        return Decision(
            Phase.EXPIRED,
            "Expired",
            incident.status.get("message") or "The duration ran out; the faults were cleared.",
            activated_at=incident.activated_at,
            expires_at=incident.expires_at,
            ended_at=parse_time(incident.status.get("endedAt")) or now,
        )
    try:
        fault_set = vocab.FaultSet.from_spec(incident.faults)
        if not fault_set:
            raise vocab.FaultConfigError(["faults: at least one fault is required"])
    except vocab.FaultConfigError as exc:
        return Decision(Phase.FAILED, "InvalidSpec", f"spec.{exc}")
    try:
        duration = parse_duration(incident.duration) if incident.duration else None
        delivery = Delivery(incident.delivery)
    except ValueError as exc:
        return Decision(Phase.FAILED, "InvalidSpec", f"spec.{exc}", faults=fault_set)
    if not target.opted_in:
        return Decision(
            Phase.REFUSED,
            "NamespaceNotOptedIn",
            f"Namespace {target.namespace} is not opted in to fault injection: label it "
            f"{naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE} to let incidents act there.",
            faults=fault_set,
        )
    if target.configmap is None:
        return Decision(
            Phase.PENDING,
            "TargetNotFound",
            f"Waiting for ConfigMap {naming.faults_configmap_name(incident.target)} of release "
            f"{incident.target} in namespace {target.namespace}.",
            faults=fault_set,
        )
    if delivery is Delivery.ROLLOUT and not target.deployments:
        return Decision(
            Phase.PENDING,
            "DeploymentNotFound",
            f"Waiting for the app Deployment of release {incident.target} "
            f"(selector {naming.app_selector(incident.target)}) for delivery rollout.",
            faults=fault_set,
        )
    if baseline_error is not None:
        return Decision(Phase.FAILED, "InvalidBaseline", baseline_error, faults=fault_set)
    activated_at = incident.activated_at if previous is Phase.ACTIVE else None
    activated_at = activated_at or now
    expires_at = expiry(activated_at, duration)
    if expires_at is not None and expires_at <= now:
        late = now - expires_at
        message = (
            f"The duration {incident.duration} ran out at {format_time(expires_at)}; the faults were cleared."
        )
        if late > timedelta(seconds=5):
            message += f" (Ended {late.total_seconds():.0f}s late: the operator was away.)"
        return Decision(
            Phase.EXPIRED,
            "Expired",
            message,
            faults=fault_set,
            activated_at=activated_at,
            expires_at=expires_at,
            ended_at=now,
        )
    until = f" until {format_time(expires_at)}" if expires_at else " until the incident is deleted"
    return Decision(
        Phase.ACTIVE,
        "FaultsInForce",
        f"{', '.join(fault_set.names)} in force on release {incident.target} ({delivery.value}){until}.",
        faults=fault_set,
        activated_at=activated_at,
        expires_at=expires_at,
    )


def conditions(
    decision: Decision, previous: Sequence[Mapping[str, Any]], generation: int, now: datetime
) -> list[dict[str, Any]]:
    """The standard conditions (metav1.Condition) of a decision: ``Accepted`` (the spec is valid
    and the namespace opted in) and ``Injected`` (the faults are in force). A condition keeps
    its lastTransitionTime while its status stays the same."""
    accepted = decision.phase not in (Phase.REFUSED, Phase.FAILED)
    wanted = [
        (
            ACCEPTED,
            accepted,
            "Accepted" if accepted else decision.reason,
            "The incident is valid and its namespace is opted in." if accepted else decision.message,
        ),
        (INJECTED, decision.phase is Phase.ACTIVE, decision.reason, decision.message),
    ]
    before = {c.get("type"): c for c in previous}
    result = []
    for type_, ok, reason, message in wanted:
        status = "True" if ok else "False"
        old = before.get(type_)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        result.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": since or format_time(now).split(".")[0] + "Z",
            }
        )
    return result


def status_for(incident: Incident, decision: Decision, now: datetime) -> dict[str, Any]:
    """The whole ``status`` of an incident for a decision (every field explicit, null when unset)."""

    def ts(moment: datetime | None) -> str | None:
        return format_time(moment) if moment else None

    return {
        "phase": decision.phase.value,
        "message": decision.message,
        "observedGeneration": incident.generation,
        "target": incident.target,
        "faultNames": ",".join(sorted(incident.faults or {}, key=_fault_rank)),
        "activatedAt": ts(decision.activated_at),
        "expiresAt": ts(decision.expires_at),
        "endedAt": ts(decision.ended_at),
        "appliedFaults": decision.faults.to_dict() if decision.contributes and decision.faults else None,
        "conditions": conditions(decision, incident.status.get("conditions") or (), incident.generation, now),
    }


def status_changed(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(current.get(k) != v for k, v in wanted.items())


def merge_patch(current: Any, wanted: Any) -> Any:
    """The JSON merge patch (RFC 7386) that makes ``current`` equal ``wanted``: keys of nested
    objects that ``wanted`` no longer has are set to null (a fault dropped from
    ``appliedFaults``), where a plain merge would keep them."""
    if not isinstance(wanted, Mapping) or not isinstance(current, Mapping):
        return wanted
    patch: dict[str, Any] = {k: None for k in current if k not in wanted}
    patch.update({k: merge_patch(current.get(k), v) for k, v in wanted.items()})
    return patch


def status_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that writes ``wanted`` over an incident's ``current`` status: each field
    replaced as a whole (nested objects lose what ``wanted`` dropped); status fields the
    operator does not own are left alone."""
    return {k: merge_patch(current.get(k), v) for k, v in wanted.items()}


def _fault_rank(name: str) -> int:
    order = [f.name for f in vocab.FAULTS]
    return order.index(name) if name in order else len(order)


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # Injected | Cleared | Expired | Refused | Failed | Pending
    message: str


def transition_event(incident: Incident, decision: Decision) -> Event | None:
    """The Event a reader should see for this decision, or None when nothing new happened."""
    before, after = incident.phase, decision.phase
    applied = incident.status.get("appliedFaults")
    if after is Phase.ACTIVE:
        if before is not Phase.ACTIVE:
            return Event("Normal", "Injected", decision.message)
        if decision.faults is not None and applied != decision.faults.to_dict():
            return Event("Normal", "Injected", "Fault set changed: " + decision.message)
        return None
    if after is before:
        return None
    was_active = " Its faults were cleared." if before is Phase.ACTIVE else ""
    if after is Phase.EXPIRED:
        return Event("Normal", "Expired", decision.message)
    if after is Phase.REFUSED:
        return Event("Warning", "Refused", decision.message + was_active)
    if after is Phase.FAILED:
        return Event("Warning", "Failed", decision.message + was_active)
    return Event("Normal", "Pending", decision.message + was_active)


# --- the target: the ConfigMap and the Deployments --------------------------------------------


def baseline_of(configmap: ConfigMap) -> tuple[dict[str, str], bool]:
    """The baseline INJECT_* keys and whether they must be recorded in the annotation (absent:
    the data found now is the baseline). ValueError when the annotation is not a JSON object of
    strings."""
    raw = configmap.annotations.get(naming.BASELINE_ANNOTATION)
    if raw is None:
        return {k: v for k, v in configmap.data.items() if k.startswith(vocab.ENV_PREFIX)}, True
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"annotation {naming.BASELINE_ANNOTATION} is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise ValueError(f"annotation {naming.BASELINE_ANNOTATION} must be a JSON object of strings")
    return {k: v for k, v in parsed.items() if k.startswith(vocab.ENV_PREFIX)}, False


def desired_data(baseline: Mapping[str, str], merged: vocab.FaultSet) -> dict[str, str]:
    """The INJECT_* keys the ConfigMap must hold: the baseline's keys, overridden by the merged
    set's (which already contains the baseline's faults)."""
    return {**baseline, **merged.to_env()}


def data_patch(current: Mapping[str, str], desired_inject: Mapping[str, str]) -> dict[str, str | None]:
    """A JSON merge patch of ``data`` that makes the INJECT_* keys exactly ``desired_inject``
    and leaves every other key alone (None deletes a key)."""
    patch: dict[str, str | None] = {
        k: None for k in current if k.startswith(vocab.ENV_PREFIX) and k not in desired_inject
    }
    patch.update({k: v for k, v in desired_inject.items() if current.get(k) != v})
    return patch


def sources_annotation(merged: vocab.Merged, expiries: Mapping[str, datetime | None]) -> str:
    """Which incident turns on which fault: ``{fault: [{"incident", "expiresAt"}]}`` as JSON."""
    sources: dict[str, list[dict[str, str | None]]] = {}
    for fault, names in merged.sources.items():
        entries = [
            {"incident": n, "expiresAt": format_time(e) if (e := expiries.get(n)) else None}
            for n in names
            if n != BASELINE_SOURCE
        ]
        if entries:
            sources[fault] = entries
    return json.dumps(sources, sort_keys=True, separators=(",", ":"))


def held_by(
    configmap: ConfigMap | None, deployments: Sequence[Deployment] = ()
) -> dict[str, tuple[str, ...]]:
    """The incidents whose faults the target holds, as the operator last wrote them: each
    name with its faults, from the ConfigMap's sources annotation, and the rollout incidents
    named on the pod templates. A garbled annotation names none (the next write replaces it)."""
    held: dict[str, set[str]] = {}
    raw = configmap.annotations.get(naming.SOURCES_ANNOTATION) if configmap is not None else None
    try:
        sources = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        sources = {}
    for fault, entries in sources.items() if isinstance(sources, dict) else ():
        for entry in entries if isinstance(entries, list) else ():
            name = entry.get("incident") if isinstance(entry, dict) else None
            if name and isinstance(name, str):
                held.setdefault(name, set()).add(str(fault))
    for deployment in deployments:
        names = deployment.template_annotations.get(naming.ROLLOUT_INCIDENTS_ANNOTATION) or ""
        for name in filter(None, (n.strip() for n in names.split(","))):
            held.setdefault(name, set())
    return {name: tuple(sorted(faults, key=_fault_rank)) for name, faults in held.items()}


def template_annotations(
    baseline: vocab.FaultSet, rollout: Sequence[tuple[str, vocab.FaultSet]]
) -> dict[str, str | None]:
    """The pod-template annotations of the app Deployment: with rollout incidents, the digest
    of the fault set they make the pods start with (baseline merged with them) and their names;
    without, None for both (removed: the template is the baseline's again)."""
    if not rollout:
        return {naming.DIGEST_ANNOTATION: None, naming.ROLLOUT_INCIDENTS_ANNOTATION: None}
    merged = vocab.merge([(BASELINE_SOURCE, baseline), *rollout])
    return {
        naming.DIGEST_ANNOTATION: merged.faults.digest(),
        naming.ROLLOUT_INCIDENTS_ANNOTATION: ",".join(sorted(name for name, _ in rollout)),
    }


def stamp_of(deployment: Deployment) -> tuple[str | None, ...]:
    """The operator's annotations on a Deployment's pod template (None where absent)."""
    return tuple(
        deployment.template_annotations.get(k)
        for k in (naming.DIGEST_ANNOTATION, naming.ROLLOUT_INCIDENTS_ANNOTATION)
    )


def template_patch(deployment: Deployment, wanted: Mapping[str, str | None]) -> dict[str, Any] | None:
    """A merge patch of the Deployment's pod template, or None when it already is as wanted."""
    changes = {k: v for k, v in wanted.items() if deployment.template_annotations.get(k) != v}
    if not changes:
        return None
    return {"spec": {"template": {"metadata": {"annotations": changes}}}}


def configmap_fingerprint(data: Mapping[str, str], annotations: Mapping[str, str]) -> str:
    """What the operator owns on a ConfigMap (its INJECT_* keys and the sources annotation):
    equal fingerprints mean there is nothing to put back."""
    owned = {k: v for k, v in data.items() if k.startswith(vocab.ENV_PREFIX)}
    return json.dumps([owned, annotations.get(naming.SOURCES_ANNOTATION)], sort_keys=True)


def patched_fingerprint(configmap: ConfigMap, patch: Mapping[str, Any] | None) -> str:
    """The fingerprint of ``configmap`` once ``patch`` (a JSON merge patch) is applied."""
    data = dict(configmap.data)
    annotations = dict(configmap.annotations)
    for key, value in ((patch or {}).get("data") or {}).items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    annotations.update(((patch or {}).get("metadata") or {}).get("annotations") or {})
    return configmap_fingerprint(data, annotations)


@dataclass(frozen=True)
class IncidentPlan:
    incident: Incident
    decision: Decision
    status: dict[str, Any] | None  # None: unchanged
    event: Event | None


@dataclass(frozen=True)
class Cleared:
    """An incident that is gone (or being deleted) whose faults the target still held: this
    reconcile clears them."""

    name: str
    faults: tuple[str, ...]
    event: Event


@dataclass(frozen=True)
class TargetPlan:
    """Everything one reconcile of a target writes."""

    configmap_patch: dict[str, Any] | None
    deployment_patches: tuple[tuple[Deployment, dict[str, Any]], ...]
    incidents: tuple[IncidentPlan, ...]
    merged: vocab.FaultSet | None
    wake_at: datetime | None  # the next expiry, when the target must be looked at again
    pending: bool  # some incident waits for the target (re-check soon)
    cleared: tuple[Cleared, ...] = ()
    notes: tuple[str, ...] = field(default=())


def plan_target(target: Target, incidents: Iterable[Incident], now: datetime) -> TargetPlan:
    """Decide every incident of one target and the writes that make the target match.

    Only the incidents that exist (and are not being deleted) count: the faults of one that is
    gone are cleared because it is not there, whether its deletion was seen or not."""
    live = [i for i in incidents if not i.deleting and i.target == target.name]
    cm = target.configmap
    baseline_env: dict[str, str] = {}
    record_baseline = False
    baseline_error: str | None = None
    baseline = vocab.FaultSet()
    if cm is not None:
        try:
            baseline_env, record_baseline = baseline_of(cm)
            baseline = vocab.FaultSet.from_env(baseline_env)
        except ValueError as exc:  # FaultConfigError is a ValueError
            baseline_error = f"ConfigMap {cm.name}: baseline rejected: {exc}"

    plans: list[IncidentPlan] = []
    for incident in sorted(live, key=lambda i: i.name):
        decision = decide(incident, target, now, baseline_error)
        wanted = status_for(incident, decision, now)
        changed = status_changed(incident.status, wanted)
        plans.append(
            IncidentPlan(
                incident,
                decision,
                status_patch(incident.status, wanted) if changed else None,
                transition_event(incident, decision),
            )
        )
    active = [(p.incident, p.decision) for p in plans if p.decision.contributes and p.decision.faults]

    cm_patch: dict[str, Any] | None = None
    merged_set: vocab.FaultSet | None = None
    touched_before = cm is not None and cm.annotations.get(naming.SOURCES_ANNOTATION) not in (None, "{}")
    if cm is not None and baseline_error is None and (target.opted_in or touched_before):
        merged = vocab.merge(
            [(BASELINE_SOURCE, baseline), *((i.name, d.faults) for i, d in active if d.faults)]
        )
        merged_set = merged.faults
        data = data_patch(cm.data, desired_data(baseline_env, merged.faults))
        annotations: dict[str, str] = {}
        sources = sources_annotation(merged, {i.name: d.expires_at for i, d in active})
        if cm.annotations.get(naming.SOURCES_ANNOTATION) != sources:
            annotations[naming.SOURCES_ANNOTATION] = sources
        if record_baseline:
            annotations[naming.BASELINE_ANNOTATION] = json.dumps(
                baseline_env, sort_keys=True, separators=(",", ":")
            )
        if data or annotations:
            cm_patch = {"metadata": {"resourceVersion": cm.resource_version}}
            if annotations:
                cm_patch["metadata"]["annotations"] = annotations
            if data:
                cm_patch["data"] = data

    deployment_patches: list[tuple[Deployment, dict[str, Any]]] = []
    if baseline_error is None:
        rollout = [(i.name, d.faults) for i, d in active if d.faults and i.delivery == Delivery.ROLLOUT.value]
        wanted_template = template_annotations(baseline, rollout)
        for deployment in target.deployments:
            patch = template_patch(deployment, wanted_template)
            if patch is not None:
                deployment_patches.append((deployment, patch))

    cleared: list[Cleared] = []
    if baseline_error is None:
        existing = {i.name for i in live}
        for name, faults in sorted(held_by(cm, target.deployments).items()):
            if name not in existing:
                what = ",".join(faults) or "its faults"
                event = Event("Normal", "Cleared", f"Deleted: {what} cleared on {target.name}.")
                cleared.append(Cleared(name, faults, event))

    expiries = [d.expires_at for _, d in active if d.expires_at is not None]
    return TargetPlan(
        configmap_patch=cm_patch,
        deployment_patches=tuple(deployment_patches),
        incidents=tuple(plans),
        merged=merged_set,
        wake_at=min(expiries) if expiries else None,
        pending=any(p.decision.phase is Phase.PENDING for p in plans),
        cleared=tuple(cleared),
    )
