"""The fault controller: owns the one reference to the state in force, swaps it atomically,
drives the injectors, updates the metrics and records the fault history in PostgreSQL: every
transition, what happened while the process was down (at start), and the crashes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg

from payflow.app import metrics, repository
from payflow.app.faults import ground_truth, injectors
from payflow.app.faults.cluster import ClusterReader, PodGone
from payflow.app.faults.ground_truth import Recorded, Start, Termination
from payflow.app.faults.injectors import ConnectionHolder, CpuBurner, MemoryLeak
from payflow.app.faults.state import (
    FaultState,
    Incident,
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

# One unit of work of the recorder, on its own connection; retried while the database fails.
Job = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]

API_CALL_DEADLINE_S = 8.0  # one read of the API, retries of the client included
STATUS_DEADLINE_S = 30.0  # how long a start waits for the kubelet to report its container
GONE_LOOKBACK = timedelta(days=7)  # how far back another replica's open interval is looked at
GONE_MAX_PODS = 20  # pods looked up each time


def _now() -> datetime:
    return datetime.now(UTC)


def process_started_at() -> datetime:
    """When this process started (from /proc; now, where /proc cannot say)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)
    except (OSError, ValueError, IndexError, StopIteration):
        return _now()


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
        pod: str | None = None,
        cluster: ClusterReader | None = None,
        configmap: str | None = None,
        container: str = "app",
        crash_timeout_s: float = 1.0,
        gone_check_s: float = 30.0,
    ) -> None:
        self.database_url = database_url
        self.replica = replica
        self.release = release
        self.leak = leak
        self.burner = burner
        self.holder = holder
        self.pod = pod
        self.cluster = cluster
        self.configmap = configmap
        self.container = container
        self.crash_timeout_s = crash_timeout_s
        self.gone_check_s = gone_check_s
        self.state = FaultState(faults=FaultSet(), entries={})
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._recorder: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._apply_lock = asyncio.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.annotation_warning: str | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # The start: what it found (read once), what the replica had recorded before it, and
        # whether its rows are written; the container this process runs in (from the kubelet).
        self._start: Start | None = None
        self._prior: dict[str, Recorded] | None = None
        self._started = asyncio.Event()
        self.container_id: str | None = None

    # --- reading (any thread) ---------------------------------------------------------------

    def active(self) -> Mapping[str, Mapping[str, Number]]:
        return self.state.faults.active

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self, env: Mapping[str, str]) -> None:
        self.loop = asyncio.get_running_loop()
        self._recorder = asyncio.create_task(self._record_loop(), name="fault-recorder")
        now = _now()
        state, transitions = initial_state(env, now)
        if state.rejected is not None:
            metrics.FAULT_REJECTIONS.labels(Source.ENVIRONMENT.value).inc()
            log.error(
                "rejected the INJECT_* environment, starting without faults: %s",
                state.rejected.reason,
                extra={"event": "fault_config_rejected", "source": "environment"},
            )
        # The start's rows first: what they write depends on what the replica recorded before.
        self._queue.put_nowait(partial(self._record_start, state.faults, now))
        await self._swap(state, transitions, record=False)
        injectors.set_crash_hook(self.record_crash)
        if self.cluster is not None and self.pod:
            self._tasks.append(asyncio.create_task(self._record_last_termination(), name="last-termination"))
            self._tasks.append(asyncio.create_task(self._close_gone_replicas(), name="gone-replicas"))

    async def stop(self) -> None:
        """A stopping process (SIGTERM) ends its faults: ``off`` rows, reason stopped."""
        injectors.set_crash_hook(None)
        for task in self._tasks:
            task.cancel()
        state = self.state
        rows = ground_truth.stop_rows(
            state.faults, {n: e.incidents for n, e in state.entries.items()}, _now()
        )
        if rows:
            self._queue.put_nowait(partial(self._insert, rows))
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

    async def _swap(self, state: FaultState, transitions: list[Transition], record: bool = True) -> None:
        self.state = state  # the one atomic swap: readers see the old or the new state, whole
        if self._start is not None:
            transitions = ground_truth.name_ends(transitions, self._start.incidents)
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
        if transitions and record:
            self._queue.put_nowait(partial(self._insert, transitions))

    async def _reconcile(self, state: FaultState) -> None:
        oom = state.faults.get("oom")
        self.leak.cache.set_evicting(oom is None)
        cpu = state.faults.get("cpuBurn")
        self.burner.set(float(cpu["cores"]) if cpu else 0.0)
        await self.holder.set(state.faults.get("dbTimeout"))

    # --- the ground truth in PostgreSQL ----------------------------------------------------------

    async def _insert(self, rows: list[Transition], conn: psycopg.AsyncConnection[Any]) -> None:
        await repository.insert_fault_transitions(conn, rows, self.replica, self.release, self.pod)

    async def _api(self, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One blocking read of the API, in a thread, bounded."""
        return await asyncio.wait_for(asyncio.to_thread(call), API_CALL_DEADLINE_S)

    async def _read_configmap(self) -> tuple[Mapping[str, tuple[Incident, ...]], datetime | None]:
        """The incidents behind each fault and the ConfigMap's last write, when it can be read."""
        if self.cluster is None or not self.configmap:
            return {}, None
        cluster, name = self.cluster, self.configmap
        try:
            raw = await self._api(lambda: cluster.configmap(name))
        except Exception as exc:
            log.warning("could not read the faults configmap at start (%s): the start names no incident", exc)
            return {}, None
        annotations = (raw.get("metadata") or {}).get("annotations") or {}
        incidents, warning = parse_incidents(annotations.get(SOURCES_ANNOTATION))
        if warning:
            log.warning(warning)
        return incidents, ground_truth.configmap_changed_at(raw)

    async def _record_start(
        self, faults: FaultSet, now: datetime, conn: psycopg.AsyncConnection[Any]
    ) -> None:
        """What this start writes: its faults (naming their incidents), and what ended or
        changed while the replica's previous process was down. Safe to retry: a retry after
        the rows were written finds them and writes nothing more."""
        if self._start is None:  # the API is read once, however often the database fails
            incidents, changed_at = await self._read_configmap()
            self._start = Start(self.release, self.replica, now, faults, incidents, changed_at)
        start = self._start
        prior = await repository.last_recorded(conn, self.release, self.replica)
        if self._prior is None:
            self._prior = prior
        observed = {
            name: await repository.observed_elsewhere(conn, self.release, self.replica, name, was.last_seen)
            for name, was in prior.items()
            if was.on and faults.get(name) != was.params
        }
        rows = ground_truth.start_rows(start, prior, observed)
        await self._insert(rows, conn)
        self._started.set()
        log.info("the start of replica %s is in the fault history (%d rows)", self.replica, len(rows))
        for row in rows:
            if row.source is Source.RECOVERY:
                log.warning(
                    "fault %s %s while the process was down: recorded at %s (%s)",
                    row.fault,
                    row.change.value,
                    row.at.isoformat(),
                    row.at_basis.value,
                    extra={
                        "event": "fault_transition_recovered",
                        "fault": row.fault,
                        "change": row.change.value,
                        "incidents": [i.to_dict() for i in row.incidents],
                    },
                )

    async def _record_last_termination(self) -> None:
        """Record how this pod's previous container ended (an OOM kill leaves the process no
        chance to say), from the kubelet's ``lastState.terminated``; learn this container's ID."""
        assert self.cluster is not None
        assert self.pod is not None
        cluster, pod, started = self.cluster, self.pod, process_started_at()
        deadline = time.monotonic() + STATUS_DEADLINE_S
        while True:
            problem: object = "the kubelet has not reported this container yet"
            try:
                status = ground_truth.container_status(
                    await self._api(lambda: cluster.pod(pod)), self.container
                )
                if status is not None and ground_truth.describes_this_process(status, started):
                    break
            except PodGone:
                log.warning("pod %s not found: the previous container's end is not recorded", pod)
                return
            except Exception as exc:
                problem = exc
            if time.monotonic() > deadline:
                log.warning(
                    "could not read this pod's container status (%s): its last end is not recorded", problem
                )
                return
            await asyncio.sleep(1.0)
        self.container_id = status.container_id
        if status.last is not None:
            await self._started.wait()
            self._queue.put_nowait(partial(self._record_termination, status.last))

    async def _record_termination(self, term: Termination, conn: psycopg.AsyncConnection[Any]) -> None:
        assert self._start is not None
        assert self.pod is not None
        faults = ground_truth.in_force(self._prior or {}, self._start.faults, self._start.incidents)
        fault = ground_truth.attribute(term, faults)
        if fault is None:
            log.info(
                "the previous container ended (%s, exit code %s) without a fault to explain it",
                term.reason,
                term.exit_code,
            )
            return
        lo, hi = ground_truth.crash_window(term)
        already = await repository.crash_times(conn, self.release, self.pod, fault, lo, hi)
        row = ground_truth.crash_from_status(
            term, faults, release=self.release, pod=self.pod, already=already
        )
        if row is None:
            log.info("the previous container's end (%s) is recorded already", term.finished_at.isoformat())
            return
        await self._insert([row], conn)
        log.warning(
            "fault %s: the previous container ended at %s (%s, exit code %s)",
            fault,
            term.finished_at.isoformat(),
            term.reason,
            term.exit_code,
            extra={"event": "fault_crash_recorded", "fault": fault, "reason": term.reason},
        )

    async def _close_gone_replicas(self) -> None:
        """``off`` for the faults that replicas whose pods are gone left on: a pod deleted while
        it was down (a rollback deletes a crash-looping ReplicaSet's pods, after the new pods
        started) never writes them. Looked at after the start, then every ``gone_check_s``."""
        assert self.cluster is not None
        await self._started.wait()
        while True:
            try:
                await asyncio.wait_for(self._close_gone_once(), max(self.gone_check_s, 10.0))
            except TimeoutError:  # a slow database or API server: next time
                pass
            except Exception:
                log.exception("could not look for replicas that are gone")
            await asyncio.sleep(self.gone_check_s)

    async def _close_gone_once(self) -> None:
        assert self.cluster is not None
        assert self.loop is not None
        cluster = self.cluster
        found: asyncio.Future[dict[tuple[str, str], list[Recorded]]] = self.loop.create_future()

        async def read(conn: psycopg.AsyncConnection[Any]) -> None:
            since = _now() - GONE_LOOKBACK
            intervals = await repository.open_elsewhere(conn, self.release, self.replica, since)
            if not found.done():
                found.set_result(intervals)

        self._queue.put_nowait(read)
        gone: dict[tuple[str, str], list[Recorded]] = {}
        for (replica, pod), intervals in list((await found).items())[:GONE_MAX_PODS]:
            try:
                await self._api(partial(cluster.pod, pod))
            except PodGone:
                gone[(replica, pod)] = intervals
            except Exception as exc:  # cannot tell: leave it to a later look
                log.info("could not look up pod %s (%s)", pod, exc)
        if not gone:
            return
        _, changed_at = await self._read_configmap()
        start = Start(self.release, self.replica, _now(), self.state.faults, {}, changed_at)
        written: asyncio.Future[list[Transition]] = self.loop.create_future()

        async def close(conn: psycopg.AsyncConnection[Any]) -> None:
            rows: list[Transition] = []
            for (replica, pod), intervals in gone.items():
                observed = {
                    was.fault: await repository.observed_elsewhere(
                        conn, self.release, replica, was.fault, was.last_seen
                    )
                    for was in intervals
                }
                rows.extend(ground_truth.gone_rows(start, replica, pod, intervals, observed))
            await self._insert(rows, conn)
            if not written.done():
                written.set_result(rows)

        self._queue.put_nowait(close)
        rows = await written
        log.warning(
            "closed %d fault intervals of replicas that are gone",
            len(rows),
            extra={
                "event": "fault_transition_recovered",
                "replicas": sorted({r.replica or "" for r in rows}),
            },
        )

    def record_crash(self, fault: str, reason: str, exit_code: int) -> None:
        """The crash hook (see :func:`payflow.app.faults.injectors.set_crash_hook`): write the
        crash row on a connection of its own, waiting at most ``crash_timeout_s`` (the crash
        goes on when the database is slow or away)."""
        entry = self.state.entries.get(fault)
        incidents = (entry.incidents if entry else ()) or (
            self._start.incidents.get(fault, ()) if self._start else ()
        )
        row = ground_truth.crash_now(
            fault,
            self.state.faults.get(fault),
            incidents,
            _now(),
            reason=reason,
            exit_code=exit_code,
            release=self.release,
            pod=self.pod,
            container_id=self.container_id,
        )
        values = repository.history_values([row], self.replica, self.release, self.pod)
        written = threading.Event()

        def write() -> None:
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=2) as conn:
                    conn.cursor().executemany(repository.INSERT_HISTORY, values)
                written.set()
            except Exception as exc:
                log.warning("could not record the crash: %s", exc)

        t0 = time.perf_counter()
        threading.Thread(target=write, name="crash-record", daemon=True).start()
        if written.wait(self.crash_timeout_s):
            log.info("crash recorded in %.0f ms", (time.perf_counter() - t0) * 1000)
        else:
            log.warning("crash not recorded within %.1f s; ending anyway", self.crash_timeout_s)

    async def _record_loop(self) -> None:
        """Runs the recorder's jobs in order on a connection of its own (not the pool, which
        the DB timeout fault may have exhausted); retries a job until the database takes it."""
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            await self._record_forever(conn)
        finally:
            if self._conn is not None:
                await self._conn.close()

    async def _record_forever(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        while True:
            job = await self._queue.get()
            try:
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(
                                self.database_url, autocommit=True, connect_timeout=5
                            )
                        self._conn = conn
                        await job(conn)
                        break
                    except psycopg.Error as exc:
                        log.warning("could not record fault transitions yet: %s", exc)
                        if conn is not None:
                            await conn.close()
                        conn = None
                        await asyncio.sleep(1)
                    except Exception:  # a bug: not worth retrying for ever
                        log.exception("fault history job failed")
                        break
            finally:
                self._queue.task_done()
