"""What the resilience suites share: the app and the operator as real processes, the load
generator with a ledger of every answer, and the audit of that ledger against PostgreSQL.

The ledger is the client's side of the story: for each ``Idempotency-Key`` the body sent and
every answer seen. The audit compares it with the rows the database holds: an acknowledged
payment (a 2xx with an id) must be stored exactly once, under that id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from payflow import faults as vocab
from payflow import naming
from payflow.devstack import tools
from payflow.devstack.process import Process, free_port
from payflow.devstack.stack import LocalStack
from payflow.loadgen.model import Kind, Mix
from payflow.loadgen.runner import LoadConfig, LoadGenerator
from tests.integration.operator.conftest import BASELINE, CRD_FILE, RELEASE, configmap_manifest, incident
from tests.support import wait_for

REPORT_DIR_ENV = "PAYFLOW_RESILIENCE_REPORT"  # a directory: each suite writes <name>.json there

# Creates dominate: they are what can be lost or duplicated; the reads keep the app honest.
WRITE_HEAVY = Mix(create=0.55, retry=0.15, list=0.1, stats=0.1, lookup=0.1)


def scale(env: str, default: int) -> int:
    """A count a suite runs at: ``default`` in `make test`, more through ``env`` (its make target)."""
    raw = os.environ.get(env, "")
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{env} must be at least 1, got {raw!r}")
    return value


def report(name: str, figures: Mapping[str, Any]) -> None:
    """Print the suite's figures (seen with `pytest -s`) and write them to $PAYFLOW_RESILIENCE_REPORT."""
    line = json.dumps({"suite": name, **figures}, sort_keys=True, default=str)
    print(f"\n[resilience] {line}", flush=True)
    directory = os.environ.get(REPORT_DIR_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.json").write_text(line + "\n")


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PAYFLOW_LOG_LEVEL": "INFO",
    }


@dataclass
class App:
    """How to start ``payflow-app`` against a stack; each :meth:`process` is a fresh "pod"."""

    stack: LocalStack
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def process(self, restarts: int = 0, extra: Mapping[str, str] | None = None) -> Process:
        env = {
            **_base_env(),
            "DATABASE_URL": self.stack.database_url,
            "REDIS_URL": self.stack.redis_url,
            "PAYFLOW_HOST": "127.0.0.1",
            "PAYFLOW_PORT": str(self.port),
            "PAYFLOW_WATCH_FAULTS": "false",
            "PAYFLOW_OOM_CGROUP_DIR": str(self.logs / "no-cgroup"),
            "PAYFLOW_RESTART_COUNT": str(restarts),
            "HOSTNAME": f"resilience-app-{restarts}",
            **self.env,
            **(extra or {}),
        }
        return Process("app", [_script("payflow-app")], self.logs / "app.log", env=env)

    def healthy(self) -> bool:
        return httpx.get(f"{self.url}/health", timeout=1).status_code == 200

    def ready(self, client: httpx.Client) -> tuple[int, str]:
        """``/ready`` as a probe sees it: the status code and the body's status."""
        resp = client.get(f"{self.url}/ready")
        return resp.status_code, str(resp.json().get("status"))

    def start(self) -> Process:
        proc = self.process()
        proc.start()
        proc.wait_ready(self.healthy, timeout=60)
        return proc


