"""Session fixtures: the real servers every integration test talks to.

Each fixture starts its part of the local stack (see ``payflow.devstack``) on free loopback
ports in a throwaway directory, once per test session, and stops it at the end, also when the
run is interrupted (SIGINT, SIGTERM, SIGHUP) or its process killed.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from payflow.devstack.process import install_signal_guard
from payflow.devstack.stack import LocalStack, StackConfig
from tests.support import kubectl_for

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def pytest_configure(config: pytest.Config) -> None:
    install_signal_guard()  # SIGTERM/SIGHUP unwind like Ctrl-C, so the finalizers stop the stack
    # The hypothesis tests of `make test` replay the same examples on every run (derandomize):
    # what they find fails every run until it is fixed, never a later, unrelated change at
    # random. `make fuzz` sets PAYFLOW_FUZZ_EXPLORE=1 and draws new examples each time
    # (PAYFLOW_FUZZ_SEED replays one of its runs).
    settings.register_profile("replay", derandomize=True)
    settings.register_profile("explore", derandomize=False)
    explore = os.environ.get("PAYFLOW_FUZZ_EXPLORE") or os.environ.get("PAYFLOW_FUZZ_SEED")
    settings.load_profile("explore" if explore else "replay")


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, components: tuple[str, ...]) -> LocalStack:
    stack = LocalStack(StackConfig(workdir=tmp_path_factory.mktemp(name), components=components))
    stack.start()
    return stack


@pytest.fixture(scope="session")
def data_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """PostgreSQL and Redis."""
    stack = _start(tmp_path_factory, "data-stack", ("postgres", "redis"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def kube_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """etcd, kube-apiserver and kube-controller-manager: a control plane without nodes."""
    stack = _start(tmp_path_factory, "kube-stack", ("kube-controller-manager",))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def postgres_url(data_stack: LocalStack) -> str:
    return data_stack.database_url


@pytest.fixture(scope="session")
def redis_url(data_stack: LocalStack) -> str:
    return data_stack.redis_url


@pytest.fixture(scope="session")
def kubeconfig(kube_stack: LocalStack) -> Path:
    return kube_stack.kubeconfig


@pytest.fixture(scope="session")
def kube_api(kubeconfig: Path) -> Iterator[object]:
    """A ``kubernetes.client.ApiClient`` for the admin of the local API server."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()
    del client


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    """Run the pinned kubectl against the local API server; returns the completed process."""
    return kubectl_for(kubeconfig)


@pytest.fixture
def namespace(kube_api: object) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so `-m unit` or `-m "not integration"` select by kind."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in ("unit", "integration", "e2e", "fuzz", "security", "resilience"):
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))
