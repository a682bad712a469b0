"""The fault history across crashes, in pure functions: what a replica writes when it starts,
when it crashes, and for a replica that is gone.

A crash ends a process without a transition, and a fault can end while the process is down
(the pod waits out the kubelet's back-off). So each start of a replica (its pod name) compares
the state it last recorded with the state in force now and writes what happened meanwhile,
with the best known time, and the termination of its previous container as the kubelet
reports it (OOMKilled, exit code). The I/O around these functions is in
:mod:`payflow.app.faults.controller` and :mod:`payflow.app.repository`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from payflow.app.faults.state import AtBasis, Change, Incident, Kind, Source, Transition
from payflow.faults import FAULTS, FaultSet, Number

PANIC_EXIT_CODE = 70  # EX_SOFTWARE, as payflow/faults.py's symptom says

# The ``reason`` of rows that a later start writes, or that a stopping process writes.
ENDED_WHILE_DOWN = "ended_while_down"
CHANGED_WHILE_DOWN = "changed_while_down"
REPLICA_GONE = "replica_gone"
STOPPED = "stopped"
# The ``reason`` of crash rows that the process writes itself (the kubelet's reasons, such as
# OOMKilled or Error, are kept as the kubelet gives them).
PANIC = "panic"
MEMORY_CEILING = "memory_ceiling"

# How far the kubelet's container start may lie from the process's own start (it has whole
# seconds; the interpreter starts a moment after the container).
START_SLACK_BEFORE = timedelta(seconds=5)
START_SLACK_AFTER = timedelta(seconds=2)


@dataclass(frozen=True)
class Recorded:
    """The last transition a replica recorded for one fault, and the last evidence of it."""

    row_id: int
    fault: str
    change: Change
    params: Mapping[str, Number] | None
    incidents: tuple[Incident, ...]
    at: datetime
    last_seen: datetime  # ``at``, or the latest crash of this fault recorded after it

    @property
    def on(self) -> bool:
        return self.change is not Change.OFF


@dataclass(frozen=True)
class Observed:
    """A transition that another replica of the release saw happen (``at_basis`` observed)."""

    at: datetime
    change: Change
    params: Mapping[str, Number] | None


@dataclass(frozen=True)
class Start:
    """What a starting replica knows: who it is and what is in force."""

    release: str
    replica: str
    now: datetime
    faults: FaultSet
    incidents: Mapping[str, tuple[Incident, ...]]  # from the ConfigMap's incidents annotation
    configmap_changed_at: datetime | None = None  # the ConfigMap's last write, when it could be read


@dataclass(frozen=True)
class Termination:
    """``lastState.terminated`` of a container, as the kubelet reports it."""

    container_id: str | None
    exit_code: int | None
    reason: str | None
    started_at: datetime | None
    finished_at: datetime


@dataclass(frozen=True)
class ContainerStatus:
    """One container of a pod, from ``status.containerStatuses``."""

    container_id: str | None  # the current container
    running_since: datetime | None  # ``state.running.startedAt``, when it runs
    restart_count: int
    last: Termination | None


def _frozen(params: Mapping[str, Number] | None) -> Mapping[str, Number] | None:
    return None if params is None else MappingProxyType(dict(params))


def _time(value: Any) -> datetime | None:
    """An RFC 3339 time of the Kubernetes API (``2026-11-26T10:00:00Z``), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def recovery_key(release: str, replica: str, fault: str, row_id: int) -> str:
    """The one row that closes (or changes) the interval a recorded row opened: whoever writes
    it first (the replica at its next start, or another replica for a gone one)."""
    return f"recovery:{release}:{replica}:{fault}:{row_id}"


def crash_key(release: str, pod: str, container: str) -> str:
    """One row per terminated container (``container`` is its ID, or its finish time)."""
    return f"crash:{release}:{pod}:{container}"


# --- when a change happened that nobody of this replica saw -------------------------------------


def while_down(
    last_seen: datetime, now: datetime, sibling: datetime | None, configmap_changed_at: datetime | None
) -> tuple[datetime, AtBasis]:
    """The best known time of a change that happened after ``last_seen`` (the last evidence of
    the old state) and before ``now`` (the start that finds the new state).

    In order: the time another replica of the release observed the same change (the ConfigMap
    is shared, so that is when it happened); the ConfigMap's last write (the change happened
    then or before; later writes make it late; the API gives whole seconds, so a write in the
    second of ``last_seen`` counts, as ``last_seen``); else ``last_seen``, the earliest it can be."""
    if sibling is not None and last_seen <= sibling <= now:
        return sibling, AtBasis.SIBLING
    if configmap_changed_at is not None and configmap_changed_at + timedelta(seconds=1) > last_seen:
        return min(max(configmap_changed_at, last_seen), now), AtBasis.CONFIGMAP_CHANGE
    return last_seen, AtBasis.LAST_SEEN


