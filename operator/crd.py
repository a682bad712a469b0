"""The PayFlowIncident CustomResourceDefinition, generated from the fault vocabulary.

``python -m payflow.operator.crd`` prints it as YAML; ``crds/payflowincident.yaml`` (and the
chart's copy) is that output, and a unit test keeps them equal.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from payflow import faults as vocab
from payflow import naming
from payflow.operator.core import PHASE_DESCRIPTIONS, Delivery, Phase
from payflow.operator.durations import DURATION_PATTERN, MAX_DURATION_TEXT, MIN_DURATION_TEXT

CRD_NAME = f"{naming.PLURAL}.{naming.GROUP}"
TARGET_MAX_LENGTH = 53  # a Helm release name
DESCRIPTION_MAX_LENGTH = 2048


def _s(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, **schema}


def _cross_field_rules() -> list[dict[str, str]]:
    """CEL rules on ``spec`` that no single field's schema can say."""
    latency = vocab.BY_NAME["latency"]
    delay, jitter = latency.param("delayMs"), latency.param("jitterMs")
    panic = vocab.BY_NAME["panic"]
    probability, interval = panic.param("probability"), panic.param("meanIntervalSeconds")
    return [
        {
            "rule": " || ".join(f"has(self.faults.{f.name})" for f in vocab.FAULTS),
            "message": "spec.faults: at least one fault is required",
            "fieldPath": ".faults",
            "reason": "FieldValueRequired",
        },
        {
            "rule": f"!has(self.faults.latency) || self.faults.latency.{delay.key} + "
            f"(has(self.faults.latency.{jitter.key}) ? self.faults.latency.{jitter.key} : 0) "
            f"<= {int(delay.maximum)}",
            "message": f"spec.faults.latency: {delay.key} + {jitter.key} must not exceed "
            f"{int(delay.maximum)} ms (the longest delay a request can get)",
            "fieldPath": ".faults.latency",
        },
        {
            "rule": f"!has(self.faults.panic) || "
            f"(has(self.faults.panic.{probability.key}) ? self.faults.panic.{probability.key} > 0.0 : "
            f"{'true' if probability.default > 0 else 'false'}) || "
            f"(has(self.faults.panic.{interval.key}) ? self.faults.panic.{interval.key} > 0 : "
            f"{'true' if interval.default > 0 else 'false'})",
            "message": f"spec.faults.panic: {probability.key} and {interval.key} are both 0, "
            "so the panic would never happen",
            "fieldPath": ".faults.panic",
        },
    ]


def spec_schema() -> dict[str, Any]:
    return _s(
        "What the incident injects, into which release, for how long and how.",
        type="object",
        required=["target", "faults"],
        properties={
            "target": _s(
                "The PayFlow release (Helm release name) in this namespace whose app gets the "
                f"faults: its ConfigMap <target>-faults and its Deployment labelled "
                f"{naming.INSTANCE_LABEL}=<target>,{naming.COMPONENT_LABEL}={naming.APP_COMPONENT}. "
                "Immutable.",
                type="string",
                minLength=1,
                maxLength=TARGET_MAX_LENGTH,
                pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "self == oldSelf",
                            "message": "spec.target is immutable: delete the incident and create another",
                        }
                    ]
                },
            ),
            "faults": vocab.crd_faults_schema(),
            "duration": _s(
                "How long the faults stay in force once the incident is Active, as a Go-style "
                f"duration (90s, 15m, 1h30m; units ms, s, m, h), between {MIN_DURATION_TEXT} and "
                f"{MAX_DURATION_TEXT}. Absent: until the incident is deleted.",
                type="string",
                maxLength=32,
                pattern=DURATION_PATTERN,
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": f"duration(self) >= duration('{MIN_DURATION_TEXT}') && "
                            f"duration(self) <= duration('{MAX_DURATION_TEXT}')",
                            "message": f"spec.duration must be between {MIN_DURATION_TEXT} and "
                            f"{MAX_DURATION_TEXT}",
                        }
                    ]
                },
            ),
            "delivery": _s(
                "How the faults reach the app. live: the faults ConfigMap changes and the running "
                "pods switch at once, without a restart. rollout: the Deployment's pod template is "
                "stamped too, so a new ReplicaSet rolls out, like a bad deploy; when the incident "
                "ends the stamp is removed, which rolls back to the last known good template.",
                type="string",
                enum=[d.value for d in Delivery],
                default=Delivery.LIVE.value,
            ),
            "description": _s(
                "Free text: the story of the incident (the ground truth an RCA tool should find).",
                type="string",
                maxLength=DESCRIPTION_MAX_LENGTH,
            ),
        },
        **{"x-kubernetes-validations": _cross_field_rules()},
    )


