"""Hypothesis-generated incidents against the real API server and the operator as a real
subprocess. Specs are built from the fault vocabulary (``payflow.faults``) and the CRD's other
fields, valid and invalid, as creates and as updates, some deleted again. For each one:

* the API server either refuses it, with a message that names a ``spec`` field, or accepts it;
  what it does must agree with an independent reading of the vocabulary's rules (the oracle
  below), so a hole in the CRD schema (an invalid spec accepted) or an over-strict one (a valid
  spec refused) is a failure;
* an accepted incident gets a phase from the operator (Active or Expired for the release,
  Pending for an unknown target) for its latest generation, and a deleted one goes (nothing
  holds it);
* the operator never dies: it answers ``/healthz`` after every example.

Afterwards the faults ConfigMap equals the merge of the baseline and the Active incidents, and
deleting every incident brings back the baseline.

Budget: ``PAYFLOW_FUZZ_INCIDENT_EXAMPLES`` (default 25; `make fuzz` uses 200)."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from payflow import faults as vocab
from payflow import naming
from payflow.operator.durations import parse_duration
from tests.fuzz.conftest import DEFAULT_INCIDENT_EXAMPLES, DEFAULT_SCHEMA_EXAMPLES, budget, write_report
from tests.integration.operator.conftest import RELEASE, Cluster, Operator, expected
from tests.support import wait_for

SPEC_FIELDS = {"target", "faults", "duration", "delivery", "description"}
DELIVERIES = ("live", "rollout")
MAX_LATENCY_MS = 60000  # delayMs + jitterMs (a CEL rule of the CRD)
TARGET_MAX = 53
DESCRIPTION_MAX = 2048
DURATION_MAX_CHARS = 32
SETTLED = {"Active", "Expired", "Pending", "Failed", "Refused"}


# --- the oracle: is a spec valid? (from the vocabulary, not from the CRD) ---------------------


def _number_error(p: vocab.Param, value: Any, path: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{path}: not a number"
    if p.type is int and not isinstance(value, int):
        return f"{path}: not an integer"
    if not math.isfinite(value) or not p.minimum <= value <= p.maximum:
        return f"{path}: out of range"
    return None


def _fault_error(fault: vocab.Fault, given: Any, path: str) -> str | None:
    if not isinstance(given, Mapping):
        return f"{path}: not an object"
    unknown = set(given) - {p.key for p in fault.params}
    if unknown:
        return f"{path}.{sorted(unknown)[0]}: unknown parameter"
    for p in fault.params:
        if p.key in given and (error := _number_error(p, given[p.key], f"{path}.{p.key}")):
            return error
    primary = fault.primary
    if primary is not None and not (primary.key in given and given[primary.key] > 0):
        return f"{path}.{primary.key}: must be above 0"
    if fault.name == "latency" and given.get("delayMs", 0) + given.get("jitterMs", 0) > MAX_LATENCY_MS:
        return f"{path}: delayMs + jitterMs above {MAX_LATENCY_MS}"
    if fault.name == "panic":
        probability = given.get("probability", fault.param("probability").default)
        interval = given.get("meanIntervalSeconds", fault.param("meanIntervalSeconds").default)
        if probability == 0 and interval == 0:
            return f"{path}: never happens"
    return None


def _target_error(target: Any) -> str | None:
    ok = (
        isinstance(target, str)
        and 0 < len(target) <= TARGET_MAX
        and target[0].isalnum()
        and target[-1].isalnum()
        and all(c.islower() or c.isdigit() or c == "-" for c in target)
        and target.isascii()
    )
    return None if ok else "spec.target: not a release name"


def without_nulls(value: Any) -> Any:
    """What the API server stores: it prunes null values of fields that are not nullable, so
    ``{"holdSeconds": null}`` is the parameter left out (found by this fuzzer, first taken for a
    hole in the CRD schema)."""
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


def spec_error(spec: Mapping[str, Any]) -> str | None:
    """Why the API server must refuse ``spec``, or None when it must accept it."""
    spec = without_nulls(spec)
    if unknown := set(spec) - SPEC_FIELDS:
        return f"spec.{sorted(unknown)[0]}: unknown field"
    if "target" not in spec or (error := _target_error(spec["target"])):
        return "spec.target: missing or not a release name"
    faults = spec.get("faults")
    if not isinstance(faults, Mapping) or not faults:
        return "spec.faults: at least one fault is required"
    for name, params in faults.items():
        fault = vocab.BY_NAME.get(name)
        if fault is None:
            return f"spec.faults.{name}: unknown fault"
        if error := _fault_error(fault, params, f"spec.faults.{name}"):
            return error
    if "duration" in spec:
        duration = spec["duration"]
        if not isinstance(duration, str) or len(duration) > DURATION_MAX_CHARS:
            return "spec.duration: not a duration"
        try:
            parse_duration(duration)
        except ValueError:
            return "spec.duration: not a duration in bounds"
    if "delivery" in spec and spec["delivery"] not in DELIVERIES:
        return "spec.delivery: unknown"
    if "description" in spec and (
        not isinstance(spec["description"], str) or len(spec["description"]) > DESCRIPTION_MAX
    ):
        return "spec.description: too long or not a string"
    return None


# --- the generators: from the vocabulary, valid most of the time -----------------------------

JUNK: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=8), st.booleans(), st.none(), st.lists(st.integers(), max_size=2), st.just({})
)


def mostly(
    good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], one_in: int = 12
) -> st.SearchStrategy[Any]:
    """``good``, and ``bad`` about once in ``one_in`` draws: most specs are valid, every part
    can still go wrong."""
    # hypothesis favours the ends of a range: the rare branch sits in its middle.
    return st.integers(0, one_in - 1).flatmap(lambda roll: bad if roll == one_in // 2 else good)


def _in_range(p: vocab.Param, primary: bool) -> st.SearchStrategy[Any]:
    """A value the incident schema takes (a primary parameter must be above its minimum)."""
    if p.type is int:
        return st.integers(int(p.minimum) + primary, int(p.maximum))
    return st.floats(float(p.minimum), float(p.maximum), exclude_min=primary).map(
        lambda x: round(x, 4) or 1e-4
    )


def _param_value(p: vocab.Param, primary: bool) -> st.SearchStrategy[Any]:
    wrong: list[st.SearchStrategy[Any]] = [
        st.integers(int(p.maximum) + 1, int(p.maximum) * 4 + 10),  # above the range
        st.integers(-1000, math.ceil(p.minimum) - 1) if p.minimum > -1000 else st.nothing(),
        JUNK,
    ]
    if primary:
        wrong.append(st.just(p.type(p.minimum)))  # a primary at its minimum does nothing
    if p.type is int:
        wrong.append(st.floats(p.minimum, p.maximum).filter(lambda x: not float(x).is_integer()))
    return mostly(_in_range(p, primary), st.one_of(*wrong), one_in=20)


def _fault_params(fault: vocab.Fault) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sets(st.sampled_from([p.key for p in fault.params]), max_size=len(fault.params))
    primary = fault.primary

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        chosen = draw(keys)
        if primary is not None and draw(st.integers(0, 9)) != 5:
            chosen = chosen | {primary.key}  # the required primary is usually given
        params = {
            k: draw(_param_value(fault.param(k), k == getattr(primary, "key", None))) for k in sorted(chosen)
        }
        if draw(st.integers(0, 19)) == 10:
            params[draw(st.sampled_from(["delay", "ratio2", "enabled", "Cores"]))] = 1
        return params

    return build()


@st.composite
def fault_specs(draw: st.DrawFn) -> Any:
    names = draw(st.sets(st.sampled_from([f.name for f in vocab.FAULTS]), min_size=1, max_size=3))
    faults: dict[str, Any] = {n: draw(_fault_params(vocab.BY_NAME[n])) for n in sorted(names)}
    roll = draw(st.integers(0, 39))
    if roll == 20:
        faults[draw(st.sampled_from(["diskFull", "OOM", "latencyMs", "error_rate"]))] = {}
    elif roll == 21:
        return draw(st.one_of(st.just({}), JUNK))
    elif roll == 22:
        faults[draw(st.sampled_from(sorted(faults)))] = draw(JUNK)
    return faults


DURATIONS = mostly(
    st.one_of(
        st.builds(lambda n: f"{n}s", st.integers(1, 3)),  # expires during the run
        st.builds(lambda n, u: f"{n}{u}", st.integers(10, 120), st.sampled_from(["m", "h"])),
        st.sampled_from(["1h30m", "1.5h", "90s", "2h0m30s", "168h", "10080m"]),
    ),
    st.one_of(
        st.sampled_from(["0s", "500ms", "169h", "15", "1d", "-5m", "1h 30m", "15 minutes", "", "1e3s"]),
        st.text(max_size=40),
    ),
    one_in=8,
)
TARGETS = mostly(
    st.one_of(st.just(RELEASE), st.just(RELEASE), st.just(RELEASE), st.just("other-release")),
    st.one_of(st.sampled_from(["Pay_Flow", "-payflow", "payflow-", "a" * 54, "", "payflów"]), JUNK),
    one_in=10,
)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"target": draw(TARGETS), "faults": draw(fault_specs())}
    if draw(st.booleans()):
        spec["duration"] = draw(DURATIONS)
    if draw(st.booleans()):
        spec["delivery"] = draw(mostly(st.sampled_from(DELIVERIES), JUNK, one_in=10))
    if draw(st.integers(0, 3)) == 0:
        spec["description"] = draw(mostly(st.text(max_size=60), st.just("x" * (DESCRIPTION_MAX + 1))))
    roll = draw(st.integers(0, 39))
    if roll == 20:
        spec.pop(draw(st.sampled_from(["target", "faults"])))
    elif roll == 21:
        spec[draw(st.sampled_from(["severity", "Faults", "targets"]))] = "x"
    return spec


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Tally:
    examples: int = 0
    refused: int = 0
    accepted: int = 0
    updates: int = 0
    deletes: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    refused_fields: Counter[str] = field(default_factory=Counter)  # the field the oracle blames
    mismatches: list[str] = field(default_factory=list)


def _manifest(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{naming.GROUP}/{naming.VERSION}",
        "kind": naming.KIND,
        "metadata": {"name": name},
        "spec": dict(spec),
    }


def _refusal(exc: ApiException) -> str:
    assert exc.status in (400, 422), f"an unexpected answer from the API server: {exc.status} {exc.body}"
    message = str(exc.body or "")
    assert "spec" in message, f"the refusal does not name a spec field: {message}"
    return message


def _settled(cluster: Cluster, name: str, wanted: set[str]) -> str:
    """Wait until the operator reported one of ``wanted`` for the incident's latest generation."""

    def probe() -> str | None:
        body = cluster.incident(name) or {}
        status = body.get("status") or {}
        current = status.get("observedGeneration") == body.get("metadata", {}).get("generation")
        phase = status.get("phase")
        return phase if current and phase in wanted else None

    return wait_for(probe, 20, f"incident {name} to reach one of {sorted(wanted)}")


