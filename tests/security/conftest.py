"""Fixtures of the security suite, borrowed from the integration suites: the app as a real
process (tests/integration/app), the chart installed in the local API server
(tests/integration/helm) and the operator as a real subprocess (tests/integration/operator)."""

from __future__ import annotations

from tests.integration.app.conftest import start_app  # noqa: F401
from tests.integration.helm.conftest import helm_cli, installed, other_namespace  # noqa: F401
from tests.integration.operator.conftest import crd, operator, operator_factory  # noqa: F401