def status_schema() -> dict[str, Any]:
    ts = {"type": "string", "format": "date-time", "nullable": True}
    phases = " ".join(f"{p.value}: {PHASE_DESCRIPTIONS[p]}" for p in Phase)
    return _s(
        "What the operator observed and did; written by the operator only.",
        type="object",
        properties={
            "phase": _s(
                f"The one readable state of the incident. {phases}",
                type="string",
                enum=[p.value for p in Phase],
            ),
            "message": _s("A sentence on the phase: what is in force, or what is awaited.", type="string"),
            "observedGeneration": _s(
                "The metadata.generation the status describes.", type="integer", format="int64"
            ),
            "target": _s("The release the status refers to (a copy of spec.target).", type="string"),
            "faultNames": _s("The faults of the spec, comma-separated (the FAULTS column).", type="string"),
            "activatedAt": _s("When the faults came into force (the duration counts from here).", **ts),
            "expiresAt": _s(
                "When the duration runs out: activatedAt + spec.duration. Null without a duration.", **ts
            ),
            "endedAt": _s("When the faults were cleared because the duration ran out.", **ts),
            "appliedFaults": _s(
                "The faults this incident has in force, with every parameter filled in (defaults "
                "included). Null unless Active.",
                type="object",
                nullable=True,
                additionalProperties={
                    "type": "object",
                    "description": "One fault's parameters.",
                    "additionalProperties": {"type": "number"},
                },
            ),
            "conditions": _s(
                f"Standard conditions. Accepted: the spec is valid and the namespace is opted in "
                f"({naming.OPT_IN_LABEL}={naming.OPT_IN_VALUE}). Injected: the faults are in force; "
                "its reason says why not (TargetNotFound, DeploymentNotFound, NamespaceNotOptedIn, "
                "InvalidSpec, InvalidBaseline, Expired).",
                type="array",
                items=_condition_schema(),
                **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
            ),
        },
    )


def _condition_schema() -> dict[str, Any]:
    return _s(
        "One aspect of the incident's state (metav1.Condition).",
        type="object",
        required=["type", "status", "lastTransitionTime", "reason", "message"],
        properties={
            "type": _s("Accepted or Injected.", type="string"),
            "status": _s("True, False or Unknown.", type="string", enum=["True", "False", "Unknown"]),
            "reason": _s("A CamelCase word for the last transition.", type="string"),
            "message": _s("A sentence for humans.", type="string"),
            "observedGeneration": _s(
                "The metadata.generation the condition describes.", type="integer", format="int64"
            ),
            "lastTransitionTime": _s("When the status last changed.", type="string", format="date-time"),
        },
    )


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "payflow", "app.kubernetes.io/component": "operator"},
        },
        "spec": {
            "group": naming.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": naming.KIND,
                "listKind": f"{naming.KIND}List",
                "plural": naming.PLURAL,
                "singular": naming.SINGULAR,
                "shortNames": list(naming.SHORT_NAMES),
                "categories": [naming.CATEGORY],
            },
            "versions": [
                {
                    "name": naming.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Target",
                            "type": "string",
                            "jsonPath": ".spec.target",
                            "description": "The release that gets the faults.",
                        },
                        {
                            "name": "Faults",
                            "type": "string",
                            "jsonPath": ".status.faultNames",
                            "description": "The faults of the incident.",
                        },
                        {
                            "name": "Delivery",
                            "type": "string",
                            "jsonPath": ".spec.delivery",
                            "description": "live or rollout.",
                        },
                        {
                            "name": "Phase",
                            "type": "string",
                            "jsonPath": ".status.phase",
                            "description": "Pending, Active, Expired, Refused or Failed.",
                        },
                        {
                            "name": "Expires",
                            "type": "string",
                            "jsonPath": ".status.expiresAt",
                            "description": "When the duration runs out (empty: until deleted).",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": _s(
                            "A PayFlow incident: faults switched on in a PayFlow release, declaratively, "
                            "for a while. The operator merges every Active incident of a release into its "
                            "faults ConfigMap and clears them when the incident expires or is deleted.",
                            type="object",
                            required=["spec"],
                            properties={
                                "apiVersion": _s("The API version: payflow.dev/v1alpha1.", type="string"),
                                "kind": _s("PayFlowIncident.", type="string"),
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        )
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m payflow.operator.crd` from payflow/faults.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
