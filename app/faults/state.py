"""The fault state in force: an immutable value, replaced as a whole on every change.

Everything here is pure: the caller passes the clock. :func:`apply_change` turns the state in
force plus a newly parsed :class:`~payflow.faults.FaultSet` into the next state and the list of
transitions to record (the ground truth of when a fault acted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from payflow.faults import FAULTS, FaultConfigError, FaultSet, Number


class Source(StrEnum):
    """What carried a change, or who saw a crash."""

    ENVIRONMENT = "environment"  # the INJECT_* environment at the process's start
    CONFIGMAP = "configmap"  # the ConfigMap, watched live
    RECOVERY = "recovery"  # worked out by a later start: the change happened while nobody watched
    PROCESS = "process"  # the crashing process itself, just before it ended
    KUBELET = "kubelet"  # the pod's container status (lastState.terminated), read at the next start


class Change(StrEnum):
    ON = "on"
    OFF = "off"
    CHANGED = "changed"
    CRASH = "crash"  # a row of kind crash: the fault acted and the process ended


class Kind(StrEnum):
    TRANSITION = "transition"
    CRASH = "crash"


class AtBasis(StrEnum):
    """How a row's ``at`` is known."""

    OBSERVED = "observed"  # the recording process saw it happen, at that time
    SIBLING = "sibling"  # another replica of the release observed the same change then
    CONFIGMAP_CHANGE = "configmap_change"  # the ConfigMap's last write (managedFields): at or after it
    LAST_SEEN = "last_seen"  # the last evidence of the old state: the change came at or after it
    CONTAINER_STATUS = "container_status"  # the kubelet's finishedAt of the terminated container


@dataclass(frozen=True)
class Incident:
    incident: str
    expires_at: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"incident": self.incident, "expiresAt": self.expires_at}


@dataclass(frozen=True)
class FaultEntry:
    """Where one fault's current value (on or off) came from, and since when."""

    source: Source
    since: datetime
    incidents: tuple[Incident, ...] = ()


@dataclass(frozen=True)
class Rejection:
    at: datetime
    source: Source
    errors: tuple[str, ...]
    resource_version: str | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.errors)


@dataclass(frozen=True)
class Transition:
    """One row of the fault history: a transition, or (``kind`` crash) a crash of the process
    while the fault was in force. The fields after ``incidents`` are set where they apply;
    ``replica`` and ``pod`` default to the recording process's own."""

    at: datetime
    fault: str
    change: Change
    params: Mapping[str, Number] | None
    previous: Mapping[str, Number] | None
    source: Source
    incidents: tuple[Incident, ...]
    kind: Kind = Kind.TRANSITION
    at_basis: AtBasis = AtBasis.OBSERVED
    reason: str | None = None
    exit_code: int | None = None
    container_id: str | None = None
    replica: str | None = None
    pod: str | None = None
    key: str | None = None  # written once: a second row with the same key is dropped


@dataclass(frozen=True)
class FaultState:
    faults: FaultSet
    entries: Mapping[str, FaultEntry]
    rejected: Rejection | None = None
    revision: int = 0
    resource_version: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def active(self, name: str) -> bool:
        return name in self.faults


def parse_incidents(raw: str | None) -> tuple[Mapping[str, tuple[Incident, ...]], str | None]:
    """The operator's SOURCES_ANNOTATION ({fault: [{"incident", "expiresAt"}]}); a malformed
    annotation yields nothing and a warning (it never blocks the faults themselves)."""
    if not raw:
        return {}, None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        out: dict[str, tuple[Incident, ...]] = {}
        for fault, items in data.items():
            if not isinstance(items, list):
                raise ValueError(f"{fault}: expected a list")
            out[str(fault)] = incidents_of(items)
        return out, None
    except (ValueError, TypeError, KeyError) as exc:
        return {}, f"ignored malformed incidents annotation: {exc}"


def incidents_of(items: list[Any]) -> tuple[Incident, ...]:
    """The incidents of one fault from their JSON (``[{"incident", "expiresAt"}]``); entries
    without a name are skipped."""
    return tuple(
        Incident(str(i["incident"]), None if i.get("expiresAt") is None else str(i["expiresAt"]))
        for i in items
        if isinstance(i, dict) and "incident" in i
    )


