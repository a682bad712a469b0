"""Reconciling one target at a time: read, decide (pure), write.

Every trigger (an incident created, changed, resumed or deleted; the faults ConfigMap or the
app Deployment changed, or found holding the faults of an incident that is gone; a namespace
labelled; an expiry due) only *requests* a reconcile of its target. Requests for one target
are serialized and coalesced: at most one reconcile of a target runs, and one more runs after
it if anything asked meanwhile. Each reconcile reads the whole truth fresh from the API server,
so the last one always sees every write before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from payflow import naming
from payflow.operator import core
from payflow.operator.kube import Conflict, Kube
from payflow.operator.metrics import Metrics

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]  # (namespace, release)
EventSink = Callable[[dict[str, Any], core.Event], None]


@dataclass
class _State:
    requested: int = 0
    done: int = 0
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None
    error_gen: int = 0
    failures: int = 0
    timer: asyncio.TimerHandle | None = None
    forgotten: bool = False  # the target had no incident left at its last reconcile
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class TargetWorkers:
    """One serial, coalescing worker per target; ``reconcile`` runs the I/O and returns when
    the target wants to be looked at again (a UTC moment), or None."""

    def __init__(
        self,
        reconcile: Callable[[TargetKey], Awaitable[datetime | None]],
        *,
        pending_recheck: float = 5.0,
        resync: float = 300.0,
        max_backoff: float = 30.0,
    ) -> None:
        self._reconcile = reconcile
        self._states: dict[TargetKey, _State] = {}
        self.pending_recheck = pending_recheck
        self.resync = resync
        self.max_backoff = max_backoff

    def poke(self, key: TargetKey) -> int:
        """Ask for a reconcile of ``key`` (without waiting); the request's number."""
        state = self._states.setdefault(key, _State())
        state.requested += 1
        state.forgotten = False
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(self._work(key, state), name=f"target {key}")
        return state.requested

    async def reconcile(self, key: TargetKey) -> None:
        """Ask for a reconcile of ``key`` and wait for one that started after the request;
        raise its error, if it failed."""
        gen = self.poke(key)
        state = self._states[key]
        async with state.changed:
            await state.changed.wait_for(lambda: state.done >= gen)
        if state.error is not None and state.error_gen >= gen:
            raise state.error

    async def _work(self, key: TargetKey, state: _State) -> None:
        while state.done < state.requested:
            gen = state.requested
            wake: datetime | None = None
            error: BaseException | None = None
            try:
                wake = await self._reconcile(key)
            except Exception as exc:
                error = exc
            async with state.changed:
                state.done = gen
                state.error, state.error_gen = (error, gen) if error else (None, 0)
                state.changed.notify_all()
            if error is not None:
                state.failures += 1
                delay = min(self.max_backoff, 0.5 * 2**state.failures)
                log.warning("reconcile of %s/%s failed (retry in %.1fs): %s", *key, delay, error)
                self._schedule(key, state, delay)
            else:
                state.failures = 0
                if not state.forgotten:
                    self._schedule_wake(key, state, wake)
        if state.forgotten and state.done >= state.requested and self._states.get(key) is state:
            del self._states[key]  # nothing left to watch over

    def _schedule_wake(self, key: TargetKey, state: _State, wake: datetime | None) -> None:
        delay = self.resync if wake is None else (wake - datetime.now(UTC)).total_seconds() + 0.005
        self._schedule(key, state, max(0.0, delay))

    def schedule_pending(self, key: TargetKey) -> None:
        state = self._states.setdefault(key, _State())
        self._schedule(key, state, self.pending_recheck)

    def _schedule(self, key: TargetKey, state: _State, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if state.timer is not None and not state.timer.cancelled():
            if state.timer.when() <= when and state.timer.when() > loop.time():
                return  # an earlier wake-up is already due
            state.timer.cancel()
        state.timer = loop.call_at(when, self.poke, key)

    def forget(self, key: TargetKey) -> None:
        """Stop the timers of a target that has no incidents left (called from its reconcile)."""
        state = self._states.get(key)
        if state is None:
            return
        state.forgotten = True
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None

    async def close(self) -> None:
        for state in self._states.values():
            if state.timer is not None:
                state.timer.cancel()
            if state.task is not None and not state.task.done():
                state.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await state.task


class Reconciler:
    """The I/O shell around :func:`payflow.operator.core.plan_target`."""

    def __init__(
        self,
        kube: Kube,
        metrics: Metrics,
        events: EventSink,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.events = events
        self.clock = clock
        # What each target's ConfigMap holds of ours after our last reconcile: a watch event
        # showing exactly that is our own write (or no change), not a manual edit.
        self.fingerprints: dict[TargetKey, str] = {}
        # The incidents each target had at its last reconcile: the Event of one deleted since
        # names it with its uid.
        self.known: dict[TargetKey, dict[str, core.Incident]] = {}
        self.workers: TargetWorkers  # set by the runtime

    async def __call__(self, key: TargetKey) -> datetime | None:
        started = time.perf_counter()
        result = "ok"
        try:
            for attempt in range(5):
                try:
                    return await self._once(key)
                except Conflict:
                    result = "conflict"
                    log.info("ConfigMap of %s/%s changed meanwhile; deciding again (%d)", *key, attempt + 1)
            raise RuntimeError(f"target {key[0]}/{key[1]}: the ConfigMap kept changing under us")
        except Exception as exc:
            result = "error"
            self.metrics.errors.labels(type(exc).__name__).inc()
            raise
        finally:
            self.metrics.reconcile_seconds.labels(result if result != "conflict" else "ok").observe(
                time.perf_counter() - started
            )

    async def _once(self, key: TargetKey) -> datetime | None:
        namespace, release = key
        ns_body, items, cm_body, dep_bodies = await asyncio.gather(
            self.kube.get_namespace(namespace),
            self.kube.list_incidents(namespace),
            self.kube.get_configmap(namespace, naming.faults_configmap_name(release)),
            self.kube.list_deployments(namespace, naming.app_selector(release)),
            return_exceptions=True,
        )
        if not isinstance(ns_body, BaseException) and core.namespace_closing(ns_body):
            # Deleted with everything in it (the operator's RoleBinding too, maybe): nothing
            # to clear, and the other reads may have failed for that reason.
            log.info("namespace %s is gone or being deleted: nothing to do for release %s", *key)
            self._forget(key)
            return None
        for result in (ns_body, items, cm_body, dep_bodies):
            if isinstance(result, BaseException):
                raise result
        ns_body = cast(dict[str, Any], ns_body)
        items = cast(list[dict[str, Any]], items)
        cm_body = cast(dict[str, Any] | None, cm_body)
        dep_bodies = cast(list[dict[str, Any]], dep_bodies)
        incidents = [core.Incident.from_body(b) for b in items]
        incidents = [i for i in incidents if i.target == release]
        target = core.Target(
            namespace=namespace,
            name=release,
            opted_in=core.namespace_opted_in(ns_body),
            configmap=core.ConfigMap.from_body(cm_body) if cm_body is not None else None,
            deployments=tuple(core.Deployment.from_body(b) for b in dep_bodies),
        )
        plan = core.plan_target(target, incidents, self.clock())

        if target.configmap is not None:
            # Recorded before the write: its watch event may arrive before the response.
            self.fingerprints[key] = core.patched_fingerprint(target.configmap, plan.configmap_patch)
            if plan.configmap_patch is not None:
                await self.kube.patch_configmap(namespace, target.configmap.name, plan.configmap_patch)
        await asyncio.gather(
            *(self.kube.patch_deployment(namespace, d.name, p) for d, p in plan.deployment_patches)
        )
        await asyncio.gather(
            *(
                self.kube.patch_incident_status(namespace, p.incident.name, p.status)
                for p in plan.incidents
                if p.status is not None
            )
        )
        for p in plan.incidents:
            if p.event is not None:
                self.announce(p.incident.ref, p.event, target.deployments, namespace)
        known = self.known.get(key, {})
        for gone in plan.cleared:
            seen = known.get(gone.name)
            ref = seen.ref if seen is not None else core.incident_ref(namespace, gone.name)
            self.announce(ref, gone.event, target.deployments, namespace)
        if plan.pending:
            self.workers.schedule_pending(key)
        if incidents:
            self.known[key] = {i.name: i for i in incidents}
        else:
            self._forget(key)
        return plan.wake_at

    def _forget(self, key: TargetKey) -> None:
        """A target without incidents: no timers, nothing remembered."""
        self.workers.forget(key)
        self.fingerprints.pop(key, None)
        self.known.pop(key, None)

    def announce(
        self,
        ref: dict[str, Any],
        event: core.Event,
        deployments: tuple[core.Deployment, ...],
        namespace: str,
    ) -> None:
        """Post ``event`` on the incident ``ref`` and, for RCA tools, on the app Deployments."""
        name = ref["metadata"]["name"]
        log.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)
        self.events(ref, event)
        for deployment in deployments:
            self.events(
                deployment.ref(namespace),
                core.Event(event.type, event.reason, f"{naming.KIND} {name}: {event.message}"),
            )