@dataclass
class Operator:
    """``payflow-operator`` as a real process, watching one namespace."""

    kubeconfig: Path
    namespace: str
    logs: Path
    port: int = field(default_factory=free_port)
    proc: Process | None = None
    starts: int = 0

    def healthy(self) -> bool:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200

    def start(self) -> float:
        """Start it; the seconds until /healthz answers."""
        env = {
            **_base_env(),
            "KUBECONFIG": str(self.kubeconfig),
            "PAYFLOW_WATCH_NAMESPACES": self.namespace,
            "PAYFLOW_OPERATOR_HOST": "127.0.0.1",
            "PAYFLOW_OPERATOR_PORT": str(self.port),
            "PAYFLOW_PENDING_RECHECK_SECONDS": "1",
        }
        self.proc = Process("operator", [_script("payflow-operator")], self.logs / "operator.log", env=env)
        self.proc.start()
        self.starts += 1
        return self.proc.wait_ready(self.healthy, timeout=60)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a node failure would: no clean-up runs."""
        assert self.proc is not None
        self.proc.stop(timeout=0, sig=9)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=10)


# --- the load, and its ledger ----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    kind: str
    status: int | None  # None: no answer (connection refused or reset, timeout)
    tx_id: str | None
    error_code: str | None  # the JSON error body's code, when there is one
    json_error: bool  # a 4xx/5xx whose body has the API's error shape
    at: float  # time.monotonic() when the answer came


@dataclass
class Ledger:
    """Every request the client sent and what came back, keyed by Idempotency-Key for POSTs."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: list[tuple[str | None, Answer]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: str | None, body: dict[str, Any] | None, answer: Answer) -> None:
        with self.lock:
            if key is not None and body is not None:
                self.bodies.setdefault(key, body)
            self.answers.append((key, answer))

    def snapshot(self) -> list[tuple[str | None, Answer]]:
        with self.lock:
            return list(self.answers)

    def acknowledged(self) -> dict[str, str]:
        """Key -> id of every POST the client saw succeed (the first id seen)."""
        acked: dict[str, str] = {}
        for key, a in self.snapshot():
            if key is not None and a.status is not None and 200 <= a.status < 300 and a.tx_id:
                acked.setdefault(key, a.tx_id)
        return acked

    def ids_by_key(self) -> dict[str, set[str]]:
        ids: dict[str, set[str]] = {}
        for key, a in self.snapshot():
            if key is not None and a.tx_id:
                ids.setdefault(key, set()).add(a.tx_id)
        return ids

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, a in self.snapshot():
            if since <= a.at <= until:
                label = str(a.status) if a.status is not None else "no-answer"
                counts[label] = counts.get(label, 0) + 1
        return dict(sorted(counts.items()))


def parse_answer(kind: str, resp: httpx.Response) -> Answer:
    tx_id = code = None
    json_error = False
    with contextlib.suppress(ValueError):
        body = resp.json()
        if isinstance(body, dict):
            if 200 <= resp.status_code < 300 and isinstance(body.get("id"), str):
                tx_id = body["id"]
            err = body.get("error")
            if resp.status_code >= 400 and isinstance(err, dict) and isinstance(err.get("code"), str):
                code, json_error = err["code"], isinstance(err.get("message"), str)
    return Answer(kind, resp.status_code, tx_id, code, json_error, time.monotonic())


class _Recorder:
    """Stands in for the generator's httpx client for one request and notes the answer."""

    def __init__(self, client: httpx.AsyncClient, ledger: Ledger, kind: Kind) -> None:
        self._client, self._ledger, self._kind = client, ledger, kind

    async def request(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        key = (headers or {}).get("Idempotency-Key") if method == "POST" else None
        try:
            resp = await self._client.request(method, path, json=json, headers=headers)
        except httpx.HTTPError:
            self._ledger.record(
                key, json, Answer(self._kind.value, None, None, None, False, time.monotonic())
            )
            raise
        self._ledger.record(key, json, parse_answer(self._kind.value, resp))
        return resp


class LedgerLoad(LoadGenerator):
    """The project's open-loop load generator, every answer noted in a :class:`Ledger`."""

    def __init__(self, config: LoadConfig, ledger: Ledger) -> None:
        super().__init__(config)
        self.ledger = ledger

    async def _send(self, client: httpx.AsyncClient, planned: Any) -> None:
        recorder: Any = _Recorder(client, self.ledger, planned[0])
        await super()._send(recorder, planned)


class BackgroundLoad:
    """The generator on its own thread and event loop, for a bounded time, while the test
    breaks things on the main thread."""

    def __init__(
        self,
        url: str,
        rate: float,
        duration: float,
        seed: int,
        mix: Mix = WRITE_HEAVY,
        timeout: float = 8.0,  # above the app's pool wait (5 s), so its 503 reaches the client
    ) -> None:
        self.ledger = Ledger()
        self.config = LoadConfig(
            target=url, rate=rate, duration=duration, mix=mix, timeout=timeout, seed=seed
        )
        self.summary: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="resilience-load", daemon=True)

    def _run(self) -> None:
        self.summary = asyncio.run(LedgerLoad(self.config, self.ledger).run())

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(timeout=self.config.duration + self.config.timeout + 30)
        assert not self._thread.is_alive(), "the load generator did not finish in time"


def while_running(until: float, step: Callable[[], object], interval: float = 0.05) -> None:
    """Call ``step`` (a probe, a supervisor tick) every ``interval`` s until ``until``
    (time.monotonic()): the bounded wait that is the fault itself, spent doing useful work."""
    while time.monotonic() < until:
        step()
        time.sleep(max(0.0, min(interval, until - time.monotonic())))


