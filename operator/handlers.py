"""The kopf registrations: thin. Each one asks for a reconcile of a target and, when it must
know the outcome (an incident's own handlers), waits for it. Decisions live in ``core``.

No handler holds a finalizer: a deleted incident is cleared by the reconcile its deletion asks
for, or, if the operator missed it, by the one its target's ConfigMap asks for at start-up (it
still names the incident). So nothing the operator does, or fails to do, can keep an incident,
or its namespace, from going (docs/incidents.md, "Deletion")."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from payflow import naming
from payflow.operator import core, credentials
from payflow.operator.kube import Kube, new_api_client
from payflow.operator.metrics import HttpServer, Metrics
from payflow.operator.reconciler import Reconciler, TargetKey, TargetWorkers
from payflow.operator.settings import OperatorSettings

INCIDENTS = (naming.GROUP, naming.VERSION, naming.PLURAL)
CONFIGMAPS = ("v1", "configmaps")
DEPLOYMENTS = ("apps", "v1", "deployments")
NAMESPACES = ("v1", "namespaces")
RECONCILE_RETRY = 2.0


@dataclass
class Runtime:
    """What the handlers share, kept in kopf's memo."""

    settings: OperatorSettings
    kube: Kube
    metrics: Metrics
    reconciler: Reconciler
    workers: TargetWorkers
    http: HttpServer
    opted_in: dict[str, bool] = field(default_factory=dict)  # namespace -> labelled
    stamps: dict[tuple[str, str], tuple[str | None, ...]] = field(default_factory=dict)  # deployment -> stamp


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


def _post_event(ref: dict[str, Any], event: core.Event) -> None:
    kopf.event(
        kopf.Body(cast(kopf.RawBody, ref)), type=event.type, reason=event.reason, message=event.message[:1000]
    )


# All kopf settings in one place; then the shared runtime and the /healthz + /metrics server.
@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo["settings"]
    settings.peering.standalone = True  # one replica (the chart's Deployment), no peering objects
    # No handler needs a finalizer, so kopf adds none; naming the one that operators before
    # level-based clearing added makes kopf remove it from the incidents it sees.
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"operator.{naming.GROUP}")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=f"operator.{naming.GROUP}", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # only our explicit Events, not kopf's log lines
    settings.posting.reporting_component = "payflow-operator"
    settings.posting.event_name_prefix = "payflow-"
    settings.watching.server_timeout = 270  # below the API server's default request timeout
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    # Retry failed API calls (watches too) at most 2 s apart, for about a minute as kopf's default
    # does: its delays grow to 13 and 21 s, so after a 10 s API server outage the incidents watch
    # came back up to 9 s after the server did.
    settings.networking.error_backoffs = [0.5, 1.0, 1.0] + [2.0] * 28
    settings.execution.max_workers = 4
    # Watch only what a release labels as its faults ConfigMap and app Deployment.
    settings.watching.label_selectors[CONFIGMAPS] = f"{naming.COMPONENT_LABEL}={naming.FAULTS_COMPONENT}"
    settings.watching.label_selectors[DEPLOYMENTS] = f"{naming.COMPONENT_LABEL}={naming.APP_COMPONENT}"

    kube = Kube(new_api_client(), reload=new_api_client)
    metrics = Metrics()
    reconciler = Reconciler(kube, metrics, _post_event)
    workers = TargetWorkers(
        reconciler, pending_recheck=ours.pending_recheck_seconds, resync=ours.resync_seconds
    )
    reconciler.workers = workers
    http = HttpServer(metrics, ours.operator_host, ours.operator_port)
    await http.start()
    memo["runtime"] = Runtime(ours, kube, metrics, reconciler, workers, http)


# Refused credentials (HTTP 401: the ServiceAccount deleted with its namespace, or a passing
# refusal) are read again and retried, paced: kopf's default login would stop the operator, and
# its pod would crash-loop on the same dead token.
@kopf.on.login(id="credentials")
async def login(memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> kopf.ConnectionInfo | None:
    pacer: credentials.LoginPacer = memo.setdefault("login", credentials.LoginPacer())
    return await credentials.login(pacer, logger, kopf.login_via_client, **kwargs)


@kopf.on.cleanup(id="shutdown")
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        await runtime.workers.close()
        await runtime.http.stop()
        runtime.kube.close()


# Which targets have incidents: lets the ConfigMap, Deployment and Namespace watches find the
# targets a change concerns without listing anything.
@kopf.index(*INCIDENTS, id="by_target")  # the kwarg name of the index
def by_target(namespace: str | None, spec: kopf.Spec, name: str, **_: Any) -> dict[TargetKey, str]:
    return {(namespace or "", str(spec.get("target", ""))): name}


async def _reconcile(memo: kopf.Memo, namespace: str | None, spec: kopf.Spec) -> None:
    try:
        await _runtime(memo).workers.reconcile((namespace or "", str(spec.get("target", ""))))
    except Exception as exc:
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=RECONCILE_RETRY) from exc