def first_sibling(
    observed: Sequence[Observed], after: datetime, change: Change, params: Mapping[str, Number] | None
) -> datetime | None:
    """When another replica first saw the fault go off (``change`` off), or take ``params``,
    after ``after`` (what it saw before belongs to an earlier interval)."""
    for o in sorted((o for o in observed if o.at >= after), key=lambda o: o.at):
        if change is Change.OFF and o.change is Change.OFF:
            return o.at
        if (
            change is Change.CHANGED
            and o.change in (Change.ON, Change.CHANGED)
            and dict(o.params or {}) == dict(params or {})
        ):
            return o.at
    return None


def start_rows(
    start: Start, prior: Mapping[str, Recorded], observed: Mapping[str, Sequence[Observed]]
) -> list[Transition]:
    """The rows a replica writes when it starts, given what it recorded last (``prior``, by
    fault) and what other replicas observed since (``observed``, by fault).

    - on before, off now: the fault ended while the process was down: ``off``, naming the
      incidents it had, at the best known time (:func:`while_down`);
    - on before with other parameters: ``changed`` likewise;
    - on before with the same parameters: nothing (the interval goes on across the restart);
    - off or never recorded before, on now: ``on`` now, naming the incidents of the ConfigMap.
    """
    rows: list[Transition] = []
    for fault in FAULTS:
        was = prior.get(fault.name)
        params = start.faults.get(fault.name)
        incidents = start.incidents.get(fault.name, ()) if params is not None else ()
        if was is not None and was.on:
            if params is not None and dict(was.params or {}) == dict(params):
                continue
            change = Change.OFF if params is None else Change.CHANGED
            sibling = first_sibling(observed.get(fault.name, ()), was.last_seen, change, params)
            at, basis = while_down(was.last_seen, start.now, sibling, start.configmap_changed_at)
            rows.append(
                Transition(
                    at,
                    fault.name,
                    change,
                    _frozen(params),
                    _frozen(was.params),
                    Source.RECOVERY,
                    was.incidents if params is None else incidents,
                    at_basis=basis,
                    reason=ENDED_WHILE_DOWN if params is None else CHANGED_WHILE_DOWN,
                    key=recovery_key(start.release, start.replica, fault.name, was.row_id),
                )
            )
        elif params is not None:
            rows.append(
                Transition(
                    start.now, fault.name, Change.ON, _frozen(params), None, Source.ENVIRONMENT, incidents
                )
            )
    return rows


def name_ends(
    transitions: Sequence[Transition], at_start: Mapping[str, tuple[Incident, ...]]
) -> list[Transition]:
    """Transitions that end or change a fault name its incidents. A process that started with a
    fault in force (from its environment) knows their names only from the ConfigMap it read at
    start (``at_start``); its live "off" would otherwise name none (seen on the node: a replica
    restarted by a panic, then the incident deleted)."""
    return [
        replace(t, incidents=at_start.get(t.fault, ()))
        if not t.incidents and t.change in (Change.OFF, Change.CHANGED)
        else t
        for t in transitions
    ]


def stop_rows(
    faults: FaultSet, incidents: Mapping[str, tuple[Incident, ...]], now: datetime
) -> list[Transition]:
    """A process that stops (SIGTERM: a rollout, a scale-down) ends its faults: ``off``."""
    return [
        Transition(
            now,
            name,
            Change.OFF,
            None,
            _frozen(params),
            Source.PROCESS,
            incidents.get(name, ()),
            reason=STOPPED,
        )
        for name, params in faults.active.items()
    ]


def gone_rows(
    start: Start,
    replica: str,
    pod: str,
    open_intervals: Sequence[Recorded],
    observed: Mapping[str, Sequence[Observed]],
) -> list[Transition]:
    """``off`` rows for the faults a replica whose pod no longer exists left on (its pod was
    deleted while it was down, as a rollback deletes a crash-looping ReplicaSet's pods);
    ``observed``: what the other replicas saw of each fault since.

    A fault off now ended for it at the best known time of the change; a fault still in force
    ended for it when the replica went, at some time after its last evidence."""
    rows: list[Transition] = []
    for was in open_intervals:
        if not was.on:
            continue
        if start.faults.get(was.fault) is None:
            sibling = first_sibling(observed.get(was.fault, ()), was.last_seen, Change.OFF, None)
            at, basis = while_down(was.last_seen, start.now, sibling, start.configmap_changed_at)
        else:
            at, basis = was.last_seen, AtBasis.LAST_SEEN
        rows.append(
            Transition(
                at,
                was.fault,
                Change.OFF,
                None,
                _frozen(was.params),
                Source.RECOVERY,
                was.incidents,
                at_basis=basis,
                reason=REPLICA_GONE,
                replica=replica,
                pod=pod,
                key=recovery_key(start.release, replica, was.fault, was.row_id),
            )
        )
    return rows


# --- crashes -----------------------------------------------------------------------------------


