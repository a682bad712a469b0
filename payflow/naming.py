"""Names that the app, the operator and the Helm chart must agree on: one place for each.

A *target* is one PayFlow release in one namespace (``spec.target`` of an incident). The
chart installs, for a release ``R``:

* the faults ConfigMap ``R-faults`` (labels: instance ``R``, component ``faults``), whose
  ``INJECT_*`` data the app reads at start (``envFrom``) and watches live;
* the app Deployment (labels: instance ``R``, component ``api``).
"""

from __future__ import annotations

GROUP = "payflow.dev"
VERSION = "v1alpha1"
KIND = "PayFlowIncident"
PLURAL = "payflowincidents"
SINGULAR = "payflowincident"
SHORT_NAMES = ("pfi",)
CATEGORY = "payflow"

# Fault injection is opt-in per namespace, like Chaos Mesh's chaos-mesh.org/inject=enabled.
OPT_IN_LABEL = "payflow.dev/inject"
OPT_IN_VALUE = "enabled"

FINALIZER = "payflow.dev/clear-faults"

# On the faults ConfigMap:
# - the baseline (the chart's `faults:` values) as JSON of INJECT_* keys, written by Helm, so
#   the operator can always return to it;
BASELINE_ANNOTATION = "payflow.dev/baseline"
# - which incident turns on which fault, written by the operator, read by the app:
#   {"latency": [{"incident": "checkout-latency", "expiresAt": "2026-...Z" | null}], ...}
SOURCES_ANNOTATION = "payflow.dev/incidents"
# On the app Deployment's pod template (delivery: rollout): the digest of the fault set the
# pods start with, and the incidents that put it there. Absent at the baseline.
DIGEST_ANNOTATION = "payflow.dev/faults-digest"
ROLLOUT_INCIDENTS_ANNOTATION = "payflow.dev/rollout-incidents"

INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
NAME_LABEL = "app.kubernetes.io/name"
APP_COMPONENT = "api"
FAULTS_COMPONENT = "faults"


def faults_configmap_name(release: str) -> str:
    return f"{release}-faults"


def app_selector(release: str) -> str:
    """The label selector of a release's app Deployment."""
    return f"{INSTANCE_LABEL}={release},{COMPONENT_LABEL}={APP_COMPONENT}"