# A new, changed or (after a restart) resumed incident: its target is reconciled, which sets
# its phase and merges its faults; a resumed incident whose time ran out ends at once.
@kopf.on.resume(*INCIDENTS, id="reconcile")
@kopf.on.create(*INCIDENTS, id="reconcile")
@kopf.on.update(*INCIDENTS, id="reconcile")
async def reconcile_incident(namespace: str | None, spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(memo, namespace, spec)


# An incident deleted, or being deleted (held by someone else's finalizer): its target is
# reconciled without it, which clears its faults. Nothing waits for this: the object is gone
# already, and a failed reconcile is retried by the target's worker.
@kopf.on.event(*INCIDENTS, id="clear-faults")
async def incident_deleted(
    event: kopf.RawEvent, namespace: str | None, spec: kopf.Spec, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
        _runtime(memo).workers.poke((namespace or "", str(spec.get("target", ""))))


# The phase gauge follows what the API server says.
@kopf.on.event(*INCIDENTS, id="count-phases")
async def count_phases(
    event: kopf.RawEvent, namespace: str | None, name: str, status: kopf.Status, memo: kopf.Memo, **_: Any
) -> None:
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        runtime.metrics.phases.record(
            namespace or "", name, status.get("phase"), gone=event.get("type") == "DELETED"
        )


# A faults ConfigMap changed, or was listed at start-up: a manual edit of an owned key is put
# back; a new one activates the incidents that were Pending for it; one that still holds the
# faults of an incident that is gone (deleted while the operator was away) is cleared. Our own
# writes are recognised and skipped.
@kopf.on.event(*CONFIGMAPS, id="watch-faults-configmap")
async def faults_configmap_changed(
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    by_target: kopf.Index[TargetKey, str] = kwargs["by_target"]
    release = core.configmap_release(name, labels)
    if release is None:
        return
    runtime = _runtime(memo)
    key = (namespace or "", release)
    configmap = core.ConfigMap.from_body(body)
    stale = set(core.held_by(configmap)) - set(by_target.get(key, ()))
    seen = core.configmap_fingerprint(configmap.data, configmap.annotations)
    if stale or (key in by_target and runtime.reconciler.fingerprints.get(key) != seen):
        runtime.workers.poke(key)


# An app Deployment appeared, went, or its pod-template stamp changed: rollout incidents wait
# for it, and the stamp is kept as the incidents want it; a stamp naming an incident that is
# gone is removed. (Its status churn is ignored.)
@kopf.on.event(*DEPLOYMENTS, id="watch-app-deployment")
async def app_deployment_changed(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    by_target: kopf.Index[TargetKey, str] = kwargs["by_target"]
    runtime = _runtime(memo)
    deployment = core.Deployment.from_body(body)
    stamp = core.stamp_of(deployment)
    seen_key = (namespace or "", name)
    gone = event.get("type") == "DELETED"
    changed = gone or runtime.stamps.get(seen_key) != stamp
    if gone:
        runtime.stamps.pop(seen_key, None)
    else:
        runtime.stamps[seen_key] = stamp
    key = (namespace or "", str(labels.get(naming.INSTANCE_LABEL, "")))
    stale = not gone and bool(set(core.held_by(None, (deployment,))) - set(by_target.get(key, ())))
    if (changed and key in by_target) or stale:
        runtime.workers.poke(key)


# A namespace opted in or out: its incidents become Active, or Refused (and cleared).
@kopf.on.event(*NAMESPACES, id="watch-namespace-opt-in")
async def namespace_changed(name: str, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any) -> None:
    by_target: kopf.Index[TargetKey, str] = kwargs["by_target"]
    runtime = _runtime(memo)
    opted_in = labels.get(naming.OPT_IN_LABEL) == naming.OPT_IN_VALUE
    if runtime.opted_in.get(name, opted_in) != opted_in:
        for key in list(by_target):
            if key[0] == name:
                runtime.workers.poke(key)
    runtime.opted_in[name] = opted_in
