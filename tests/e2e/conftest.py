"""End-to-end tests need a real cluster (kind, k3d, any) with PayFlow installed by Helm.

Name its kubeconfig in PAYFLOW_E2E_KUBECONFIG (``make e2e-kind`` does); without it every test
here is skipped, because this suite is the one place that needs nodes, images and a kubelet.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def e2e_kubeconfig() -> Path:
    path = os.environ.get("PAYFLOW_E2E_KUBECONFIG")
    if not path:
        pytest.skip("no real cluster: set PAYFLOW_E2E_KUBECONFIG to run the end-to-end tests")
    return Path(path)