def initial_state(env: Mapping[str, str], now: datetime) -> tuple[FaultState, list[Transition]]:
    """The state at start, from the INJECT_* environment. An invalid environment starts with no
    fault and a rejection (it never stops the app)."""
    empty = FaultState(
        faults=FaultSet(),
        entries=MappingProxyType({f.name: FaultEntry(Source.ENVIRONMENT, now) for f in FAULTS}),
    )
    try:
        faults = FaultSet.from_env(env)
    except FaultConfigError as exc:
        return replace(empty, rejected=Rejection(now, Source.ENVIRONMENT, tuple(exc.errors))), []
    return apply_change(empty, faults, Source.ENVIRONMENT, {}, now)


def apply_change(
    state: FaultState,
    faults: FaultSet,
    source: Source,
    incidents: Mapping[str, tuple[Incident, ...]],
    now: datetime,
    resource_version: str | None = None,
) -> tuple[FaultState, list[Transition]]:
    """The next state when ``faults`` (already valid) come from ``source``, and the transitions.

    A fault whose value and incidents are unchanged keeps its source and ``since``."""
    entries = dict(state.entries)
    transitions: list[Transition] = []
    for fault in FAULTS:
        old = state.faults.get(fault.name)
        new = faults.get(fault.name)
        new_incidents = incidents.get(fault.name, ()) if new is not None else ()
        old_entry = entries[fault.name]
        change: Change | None = None
        if old is None and new is not None:
            change = Change.ON
        elif old is not None and new is None:
            change = Change.OFF
        elif old is not None and new is not None and dict(old) != dict(new):
            change = Change.CHANGED
        if change is not None:
            entries[fault.name] = FaultEntry(source, now, new_incidents)
            transitions.append(
                Transition(
                    now,
                    fault.name,
                    change,
                    None if new is None else MappingProxyType(dict(new)),
                    None if old is None else MappingProxyType(dict(old)),
                    source,
                    # An "off" names the incidents whose end it is; "on" and "changed" the new ones.
                    old_entry.incidents if change is Change.OFF else new_incidents,
                )
            )
        elif new_incidents != old_entry.incidents:
            entries[fault.name] = replace(old_entry, incidents=new_incidents)
    next_state = FaultState(
        faults=faults,
        entries=MappingProxyType(entries),
        rejected=state.rejected,
        revision=state.revision + 1,
        resource_version=resource_version or state.resource_version,
    )
    return next_state, transitions


def reject(
    state: FaultState, errors: list[str], source: Source, now: datetime, resource_version: str | None = None
) -> FaultState:
    """The same faults, with the rejected change recorded."""
    return replace(
        state,
        rejected=Rejection(now, source, tuple(errors), resource_version),
        revision=state.revision + 1,
        resource_version=resource_version or state.resource_version,
    )


def describe(state: FaultState) -> dict[str, Any]:
    """The JSON shape of GET /api/config's ``faults`` and ``lastRejected``."""
    faults: dict[str, Any] = {}
    for fault in FAULTS:
        params = state.faults.get(fault.name)
        entry = state.entries[fault.name]
        faults[fault.name] = {
            "active": params is not None,
            "params": dict(params) if params is not None else {p.key: p.default for p in fault.params},
            "keys": ({"enabled": fault.switch} if fault.switch else {})
            | {p.key: p.env for p in fault.params},
            "source": entry.source.value,
            "since": entry.since.isoformat(),
            "incidents": [i.to_dict() for i in entry.incidents],
        }
    rejected = state.rejected
    return {
        "faults": faults,
        "revision": state.revision,
        "resource_version": state.resource_version,
        "last_rejected": None
        if rejected is None
        else {
            "at": rejected.at.isoformat(),
            "source": rejected.source.value,
            "reason": rejected.reason,
            "errors": list(rejected.errors),
            "resource_version": rejected.resource_version,
        },
    }