def _wanted_phases(spec: Mapping[str, Any]) -> set[str]:
    if spec["target"] != RELEASE:
        return {"Pending"}
    return {"Active", "Expired"}


class Incidents:
    """The incidents of one namespace, through the Kubernetes client (strict field validation,
    as kubectl does)."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.where = (naming.GROUP, naming.VERSION, namespace, naming.PLURAL)

    def create(self, name: str, spec: Mapping[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            *self.where, _manifest(name, spec), field_validation="Strict"
        )

    def replace_spec(self, name: str, spec: Mapping[str, Any]) -> None:
        current = self.custom.get_namespaced_custom_object(*self.where, name)
        body = {**_manifest(name, spec), "metadata": current["metadata"]}
        self.custom.replace_namespaced_custom_object(*self.where, name, body, field_validation="Strict")

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(*self.where, name)

    def exists(self, name: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(*self.where, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def items(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(*self.where)["items"]
        return found

    def leftovers(self) -> str:
        return "; ".join(
            f"{i['metadata']['name']} phase={(i.get('status') or {}).get('phase')} "
            f"finalizers={i['metadata'].get('finalizers')} "
            f"deleting={bool(i['metadata'].get('deletionTimestamp'))}"
            for i in self.items()
        )

    def active_faults(self) -> list[dict[str, Any]]:
        return [
            i["spec"]["faults"]
            for i in self.items()
            if (i.get("status") or {}).get("phase") == "Active"
            and i["spec"]["target"] == RELEASE
            and not i["metadata"].get("deletionTimestamp")
        ]


def _check_merge(cluster: Cluster, incidents: Incidents) -> vocab.FaultSet:
    """The ConfigMap holds the merge of the baseline and the Active incidents (they may expire
    meanwhile, so both sides are read again until they agree)."""

    def agreed() -> vocab.FaultSet | None:
        want = expected(*incidents.active_faults())
        return want if cluster.faults() == want else None

    for item in incidents.items():  # what each Active incident says it applies, it applies
        status = item.get("status") or {}
        if (
            status.get("phase") == "Active"
            and status.get("observedGeneration") == item["metadata"]["generation"]
        ):
            applied = vocab.FaultSet.from_spec(item["spec"]["faults"]).to_dict()
            assert status.get("appliedFaults") == applied, (item["metadata"]["name"], item["spec"], status)

    return wait_for(agreed, 20, "the faults ConfigMap to equal the merge of the Active incidents")


def test_generated_incidents_are_refused_or_handled(
    operator: Operator, release: Cluster, kube_api: object
) -> None:
    examples = budget("PAYFLOW_FUZZ_INCIDENT_EXAMPLES", DEFAULT_INCIDENT_EXAMPLES)
    incidents = Incidents(kube_api, release.namespace)
    tally = Tally()
    live: dict[str, dict[str, Any]] = {}  # accepted and not deleted: name -> spec

    def submit(name: str, spec: dict[str, Any], update: bool) -> None:
        why = spec_error(spec)
        if update and why is None and spec["target"] != live[name]["target"]:
            why = "spec.target: immutable"
        try:
            (incidents.replace_spec if update else incidents.create)(name, spec)
        except ApiException as exc:
            message = _refusal(exc)
            tally.refused += 1
            tally.refused_fields[(why or "none").split(":")[0]] += 1
            if why is None:
                tally.mismatches.append(f"valid spec refused: {spec!r}: {message[:300]}")
            return
        tally.accepted += 1
        if why is not None:
            tally.mismatches.append(f"invalid spec accepted ({why}): {spec!r}")
            return
        live[name] = without_nulls(spec)
        tally.phases[_settled(release, name, _wanted_phases(spec))] += 1

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # the cluster keeps state: no shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        # The same draws whatever the cluster holds (hypothesis replays by draws).
        action = data.draw(st.sampled_from(["create", "create", "create", "update", "delete"]))
        pick = data.draw(st.integers(0, 10**6))
        spec = data.draw(specs())
        tally.examples += 1  # a step taken (hypothesis may abandon a call while drawing)
        names = sorted(live)
        if action == "update" and names:
            tally.updates += 1
            submit(names[pick % len(names)], spec, update=True)
        elif action == "delete" and names:
            tally.deletes += 1
            name = names[pick % len(names)]
            incidents.delete(name)
            del live[name]
            wait_for(lambda: not incidents.exists(name), 20, f"incident {name} to go")
        else:
            submit(f"fz-{tally.examples}", spec, update=False)
        assert operator.healthy(), "the operator stopped answering /healthz"

    if os.environ.get("PAYFLOW_FUZZ_SEED"):
        run = seed(int(os.environ["PAYFLOW_FUZZ_SEED"]))(run)
    run()

    assert operator.process.running, operator.process.log_tail()
    merged = _check_merge(release, incidents)
    assert not tally.mismatches, "\n".join(tally.mismatches)
    for item in incidents.items():
        incidents.delete(item["metadata"]["name"])
    try:
        wait_for(lambda: not incidents.items(), 60, "every incident to go")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; left: {incidents.leftovers()}") from None
    wait_for(lambda: release.faults() == expected(), 10, "the baseline back on the ConfigMap")
    assert operator.healthy()

    report = {
        "examples": tally.examples,
        "refused_by_api_server": tally.refused,
        "accepted": tally.accepted,
        "updates": tally.updates,
        "deletes": tally.deletes,
        "phases": dict(tally.phases),
        "refused_by_field": dict(tally.refused_fields.most_common()),
        "faults_in_force_at_the_end": list(merged.names),
        "mismatches": len(tally.mismatches),
    }
    write_report("incidents", report)
    assert tally.refused > 0, report  # both sides were exercised
    assert tally.accepted > 0, report
    assert not tally.mismatches, "\n".join(tally.mismatches)


def test_the_crd_and_the_vocabulary_agree(kube_api: object, namespace: str, crd: str) -> None:
    """Many more specs, by server-side dry run (no object is stored, no operator needed): the
    API server accepts exactly the specs the vocabulary's rules accept.

    Budget: ``PAYFLOW_FUZZ_SCHEMA_EXAMPLES`` (default 100; `make fuzz` uses 1500)."""
    examples = budget("PAYFLOW_FUZZ_SCHEMA_EXAMPLES", DEFAULT_SCHEMA_EXAMPLES)
    custom = client.CustomObjectsApi(kube_api)
    where = (naming.GROUP, naming.VERSION, namespace, naming.PLURAL)
    counts: Counter[str] = Counter()
    mismatches: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(spec=specs())
    def run(spec: dict[str, Any]) -> None:
        counts["examples"] += 1
        why = spec_error(spec)
        manifest = _manifest(f"dry-{counts['examples']}", spec)
        try:
            custom.create_namespaced_custom_object(*where, manifest, field_validation="Strict", dry_run="All")
        except ApiException as exc:
            message = _refusal(exc)
            counts["refused"] += 1
            if why is None:
                mismatches.append(f"valid spec refused: {spec!r}: {message[:300]}")
            return
        counts["accepted"] += 1
        if why is not None:
            mismatches.append(f"invalid spec accepted ({why}): {spec!r}")

    if os.environ.get("PAYFLOW_FUZZ_SEED"):
        run = seed(int(os.environ["PAYFLOW_FUZZ_SEED"]))(run)
    run()
    write_report("crd_vs_vocabulary", {**counts, "mismatches": len(mismatches)})
    assert counts["accepted"] > 0
    assert counts["refused"] > 0
    assert not mismatches, "\n".join(mismatches)
