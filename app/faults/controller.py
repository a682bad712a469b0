"""The fault controller: owns the one reference to the state in force, swaps it atomically,
drives the injectors, updates the metrics and records every transition in PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import psycopg

from payflow.app import metrics, repository
from payflow.app.faults.injectors import ConnectionHolder, CpuBurner, MemoryLeak
from payflow.app.faults.state import (
    FaultState,
    Source,
    Transition,
    apply_change,
    initial_state,
    parse_incidents,
    reject,
)
from payflow.app.faults.watcher import ConfigMapEvent
from payflow.faults import FAULTS, FaultConfigError, FaultSet, Number
from payflow.naming import SOURCES_ANNOTATION

log = logging.getLogger("payflow.app.faults")


def _now() -> datetime:
    return datetime.now(UTC)


class FaultController:
    def __init__(
        self,
        *,
        database_url: str,
        replica: str,
        release: str,
        leak: MemoryLeak,
        burner: CpuBurner,
        holder: ConnectionHolder,
    ) -> None:
        self.database_url = database_url
        self.replica = replica
        self.release = release
        self.leak = leak
        self.burner = burner
        self.holder = holder
        self.state = FaultState(faults=FaultSet(), entries={})
        self._queue: asyncio.Queue[list[Transition]] = asyncio.Queue()
        self._recorder: asyncio.Task[None] | None = None
        self._apply_lock = asyncio.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.annotation_warning: str | None = None
        self._conn: psycopg.AsyncConnection[object] | None = None

    # --- reading (any thread) ---------------------------------------------------------------

    def active(self) -> Mapping[str, Mapping[str, Number]]:
        return self.state.faults.active

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self, env: Mapping[str, str]) -> None:
        self.loop = asyncio.get_running_loop()
        self._recorder = asyncio.create_task(self._record_loop(), name="fault-recorder")
        state, transitions = initial_state(env, _now())
        if state.rejected is not None:
            metrics.FAULT_REJECTIONS.labels(Source.ENVIRONMENT.value).inc()
            log.error(
                "rejected the INJECT_* environment, starting without faults: %s",
                state.rejected.reason,
                extra={"event": "fault_config_rejected", "source": "environment"},
            )
        await self._swap(state, transitions)

    async def stop(self) -> None:
        self.burner.stop()
        await self.holder.stop()
        if self._recorder is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), 3)
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder

    # --- changes ------------------------------------------------------------------------------

    def on_configmap_threadsafe(self, event: ConfigMapEvent) -> None:
        """Called by the watcher's thread."""
        if self.loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.apply_configmap(event), self.loop)

    async def apply_configmap(self, event: ConfigMapEvent) -> None:
        async with self._apply_lock:
            now = _now()
            if event.kind in ("DELETED", "MISSING"):
                log.warning(
                    "faults configmap %s; the faults in force stay",
                    "deleted" if event.kind == "DELETED" else "not found",
                    extra={"event": "configmap_" + event.kind.lower()},
                )
                return
            try:
                faults = FaultSet.from_env(event.data)
            except FaultConfigError as exc:
                metrics.FAULT_REJECTIONS.labels(Source.CONFIGMAP.value).inc()
                log.error(
                    "rejected fault configuration from the configmap (resourceVersion %s), "
                    "keeping the last good state: %s",
                    event.resource_version,
                    exc,
                    extra={"event": "fault_config_rejected", "source": "configmap", "errors": exc.errors},
                )
                self.state = reject(self.state, exc.errors, Source.CONFIGMAP, now, event.resource_version)
                return
            incidents, warning = parse_incidents(event.annotations.get(SOURCES_ANNOTATION))
            if warning and warning != self.annotation_warning:
                log.warning(warning)
            self.annotation_warning = warning
            state, transitions = apply_change(
                self.state, faults, Source.CONFIGMAP, incidents, now, event.resource_version
            )
            await self._swap(state, transitions)

    async def _swap(self, state: FaultState, transitions: list[Transition]) -> None:
        self.state = state  # the one atomic swap: readers see the old or the new state, whole
        for fault in FAULTS:
            params = state.faults.get(fault.name)
            metrics.FAULT_ACTIVE.labels(fault.name).set(1 if params is not None else 0)
            for p in fault.params:
                metrics.FAULT_PARAM.labels(fault.name, p.key).set(float(params[p.key]) if params else 0.0)
        for t in transitions:
            metrics.FAULT_TRANSITIONS.labels(t.fault, t.change.value).inc()
            log.warning(
                "fault %s %s (source %s)",
                t.fault,
                t.change.value,
                t.source.value,
                extra={
                    "event": "fault_transition",
                    "fault": t.fault,
                    "change": t.change.value,
                    "params": dict(t.params) if t.params else None,
                    "incidents": [i.to_dict() for i in t.incidents],
                },
            )
        await self._reconcile(state)
        if transitions:
            self._queue.put_nowait(transitions)

    async def _reconcile(self, state: FaultState) -> None:
        oom = state.faults.get("oom")
        self.leak.cache.set_evicting(oom is None)
        cpu = state.faults.get("cpuBurn")
        self.burner.set(float(cpu["cores"]) if cpu else 0.0)
        await self.holder.set(state.faults.get("dbTimeout"))

    # --- the ground truth in PostgreSQL ----------------------------------------------------------

    async def _record_loop(self) -> None:
        """Writes transitions on a connection of its own (not the pool, which the DB timeout
        fault may have exhausted); retries until the database takes them."""
        conn: psycopg.AsyncConnection[object] | None = None
        try:
            await self._record_forever(conn)
        finally:
            if self._conn is not None:
                await self._conn.close()

    async def _record_forever(self, conn: psycopg.AsyncConnection[object] | None) -> None:
        while True:
            batch = await self._queue.get()
            try:
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(
                                self.database_url, autocommit=True, connect_timeout=5
                            )
                        self._conn = conn
                        await repository.insert_fault_transitions(conn, batch, self.replica, self.release)
                        break
                    except psycopg.Error as exc:
                        log.warning("could not record fault transitions yet: %s", exc)
                        if conn is not None:
                            await conn.close()
                        conn = None
                        await asyncio.sleep(1)
            finally:
                self._queue.task_done()
