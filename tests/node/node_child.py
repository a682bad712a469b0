"""Run by test_cleanup.py in a child process (not collected on its own): bring a node up with
a running pod (so there are containers, shims and overlay mounts), say so, then wait to be
interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from payflow.devstack import images, node, tools
from payflow.devstack.process import install_signal_guard
from payflow.devstack.stack import NODE_COMPONENTS, LocalStack, StackConfig
from tests.support import wait_for

POD = f"""
apiVersion: v1
kind: Pod
metadata: {{name: sleeper, namespace: default}}
spec:
  automountServiceAccountToken: false
  containers:
    - name: sleeper
      image: {node.PAUSE_IMAGE}
      imagePullPolicy: Never
"""


def main(workdir: Path, ready_file: Path) -> None:
    install_signal_guard()
    stack = LocalStack(StackConfig(workdir=workdir, components=NODE_COMPONENTS))
    try:
        stack.start()
        pause = images.build_all(names=("pause",))
        images.import_images([b.archive for b in pause], stack.ctr_command)
        kubectl = [str(tools.find("kubectl").path), "--kubeconfig", str(stack.kubeconfig)]
        subprocess.run([*kubectl, "apply", "-f", "-"], input=POD, text=True, check=True, capture_output=True)

        def running() -> bool:
            out = subprocess.run(
                [*kubectl, "get", "pod", "sleeper", "-o", "jsonpath={.status.phase}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            return out == "Running"

        wait_for(running, timeout=120, interval=0.5, what="the pod Running")
        ready_file.write_text(
            json.dumps({"guard": stack.guard.pid, "cgroups": stack.guard.cgroups, "pid": os.getpid()})
        )
        threading.Event().wait(timeout=300)  # the parent's signal comes long before
    finally:
        stack.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
