"""Fixtures of the resilience suites: stacks of their own, so a suite can stop a part of one
(PostgreSQL, Redis, the API server) without touching the session's servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from payflow.devstack.stack import LocalStack, StackConfig

OwnStack = Callable[..., LocalStack]


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[OwnStack]:
    """Start a LocalStack of the given components for this test alone; stopped afterwards."""
    stacks: list[LocalStack] = []

    def start(*components: str) -> LocalStack:
        stack = LocalStack(StackConfig(workdir=tmp_path / f"stack-{len(stacks)}", components=components))
        stacks.append(stack)
        stack.start()
        return stack

    try:
        yield start
    finally:
        for stack in reversed(stacks):
            stack.stop()
