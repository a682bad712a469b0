from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from payflow.app.faults.state import (
    Change,
    Incident,
    Source,
    apply_change,
    describe,
    initial_state,
    parse_incidents,
    reject,
)
from payflow.faults import FAULTS, FaultSet

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)


def test_initial_state_from_the_environment() -> None:
    state, transitions = initial_state({"INJECT_LATENCY_MS": "200", "PATH": "/bin"}, T0)
    assert state.faults == FaultSet.from_env({"INJECT_LATENCY_MS": "200"})
    assert [(t.fault, t.change, t.source) for t in transitions] == [
        ("latency", Change.ON, Source.ENVIRONMENT)
    ]
    assert state.rejected is None
    assert set(state.entries) == {f.name for f in FAULTS}


def test_an_invalid_environment_starts_clean_with_a_rejection() -> None:
    state, transitions = initial_state({"INJECT_ERROR_RATE": "2"}, T0)
    assert not state.faults
    assert transitions == []
    assert state.rejected is not None
    assert "INJECT_ERROR_RATE" in state.rejected.reason


def test_on_changed_off_and_unchanged() -> None:
    state, _ = initial_state({}, T0)
    incidents = {"latency": (Incident("slow", None),)}
    on, t_on = apply_change(
        state, FaultSet.from_spec({"latency": {"delayMs": 100}}), Source.CONFIGMAP, incidents, T1
    )
    assert [(t.change, dict(t.params or {})) for t in t_on] == [(Change.ON, {"delayMs": 100, "jitterMs": 0})]
    assert on.entries["latency"].source is Source.CONFIGMAP
    assert on.entries["latency"].since == T1
    assert on.entries["latency"].incidents == incidents["latency"]
    assert on.entries["oom"].since == T0  # untouched faults keep their origin

    same, t_same = apply_change(on, on.faults, Source.CONFIGMAP, incidents, T1 + timedelta(seconds=5))
    assert t_same == []
    assert same.entries["latency"].since == T1

    changed, t_changed = apply_change(
        same, FaultSet.from_spec({"latency": {"delayMs": 300}}), Source.CONFIGMAP, incidents, T1
    )
    assert [(t.change, t.previous and t.previous["delayMs"]) for t in t_changed] == [(Change.CHANGED, 100)]

    off, t_off = apply_change(changed, FaultSet(), Source.CONFIGMAP, {}, T1)
    assert [t.change for t in t_off] == [Change.OFF]
    # The "off" names the incident whose end it is (found on the node: it named none, so the
    # ground truth of a fault ended live had no cause); the fault then belongs to nobody.
    assert [i.incident for i in t_off[0].incidents] == ["slow"]
    assert off.entries["latency"].incidents == ()
    assert off.revision == changed.revision + 1


def test_incidents_can_change_without_a_transition() -> None:
    state, _ = initial_state({"INJECT_OOM": "true"}, T0)
    more = {"oom": (Incident("a", None), Incident("b", "2030-01-01T00:00:00Z"))}
    next_state, transitions = apply_change(state, state.faults, Source.CONFIGMAP, more, T1)
    assert transitions == []
    assert next_state.entries["oom"].incidents == more["oom"]
    assert next_state.entries["oom"].since == T0


def test_reject_keeps_the_faults() -> None:
    state, _ = initial_state({"INJECT_OOM": "true"}, T0)
    rejected = reject(state, ["INJECT_LATENCY_MS: expected an integer, got 'x'"], Source.CONFIGMAP, T1, "42")
    assert rejected.faults == state.faults
    view = describe(rejected)
    assert view["last_rejected"]["reason"].startswith("INJECT_LATENCY_MS")
    assert view["last_rejected"]["resource_version"] == "42"
    assert view["faults"]["oom"]["active"] is True
    assert view["faults"]["latency"]["params"] == {"delayMs": 0, "jitterMs": 0}
    assert view["faults"]["oom"]["keys"]["enabled"] == "INJECT_OOM"
    assert view["faults"]["latency"]["keys"] == {
        "delayMs": "INJECT_LATENCY_MS",
        "jitterMs": "INJECT_LATENCY_JITTER_MS",
    }


def test_parse_incidents() -> None:
    raw = json.dumps({"latency": [{"incident": "slow", "expiresAt": None}]})
    parsed, warning = parse_incidents(raw)
    assert parsed == {"latency": (Incident("slow", None),)}
    assert warning is None
    assert parse_incidents(None) == ({}, None)
    for bad in ("not json", "[1]", '{"latency": 3}'):
        parsed, warning = parse_incidents(bad)
        assert parsed == {}
        assert warning is not None
