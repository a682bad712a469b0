"""The fault vocabulary: the one source of every fault's name, ``INJECT_*`` keys, parameter
ranges, defaults and merge rule.

The app reads it to parse its environment and its ConfigMap, the operator to turn incidents
into ConfigMap keys, and the CRD schema and the Helm values schema are checked against it by
tests. Everything here is pure: no I/O, no clock.

Three spellings of one fault set:

* **spec**: how an incident names faults, ``{"latency": {"delayMs": 200}, "oom": {}}``. A
  fault that is present is on; a parameter left out takes its default.
* **env**: the ``INJECT_*`` keys of the seed, ``{"INJECT_LATENCY_MS": "200", "INJECT_OOM": "true"}``,
  as they sit in the environment and in the faults ConfigMap.
* :class:`FaultSet`: the parsed, validated, immutable value the app swaps in atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

ENV_PREFIX = "INJECT_"

Number = int | float


class Merge(StrEnum):
    """How the values of one parameter from several incidents combine into one."""

    MAX = "max"  # the largest value wins (latency, cores, hold time)
    UNION = "union"  # independent chances: 1 - prod(1 - p) (error ratio, panic probability)


@dataclass(frozen=True)
class Param:
    """One parameter of a fault."""

    key: str  # its name in an incident's spec (camelCase)
    env: str  # its INJECT_* key
    type: type[int] | type[float]
    minimum: Number
    maximum: Number
    default: Number
    unit: str
    description: str
    merge: Merge = Merge.MAX

    def parse(self, raw: Any) -> Number:
        """``raw`` (a string from the environment, or a JSON number) as this parameter's type,
        or ValueError with a message that names the key and the allowed range."""
        value: Number
        if isinstance(raw, bool):
            raise ValueError(f"{self.env}: expected a number, got {raw!r}")
        try:
            if self.type is int:
                if isinstance(raw, float):
                    if not raw.is_integer():
                        raise ValueError
                    value = int(raw)
                else:
                    value = int(str(raw).strip(), 10)
            else:
                value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
        except ValueError:
            kind = "an integer" if self.type is int else "a number"
            raise ValueError(f"{self.env}: expected {kind}, got {raw!r}") from None
        if not math.isfinite(value) or not self.minimum <= value <= self.maximum:
            raise ValueError(
                f"{self.env}: {value} is outside [{self.minimum}, {self.maximum}] {self.unit}".rstrip()
            )
        return value

    def format(self, value: Number) -> str:
        return str(int(value)) if self.type is int else repr(float(value))


@dataclass(frozen=True)
class Fault:
    """One fault: a switch (the seed's boolean key) or a primary parameter whose zero means off."""

    name: str  # its name in an incident's spec
    switch: str | None  # the seed's boolean INJECT_* key; None when params[0] > 0 is the switch
    params: tuple[Param, ...]
    summary: str
    symptom: str

    @property
    def primary(self) -> Param | None:
        """The parameter that turns the fault on when above zero (latency, error rate)."""
        return None if self.switch else self.params[0]

    @property
    def seed_key(self) -> str:
        """The seed's INJECT_* variable for this fault."""
        return self.switch or self.params[0].env

    @property
    def env_keys(self) -> tuple[str, ...]:
        return ((self.switch,) if self.switch else ()) + tuple(p.env for p in self.params)

    def param(self, key: str) -> Param:
        for p in self.params:
            if p.key == key:
                return p
        raise KeyError(key)


FAULTS: tuple[Fault, ...] = (
    Fault(
        name="oom",
        switch="INJECT_OOM",
        params=(
            Param(
                "growthKiBPerRequest",
                "INJECT_OOM_GROWTH_KIB_PER_REQUEST",
                int,
                1,
                65536,
                256,
                "KiB",
                "Memory the response cache keeps, and never evicts, for each API request.",
            ),
            Param(
                "floorKiBPerSecond",
                "INJECT_OOM_FLOOR_KIB_PER_SECOND",
                int,
                0,
                1048576,
                1024,
                "KiB/s",
                "Memory the cache keeps each second even without traffic (0: only traffic grows it).",
            ),
        ),
        summary="The caching bug: the response cache stops evicting and memory grows until the "
        "container's limit kills the process (OOMKilled, restarts).",
        symptom="container memory climbs, then OOMKilled and a restart; outside a container the "
        "process stops at a safe ceiling and exits with 137",
    ),
    Fault(
        name="latency",
        switch=None,
        params=(
            Param(
                "delayMs",
                "INJECT_LATENCY_MS",
                int,
                0,
                60000,
                0,
                "ms",
                "Delay added to every API request (the probes are spared).",
            ),
            Param(
                "jitterMs",
                "INJECT_LATENCY_JITTER_MS",
                int,
                0,
                60000,
                0,
                "ms",
                "Up to this much more delay, uniformly at random, on top of delayMs.",
            ),
        ),
        summary="Added delay on the API, not on the health probes.",
        symptom="p50/p95 request duration rises by the delay",
    ),
    Fault(
        name="errorRate",
        switch=None,
        params=(
            Param(
                "ratio",
                "INJECT_ERROR_RATE",
                float,
                0.0,
                1.0,
                0.0,
                "",
                "Share of API requests that fail with a 500, before any write.",
                Merge.UNION,
            ),
        ),
        summary="That share of API requests fails with a 500 and an ERROR log line, before any write.",
        symptom="5xx ratio rises to the ratio; ERROR lines in the log",
    ),
    Fault(
        name="cpuBurn",
        switch="INJECT_CPU_BURN",
        params=(
            Param(
                "cores",
                "INJECT_CPU_BURN_CORES",
                float,
                0.1,
                4.0,
                1.0,
                "cores",
                "CPU the busy work uses, in cores (bounded; a container's CPU limit throttles it).",
            ),
        ),
        summary="Busy work that shows as container CPU and slower requests, bounded in cores.",
        symptom="process CPU rises by about `cores` core-seconds per second; requests slow down",
    ),
    Fault(
        name="panic",
        switch="INJECT_PANIC",
        params=(
            Param(
                "probability",
                "INJECT_PANIC_PROBABILITY",
                float,
                0.0,
                1.0,
                0.05,
                "",
                "Chance that an API request crashes the process.",
                Merge.UNION,
            ),
            Param(
                "meanIntervalSeconds",
                "INJECT_PANIC_MEAN_INTERVAL_S",
                int,
                0,
                86400,
                30,
                "s",
                "Mean time between crashes without traffic (exponential; 0: only requests crash it).",
            ),
        ),
        summary="The process crashes at random, with a stack trace in the log: CrashLoopBackOff.",
        symptom="restarts, exit code 70 with a traceback in the log, CrashLoopBackOff",
    ),
    Fault(
        name="dbTimeout",
        switch="INJECT_DB_TIMEOUT",
        params=(
            Param(
                "holdSeconds",
                "INJECT_DB_TIMEOUT_HOLD_S",
                int,
                1,
                3600,
                60,
                "s",
                "How long each held connection stays in a transaction before it is released and taken again.",
            ),
            Param(
                "connections",
                "INJECT_DB_TIMEOUT_CONNECTIONS",
                int,
                0,
                1000,
                0,
                "",
                "How many pool connections are held (0: every connection of the pool).",
            ),
        ),
        summary="Connections are held by long transactions: requests wait for the pool and time out.",
        symptom="503/504 on the API, /ready fails with the pool exhausted, pool waiting metric rises",
    ),
)

BY_NAME: Mapping[str, Fault] = MappingProxyType({f.name: f for f in FAULTS})
ALL_ENV_KEYS: frozenset[str] = frozenset(k for f in FAULTS for k in f.env_keys)
_KEY_OWNER: Mapping[str, Fault] = MappingProxyType({k: f for f in FAULTS for k in f.env_keys})

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


class FaultConfigError(ValueError):
    """A fault configuration that cannot be applied; ``errors`` names every bad key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def parse_bool(key: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{key}: expected true or false, got {raw!r}")


@dataclass(frozen=True)
class FaultSet:
    """The faults in force: immutable, validated, with every parameter filled in.

    ``active`` maps each fault that is on to its parameters (``{"latency": {"delayMs": 200,
    "jitterMs": 0}}``); a fault that is off is absent."""

    active: Mapping[str, Mapping[str, Number]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frozen = {
            name: MappingProxyType(dict(params))
            for name, params in sorted(self.active.items(), key=_fault_order)
        }
        object.__setattr__(self, "active", MappingProxyType(frozen))

    # --- reading ---------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return bool(self.active)

    def __contains__(self, name: object) -> bool:
        return name in self.active

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FaultSet) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.digest())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.active)

    def get(self, name: str) -> Mapping[str, Number] | None:
        return self.active.get(name)

    def value(self, name: str, key: str) -> Number:
        """A parameter of an active fault (KeyError when the fault is off)."""
        return self.active[name][key]

    def to_dict(self) -> dict[str, dict[str, Number]]:
        return {n: dict(p) for n, p in self.active.items()}

    def to_spec(self) -> dict[str, dict[str, Number]]:
        """The incident spelling (every parameter explicit)."""
        return self.to_dict()

    def to_env(self) -> dict[str, str]:
        """The INJECT_* spelling: every fault's switch (or primary key) explicit, off or on,
        and the other parameters of the faults that are on."""
        env: dict[str, str] = {}
        for fault in FAULTS:
            params = self.active.get(fault.name)
            if fault.switch:
                env[fault.switch] = "true" if params is not None else "false"
            elif params is None:
                env[fault.params[0].env] = fault.params[0].format(0)
            if params is not None:
                for p in fault.params:
                    env[p.env] = p.format(params[p.key])
        return env

    def digest(self) -> str:
        """A short, stable fingerprint (for stamping a pod template)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # --- building ----------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaultSet:
        """Parse the INJECT_* keys of ``env`` (other keys are ignored).

        An unknown INJECT_* key, a bad value or a parameter of a fault that is off but out of
        range is an error; all errors are reported at once."""
        errors: list[str] = []
        known = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        for k in sorted(set(known) - ALL_ENV_KEYS):
            errors.append(f"{k}: unknown fault key (known: {', '.join(sorted(f.seed_key for f in FAULTS))})")
        active: dict[str, dict[str, Number]] = {}
        for fault in FAULTS:
            values: dict[str, Number] = {}
            for p in fault.params:
                try:
                    values[p.key] = p.parse(known[p.env]) if p.env in known else p.default
                except ValueError as exc:
                    errors.append(str(exc))
            on = False
            if fault.switch:
                try:
                    on = parse_bool(fault.switch, known.get(fault.switch, "false"))
                except ValueError as exc:
                    errors.append(str(exc))
            else:
                primary = fault.params[0]
                on = primary.key in values and values[primary.key] > 0
            if on and len(values) == len(fault.params):
                active[fault.name] = values
        if errors:
            raise FaultConfigError(errors)
        return cls(active)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> FaultSet:
        """Parse an incident's ``spec.faults``. The API server's schema already refused most
        bad specs; this is the same check for callers that did not pass through it."""
        errors: list[str] = []
        active: dict[str, dict[str, Number]] = {}
        for name, given in (spec or {}).items():
            fault = BY_NAME.get(name)
            if fault is None:
                errors.append(f"faults.{name}: unknown fault (known: {', '.join(BY_NAME)})")
                continue
            if given is None:
                given = {}
            if not isinstance(given, Mapping):
                errors.append(f"faults.{name}: expected an object, got {given!r}")
                continue
            for extra in sorted(set(given) - {p.key for p in fault.params}):
                errors.append(f"faults.{name}.{extra}: unknown parameter")
            values: dict[str, Number] = {}
            for p in fault.params:
                try:
                    values[p.key] = p.parse(given[p.key]) if p.key in given else p.default
                except ValueError as exc:
                    errors.append(f"faults.{name}.{p.key}: {str(exc).split(': ', 1)[1]}")
            if fault.primary is not None and values.get(fault.primary.key, 0) <= 0:
                errors.append(f"faults.{name}.{fault.primary.key}: must be above 0 for the fault to act")
            active[name] = values
        if errors:
            raise FaultConfigError(errors)
        return cls(active)


def _fault_order(item: tuple[str, Any]) -> int:
    names = [f.name for f in FAULTS]
    return names.index(item[0]) if item[0] in names else len(names)


# --- merging the incidents of one target -----------------------------------------------------


@dataclass(frozen=True)
class Merged:
    """The fault set in force for one target, and which incident contributed what."""

    faults: FaultSet
    sources: Mapping[str, tuple[str, ...]]  # fault name -> the incidents that turn it on


def merge(contributions: Iterable[tuple[str, FaultSet]]) -> Merged:
    """Combine the fault sets of every active incident of one target.

    Rules (documented in the README's incident reference):

    * a fault is on when any incident turns it on;
    * a parameter merged by ``max`` takes the largest value (latency, cores, hold time, ...);
    * a parameter merged by ``union`` combines independent chances: 1 - prod(1 - p)
      (two incidents of error ratio 0.3 give 0.51).
    """
    per_fault: dict[str, list[tuple[str, Mapping[str, Number]]]] = {}
    for source, faults in sorted(contributions, key=lambda c: c[0]):
        for name, params in faults.active.items():
            per_fault.setdefault(name, []).append((source, params))
    active: dict[str, dict[str, Number]] = {}
    for name, entries in per_fault.items():
        fault = BY_NAME[name]
        values: dict[str, Number] = {}
        for p in fault.params:
            xs = [params[p.key] for _, params in entries]
            if p.merge is Merge.UNION:
                survive = 1.0
                for x in xs:
                    survive *= 1.0 - float(x)
                values[p.key] = min(float(p.maximum), round(1.0 - survive, 6))
            else:
                values[p.key] = max(xs)
        active[name] = values
    sources = {name: tuple(src for src, _ in entries) for name, entries in per_fault.items()}
    return Merged(FaultSet(active), MappingProxyType(sources))


# --- schemas derived from the vocabulary ---------------------------------------------------------


def _param_schema(p: Param, *, for_incident: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "integer" if p.type is int else "number",
        "minimum": p.minimum,
        "maximum": p.maximum,
        "description": f"{p.description} {p.unit and f'Unit: {p.unit}. '}Default {p.default}. "
        f"Sets {p.env}.".replace("  ", " "),
    }
    if not for_incident:
        schema["default"] = p.default
    return schema


def crd_faults_schema() -> dict[str, Any]:
    """The OpenAPI v3 schema of ``spec.faults`` in the PayFlowIncident CRD."""
    properties: dict[str, Any] = {}
    for fault in FAULTS:
        params = {p.key: _param_schema(p, for_incident=True) for p in fault.params}
        for p in fault.params:
            if p.type is float and not float(p.minimum).is_integer():
                # The API server checks a whole-number value against the minimum truncated to an
                # integer (`cores: 0` passes `minimum: 0.1`); CEL compares the numbers as they are.
                params[p.key]["x-kubernetes-validations"] = [
                    {
                        "rule": f"self >= {p.minimum!r}",
                        "message": f"spec.faults.{fault.name}.{p.key} must be at least {p.minimum} {p.unit}",
                    }
                ]
        schema: dict[str, Any] = {
            "type": "object",
            "description": f"{fault.summary} Symptom: {fault.symptom}.",
            "properties": params,
        }
        if fault.primary is not None:
            params[fault.primary.key]["exclusiveMinimum"] = True  # an incident must make it act
            params[fault.primary.key]["minimum"] = 0
            schema["required"] = [fault.primary.key]
        properties[fault.name] = schema
    return {
        "type": "object",
        "description": "The faults this incident injects: one or more, each with its parameters.",
        "minProperties": 1,
        "properties": properties,
    }


def helm_faults_schema() -> dict[str, Any]:
    """The JSON schema of the chart's ``faults:`` values (the baseline in the ConfigMap)."""
    properties: dict[str, Any] = {}
    for fault in FAULTS:
        params: dict[str, Any] = {}
        if fault.switch:
            params["enabled"] = {
                "type": "boolean",
                "default": False,
                "description": f"Sets {fault.switch}. {fault.summary}",
            }
        for p in fault.params:
            params[p.key] = _param_schema(p, for_incident=False)
        properties[fault.name] = {"type": "object", "additionalProperties": False, "properties": params}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def helm_values_to_env(values: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The INJECT_* keys the chart renders for a ``faults:`` values section (used by tests
    to check the template against the vocabulary)."""
    active: dict[str, dict[str, Number]] = {}
    for fault in FAULTS:
        given = dict(values.get(fault.name) or {})
        params = {p.key: p.parse(given[p.key]) if p.key in given else p.default for p in fault.params}
        on = bool(given.get("enabled")) if fault.switch else params[fault.params[0].key] > 0
        if on:
            active[fault.name] = params
    return FaultSet(active).to_env()