def in_force(
    prior: Mapping[str, Recorded], faults: FaultSet, incidents: Mapping[str, tuple[Incident, ...]]
) -> dict[str, tuple[Mapping[str, Number] | None, tuple[Incident, ...]]]:
    """The faults that may explain the previous container's end: those its replica last
    recorded as on, and those in force now (parameters and incidents: now's where both)."""
    out: dict[str, tuple[Mapping[str, Number] | None, tuple[Incident, ...]]] = {
        name: (r.params, r.incidents) for name, r in prior.items() if r.on
    }
    for name, params in faults.active.items():
        out[name] = (params, incidents.get(name, ()) or out.get(name, (None, ()))[1])
    return out


def crash_now(
    fault: str,
    params: Mapping[str, Number] | None,
    incidents: tuple[Incident, ...],
    now: datetime,
    *,
    reason: str,
    exit_code: int,
    release: str,
    pod: str | None,
    container_id: str | None,
) -> Transition:
    """The row a crashing process writes just before it ends."""
    return Transition(
        now,
        fault,
        Change.CRASH,
        _frozen(params),
        None,
        Source.PROCESS,
        incidents,
        kind=Kind.CRASH,
        reason=reason,
        exit_code=exit_code,
        container_id=container_id,
        key=crash_key(release, pod, container_id) if pod and container_id else None,
    )


def attribute(term: Termination, faults: Mapping[str, Any]) -> str | None:
    """The fault that explains a termination: ``oom`` for an OOM kill, ``panic`` for exit 70,
    when that fault was in force; None otherwise (not a fault's doing, or not provably)."""
    if term.reason == "OOMKilled" and "oom" in faults:
        return "oom"
    if term.exit_code == PANIC_EXIT_CODE and "panic" in faults:
        return "panic"
    return None


def crash_window(term: Termination) -> tuple[datetime, datetime]:
    """The span in which the terminated container's own crash row would lie (the kubelet's
    times have whole seconds)."""
    start = term.started_at or term.finished_at
    return start - timedelta(seconds=1), term.finished_at + timedelta(seconds=2)


def crash_from_status(
    term: Termination,
    faults: Mapping[str, tuple[Mapping[str, Number] | None, tuple[Incident, ...]]],
    *,
    release: str,
    pod: str,
    already: Sequence[datetime],
) -> Transition | None:
    """The crash row for the previous container of this pod, or None: not a fault's doing, or
    already recorded (``already``: the crash rows of this pod within :func:`crash_window`,
    such as the one a panicking process wrote itself)."""
    fault = attribute(term, faults)
    if fault is None:
        return None
    lo, hi = crash_window(term)
    if any(lo <= t <= hi for t in already):
        return None
    params, incidents = faults[fault]
    return Transition(
        term.finished_at,
        fault,
        Change.CRASH,
        _frozen(params),
        None,
        Source.KUBELET,
        incidents,
        kind=Kind.CRASH,
        at_basis=AtBasis.CONTAINER_STATUS,
        reason=term.reason,
        exit_code=term.exit_code,
        container_id=term.container_id,
        key=crash_key(release, pod, term.container_id or term.finished_at.isoformat()),
    )


# --- reading the API's objects --------------------------------------------------------------------


def container_status(pod: Mapping[str, Any], container: str) -> ContainerStatus | None:
    """The status of ``container`` in a pod's JSON (or of its only container), or None."""
    statuses = [s for s in (pod.get("status") or {}).get("containerStatuses") or [] if isinstance(s, dict)]
    found = [s for s in statuses if s.get("name") == container] or (statuses if len(statuses) == 1 else [])
    if not found:
        return None
    s = found[0]
    running = (s.get("state") or {}).get("running") or {}
    last = (s.get("lastState") or {}).get("terminated") or {}
    finished = _time(last.get("finishedAt"))
    termination = None
    if finished is not None:
        code = last.get("exitCode")
        termination = Termination(
            container_id=last.get("containerID") or None,
            exit_code=code if isinstance(code, int) else None,
            reason=last.get("reason") or None,
            started_at=_time(last.get("startedAt")),
            finished_at=finished,
        )
    count = s.get("restartCount")
    return ContainerStatus(
        container_id=s.get("containerID") or None,
        running_since=_time(running.get("startedAt")),
        restart_count=count if isinstance(count, int) else 0,
        last=termination,
    )


def describes_this_process(status: ContainerStatus, process_start: datetime) -> bool:
    """Whether the kubelet's status is already about the container this process runs in (it
    reports a restart a moment after it happens; until then it shows the previous one)."""
    since = status.running_since
    return (
        since is not None and process_start - START_SLACK_BEFORE <= since <= process_start + START_SLACK_AFTER
    )


def configmap_changed_at(configmap: Mapping[str, Any]) -> datetime | None:
    """The last write to a ConfigMap: the latest ``metadata.managedFields[].time``."""
    entries = (configmap.get("metadata") or {}).get("managedFields") or []
    times = [t for e in entries if isinstance(e, dict) and (t := _time(e.get("time"))) is not None]
    return max(times) if times else None