def retry_everything(url: str, ledger: Ledger, attempts: int = 3) -> dict[str, int]:
    """POST every key of the ledger again, with its body, as a client retries after a crash
    (acknowledged or not). Each answer goes into the ledger; the count of answers by status."""
    counts: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=10) as client:
        for key, body in list(ledger.bodies.items()):
            for _ in range(attempts):
                try:
                    resp = client.post("/api/transactions", json=body, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    continue
                ledger.record(key, body, parse_answer("final-retry", resp))
                label = str(resp.status_code)
                if resp.status_code == 201:  # replayed: it was stored before; created: only now
                    replayed = resp.headers.get("Idempotent-Replayed") == "true"
                    label += " replayed" if replayed else " created"
                counts[label] = counts.get(label, 0) + 1
                if resp.status_code < 500:
                    break
    return dict(sorted(counts.items()))


def audit(database_url: str, ledger: Ledger, acknowledged: Mapping[str, str]) -> dict[str, int]:
    """The ledger against the database: acknowledged, stored, duplicated, lost."""
    keys = list(ledger.bodies)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, id::text FROM transactions WHERE idempotency_key = ANY(%s)", (keys,)
        ).fetchall()
    stored: dict[str, list[str]] = {}
    for key, tx_id in rows:
        stored.setdefault(key, []).append(tx_id)
    ids = ledger.ids_by_key()
    duplicated = sum(1 for k in keys if len(stored.get(k, [])) > 1 or len(ids.get(k, set())) > 1)
    lost = sum(1 for k, tx_id in acknowledged.items() if stored.get(k) != [tx_id])
    return {
        "keys": len(keys),
        "acknowledged": len(acknowledged),
        "stored": sum(len(v) for v in stored.values()),
        "duplicated": duplicated,
        "lost": lost,
    }


# --- a release in an API server, through the Python client -----------------------------


class Kube:
    """The reads and writes the kube suites make: incidents and the release's faults ConfigMap
    in one opted-in namespace (kubectl only installs the CRD)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core: Any = client.CoreV1Api(self.api)
        self.custom: Any = client.CustomObjectsApi(self.api)
        self.release = RELEASE

    def close(self) -> None:
        self.api.close()

    def install(self) -> None:
        """The CRD, the opted-in namespace, the faults ConfigMap with its baseline."""
        from kubernetes import client

        kubectl = str(tools.find("kubectl").path)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        for args in (
            ["apply", "--server-side", "-f", str(CRD_FILE)],
            ["wait", "--for=condition=Established", "--timeout=30s", f"crd/{naming.PLURAL}.{naming.GROUP}"],
        ):
            subprocess.run([kubectl, *args], env=env, check=True, capture_output=True, timeout=60)
        labels = {naming.OPT_IN_LABEL: naming.OPT_IN_VALUE}
        self.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace, labels=labels))
        )
        self.core.create_namespaced_config_map(self.namespace, configmap_manifest(self.release))
        # Discovery may lag the Established condition by a moment.
        wait_for(lambda: self.incidents() is not None, 15, "the CRD served")

    def _crd_args(self) -> tuple[str, str, str]:
        return naming.GROUP, naming.VERSION, self.namespace

    def incidents(self) -> list[dict[str, Any]]:
        body = self.custom.list_namespaced_custom_object(*self._crd_args(), naming.PLURAL)
        return list(body["items"])

    def create(self, name: str, faults: dict[str, Any], duration: str | None = None) -> None:
        body = {**incident(name, faults, duration=duration)}
        self.custom.create_namespaced_custom_object(*self._crd_args(), naming.PLURAL, body)

    def update(self, name: str, faults: dict[str, Any]) -> None:
        # A JSON patch (a list body): a merge patch would merge the old and new fault maps.
        patch = [{"op": "replace", "path": "/spec/faults", "value": faults}]
        self.custom.patch_namespaced_custom_object(
            *self._crd_args(), naming.PLURAL, name, patch, _content_type="application/json-patch+json"
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(*self._crd_args(), naming.PLURAL, name)

    def configmap_data(self) -> dict[str, str]:
        body = self.core.read_namespaced_config_map(
            naming.faults_configmap_name(self.release), self.namespace
        )
        return dict(body.data or {})

    def faults(self) -> vocab.FaultSet:
        return vocab.FaultSet.from_env(self.configmap_data())


def expected_faults(spec_faults: list[dict[str, Any]]) -> vocab.FaultSet:
    """``payflow.faults.merge`` of the baseline and these incidents' faults."""
    sets = [("", BASELINE)] + [(f"i{n}", vocab.FaultSet.from_spec(f)) for n, f in enumerate(spec_faults)]
    return vocab.merge(sets).faults
