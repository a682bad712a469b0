"""A small volume provisioner for the local node: hostPath volumes owned by the pod's user.

    python -m payflow.devstack.provisioner KUBECONFIG VOLUMES_DIR

The controller-manager's hostPath provisioner makes root-owned 0750 directories that a
non-root PostgreSQL cannot write. This one waits until a pod names a pending claim (with no
StorageClass, as the chart's PostgreSQL asks), makes a directory below VOLUMES_DIR owned by
that pod's ``runAsUser`` and ``fsGroup`` (what a real volume with fsGroup support gives), and
creates a PersistentVolume bound to the claim. A volume whose claim is gone (``helm uninstall``)
is deleted with its directory: reclaim policy Delete, as cloud volumes have.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

PROVISIONER = "payflow.dev/local-node"
POLL = 1.0


def pod_owner(pod: Any) -> tuple[int, int]:
    """The uid and gid a pod's files belong to: runAsUser and fsGroup (or runAsGroup)."""
    psc = pod.spec.security_context
    csc = pod.spec.containers[0].security_context
    uid = (csc and csc.run_as_user) or (psc and psc.run_as_user) or 0
    gid = (psc and psc.fs_group) or (csc and csc.run_as_group) or (psc and psc.run_as_group) or uid
    return int(uid), int(gid)


def volume_name(claim: Any) -> str:
    base = f"pv-{claim.metadata.namespace}-{claim.metadata.name}"
    return re.sub(r"[^a-z0-9-]", "-", base.lower())[:240] + f"-{claim.metadata.uid[:8]}"


def build_volume(claim: Any, path: Path) -> dict[str, Any]:
    size = ((claim.spec.resources and claim.spec.resources.requests) or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(claim),
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": claim.spec.access_modes or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
            },
        },
    }


def provision_once(core: client.CoreV1Api, volumes: Path) -> list[str]:
    """One pass: volumes for pending claims that a pod names, deletion of released ones."""
    done: list[str] = []
    pods = core.list_pod_for_all_namespaces().items
    users = {
        (p.metadata.namespace, v.persistent_volume_claim.claim_name): p
        for p in pods
        for v in p.spec.volumes or []
        if v.persistent_volume_claim
    }
    for claim in core.list_persistent_volume_claim_for_all_namespaces().items:
        if claim.status.phase != "Pending" or claim.spec.volume_name or claim.spec.storage_class_name:
            continue
        pod = users.get((claim.metadata.namespace, claim.metadata.name))
        if pod is None:
            continue  # no pod yet: its user is not known
        path = volumes / volume_name(claim)
        path.mkdir(parents=True, exist_ok=True)
        uid, gid = pod_owner(pod)
        os.chown(path, uid, gid)
        path.chmod(0o2770)
        with contextlib.suppress(ApiException):
            core.create_persistent_volume(build_volume(claim, path))
            done.append(
                f"provisioned {path.name} for {claim.metadata.namespace}/{claim.metadata.name} ({uid}:{gid})"
            )
    for pv in core.list_persistent_volume().items:
        ours = (pv.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if ours and pv.status.phase in ("Released", "Failed"):
            with contextlib.suppress(ApiException):
                core.delete_persistent_volume(pv.metadata.name)
            if pv.spec.host_path and Path(pv.spec.host_path.path).parent == volumes:
                shutil.rmtree(pv.spec.host_path.path, ignore_errors=True)
            done.append(f"deleted {pv.metadata.name} (its claim is gone)")
    return done


def main(argv: list[str]) -> int:
    kubeconfig, volumes = argv[0], Path(argv[1])
    volumes.mkdir(parents=True, exist_ok=True)
    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    print(f"provisioner: hostPath volumes below {volumes}", flush=True)
    while True:
        try:
            for line in provision_once(core, volumes):
                print(f"provisioner: {line}", flush=True)
        except Exception as exc:  # the API server restarting: try again
            print(f"provisioner: {exc}", file=sys.stderr, flush=True)
        time.sleep(POLL)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
