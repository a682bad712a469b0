"""Run by test_interrupt.py in a child pytest (not collected on its own): bring the whole
stack up, say so, then wait to be interrupted."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from payflow.devstack.stack import LocalStack


def test_hold_the_stack(kube_stack: LocalStack, data_stack: LocalStack) -> None:
    pids = {n: p.pid for s in (kube_stack, data_stack) for n, p in s.processes.items()}
    Path(os.environ["PAYFLOW_CHILD_READY"]).write_text(json.dumps(pids))
    # Block until the parent's signal arrives; it kills this process long before the timeout.
    threading.Event().wait(timeout=120)
