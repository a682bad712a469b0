"""How fast the operator turns incidents into ConfigMap data, and how much memory it needs.

    .venv/bin/python bench/operator.py [--cycles 50] [--namespaces 20] [--per-namespace 10]

Starts its own local stack (etcd + kube-apiserver), installs the CRD and runs the operator as a
subprocess (cluster-wide, as the chart runs it). Then:

1. latency, over ``--cycles`` sequential incidents on one target: from the create request of
   an incident (what ``kubectl apply`` sends) to the ConfigMap holding its fault, and from the
   delete request to the ConfigMap back at the baseline (seen through a watch on the ConfigMap);
2. scale: ``--namespaces`` x ``--per-namespace`` incidents created at once across opted-in
   namespaces, and the time until every one of them is Active;
3. the operator's peak resident memory (VmHWM).

Goals: p95 <= 300 ms for both latencies; 200 incidents all Active in <= 20 s. Every wait has a
deadline; the whole run is bounded (``--budget`` seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client, config, watch

from payflow import faults as vocab
from payflow import naming
from payflow.devstack.process import Process, free_port
from payflow.devstack.stack import LocalStack, StackConfig
from payflow.operator.crd import crd

REPO = Path(__file__).resolve().parents[1]
BASELINE = vocab.FaultSet().to_env()


class Deadline(Exception):
    pass


def _until(check: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise Deadline(f"timed out after {timeout}s waiting for {what}")


def _quantile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _incident(name: str, faults: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{naming.GROUP}/{naming.VERSION}",
        "kind": naming.KIND,
        "metadata": {"name": name},
        "spec": {"target": "payflow", "faults": faults},
    }


def _release(core_api: Any, namespace: str) -> None:
    core_api.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=namespace, labels={naming.OPT_IN_LABEL: naming.OPT_IN_VALUE})
        )
    )
    core_api.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=naming.faults_configmap_name("payflow"),
                labels={naming.INSTANCE_LABEL: "payflow", naming.COMPONENT_LABEL: naming.FAULTS_COMPONENT},
                annotations={naming.BASELINE_ANNOTATION: json.dumps(BASELINE)},
            ),
            data=dict(BASELINE),
        ),
    )


class ConfigMapWatch:
    """Every version of one ConfigMap, with the moment it was seen."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.events: queue.Queue[tuple[float, dict[str, str]]] = queue.Queue()
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(api, namespace), daemon=True)
        self._thread.start()

    def _run(self, api: Any, namespace: str) -> None:
        core_api = client.CoreV1Api(api)
        name = naming.faults_configmap_name("payflow")
        try:
            for event in self._watch.stream(
                core_api.list_namespaced_config_map, namespace, field_selector=f"metadata.name={name}"
            ):
                self.events.put((time.perf_counter(), dict(event["object"].data or {})))
        except Exception:  # the stack stops under the watch at the end; nothing to report
            if not self._stopped:
                raise

    def wait(self, key: str, value: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Deadline(f"ConfigMap never had {key}={value}")
            try:
                seen, data = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if data.get(key) == value:
                return seen

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stack = LocalStack(StackConfig(workdir=workdir / "stack", components=("kube-apiserver",)))
    stack.start()
    operator: Process | None = None
    try:
        api = config.new_client_from_config(config_file=str(stack.kubeconfig))
        api.configuration.connection_pool_maxsize = 16
        ext = client.ApiextensionsV1Api(api)
        ext.create_custom_resource_definition(crd())
        _until(
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in (
                    ext.read_custom_resource_definition(f"{naming.PLURAL}.{naming.GROUP}").status.conditions
                    or []
                )
            ),
            30,
            "the CRD",
        )
        core_api = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        port = free_port()
        operator = Process(
            name="payflow-operator",
            argv=[
                sys.executable,
                "-m",
                "payflow.operator.main",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            log_path=workdir / "operator.log",
            env={**os.environ, "KUBECONFIG": str(stack.kubeconfig), "PAYFLOW_WATCH_NAMESPACES": ""},
            cwd=REPO,
        )
        operator.start()
        import urllib.request

        operator.wait_ready(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200,
            timeout=30,
        )

        # 1. latency, one incident at a time
        ns = "bench-latency"
        _release(core_api, ns)
        cm_watch = ConfigMapWatch(api, ns)
        # Warm-up: the first incident also pays for the operator's first watch events.
        custom.create_namespaced_custom_object(
            naming.GROUP, naming.VERSION, ns, naming.PLURAL, _incident("warmup", {"latency": {"delayMs": 1}})
        )
        cm_watch.wait("INJECT_LATENCY_MS", "1", 30)
        custom.delete_namespaced_custom_object(naming.GROUP, naming.VERSION, ns, naming.PLURAL, "warmup")
        cm_watch.wait("INJECT_LATENCY_MS", "0", 30)
        apply_ms: list[float] = []
        clear_ms: list[float] = []
        for i in range(args.cycles):
            name, value = f"lat-{i}", str(1000 + i)
            t0 = time.perf_counter()
            custom.create_namespaced_custom_object(
                naming.GROUP,
                naming.VERSION,
                ns,
                naming.PLURAL,
                _incident(name, {"latency": {"delayMs": 1000 + i}}),
            )
            apply_ms.append((cm_watch.wait("INJECT_LATENCY_MS", value, 10) - t0) * 1000)
            t0 = time.perf_counter()
            custom.delete_namespaced_custom_object(naming.GROUP, naming.VERSION, ns, naming.PLURAL, name)
            clear_ms.append((cm_watch.wait("INJECT_LATENCY_MS", "0", 10) - t0) * 1000)
        cm_watch.stop()

        # 2. scale: many incidents across many namespaces at once
        namespaces = [f"bench-scale-{n:02d}" for n in range(args.namespaces)]
        for n in namespaces:
            _release(core_api, n)
        total = args.namespaces * args.per_namespace
        kinds: list[dict[str, Any]] = [
            {"latency": {"delayMs": 100}},
            {"errorRate": {"ratio": 0.05}},
            {"cpuBurn": {"cores": 0.2}},
        ]

        def create(i: int) -> None:
            n = namespaces[i % len(namespaces)]
            custom.create_namespaced_custom_object(
                naming.GROUP, naming.VERSION, n, naming.PLURAL, _incident(f"scale-{i}", kinds[i % len(kinds)])
            )

        def active() -> int:
            items = custom.list_cluster_custom_object(naming.GROUP, naming.VERSION, naming.PLURAL)["items"]
            return sum(
                1
                for it in items
                if it["metadata"]["namespace"].startswith("bench-scale-")
                and (it.get("status") or {}).get("phase") == "Active"
            )

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, range(total)))
        created_s = time.perf_counter() - t0
        _until(lambda: active() == total, args.scale_timeout, f"{total} incidents Active", interval=0.1)
        all_active_s = time.perf_counter() - t0

        return {
            "cycles": args.cycles,
            "apply_to_configmap_ms": {
                "p50": statistics.median(apply_ms),
                "p95": _quantile(apply_ms, 0.95),
                "max": max(apply_ms),
            },
            "delete_to_cleared_ms": {
                "p50": statistics.median(clear_ms),
                "p95": _quantile(clear_ms, 0.95),
                "max": max(clear_ms),
            },
            "scale": {
                "incidents": total,
                "namespaces": args.namespaces,
                "created_s": created_s,
                "all_active_s": all_active_s,
            },
            "operator_peak_rss_mib": _peak_rss_mib(operator.pid or 0),
        }
    finally:
        if operator is not None:
            operator.stop()
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--per-namespace", type=int, default=10)
    parser.add_argument("--scale-timeout", type=float, default=120.0)
    parser.add_argument(
        "--budget", type=float, default=600.0, help="abort the whole run after this many seconds"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    timer = threading.Timer(args.budget, lambda: os._exit(3))  # a hard bound, whatever happens
    timer.daemon = True
    timer.start()
    with tempfile.TemporaryDirectory(prefix="payflow-bench-operator-") as tmp:
        result = run(args, Path(tmp))
    timer.cancel()

    lat, clr, scale = result["apply_to_configmap_ms"], result["delete_to_cleared_ms"], result["scale"]
    print(
        f"bench/operator.py: {result['cycles']} sequential incidents, then {scale['incidents']} incidents "
        f"across {scale['namespaces']} namespaces (local kube-apiserver, operator as a subprocess)"
    )
    print(f"{'':<36}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    print(
        f"{'create -> ConfigMap has the fault':<36}{lat['p50']:>10.1f}{lat['p95']:>10.1f}{lat['max']:>10.1f}"
    )
    print(f"{'delete -> ConfigMap cleared':<36}{clr['p50']:>10.1f}{clr['p95']:>10.1f}{clr['max']:>10.1f}")
    print(
        f"{scale['incidents']} incidents created in {scale['created_s']:.2f} s, all Active after "
        f"{scale['all_active_s']:.2f} s"
    )
    print(f"operator peak RSS: {result['operator_peak_rss_mib']:.1f} MiB")
    p95_ok = lat["p95"] <= 300 and clr["p95"] <= 300
    print(
        f"goal p95 <= 300 ms: {'met' if p95_ok else 'NOT met'}; "
        f"goal 200 Active in <= 20 s: {'met' if scale['all_active_s'] <= 20 else 'NOT met'}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
