"""The operator's login to the API server: credentials that are refused are read again and
retried, paced, for as long as the operator runs.

kopf's default login gives up on the first refusal it cannot fix ("LoginError: Ran out of
valid credentials") and the operator exits. A refusal (HTTP 401) is what the operator sees when
its ServiceAccount is deleted, as when ``kubectl delete namespace`` removes the namespace it
runs in: exiting then only makes the pod crash-loop with the same dead token until it is
deleted. It may also be passing (a token read during an API server restart) or healed by a new
token (the kubelet rotates the projected token file). So the operator keeps going: it logs one
clear warning per attempt, waits (1, 2, 4 ... 30 s) and tries again with what it reads then.
Nothing is written meanwhile: every API call waits for credentials that work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

QUICK_S = 60.0  # a new login sooner than this after the last one means the last was refused
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0


@dataclass
class LoginPacer:
    """How long to wait before the next login (pure; the clock is an argument).

    kopf asks for credentials at start and again only when every credential it holds was
    refused (or its connection closed): a login soon after the previous one means those were
    refused, so it waits, longer each time; a login long after starts afresh."""

    quick: float = QUICK_S
    first: float = FIRST_DELAY_S
    maximum: float = MAX_DELAY_S
    last: float | None = None
    refusals: int = 0
    logins: int = 0

    def delay(self, now: float) -> float:
        if self.last is None or now - self.last >= self.quick:
            self.refusals = 0
            return 0.0
        self.refusals += 1
        return min(self.maximum, self.first * 2.0 ** (self.refusals - 1))

    def done(self, now: float) -> int:
        """Record a login handed out at ``now``; its sequence number."""
        self.last = now
        self.logins += 1
        return self.logins

    def failed(self, now: float) -> None:
        """Record a login that could not even read credentials (the next one waits longer)."""
        self.last = now


Reader = Callable[..., kopf.ConnectionInfo | None]


async def login(
    pacer: LoginPacer,
    logger: Any,
    read: Reader,
    clock: Callable[[], float] = time.monotonic,
    **kwargs: Any,
) -> kopf.ConnectionInfo | None:
    """The credentials to use now, read with ``read`` (kopf's reader of the kubeconfig or the
    in-cluster ServiceAccount), after the pacer's delay. The first login fails as ``read``
    does (a missing kubeconfig is a setup error); later ones keep trying."""
    while True:
        delay = pacer.delay(clock())
        if delay:
            logger.warning(
                "The API server refused the operator's credentials (HTTP 401): its ServiceAccount "
                "or token is gone (as when its namespace is being deleted) or not valid yet. "
                "Reading them again in %.0f s (attempt %d); nothing is written meanwhile.",
                delay,
                pacer.refusals,
            )
            await asyncio.sleep(delay)
        try:
            info = read(logger=logger, **kwargs)
        except Exception as exc:
            if not pacer.logins:
                raise
            logger.warning("The operator's credentials cannot be read: %s", exc)
            pacer.failed(clock())
            continue
        if info is None:
            return None
        # kopf never takes back credentials equal to ones it saw refused; these are read anew
        # and may work now (a passing refusal), so each login is made distinct by its priority
        # (kopf compares priorities only between the credentials of several login handlers).
        return dataclasses.replace(info, priority=info.priority - pacer.done(clock()))
