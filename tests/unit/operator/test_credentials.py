"""The operator's login: refused credentials are read again and retried, paced, never fatal;
and its own API calls use a renewed token after a refusal."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes.client.rest import ApiException

from payflow.operator.credentials import LoginPacer, login
from payflow.operator.kube import Kube, new_api_client

LOG = logging.getLogger("test-login")
INFO = kopf.ConnectionInfo(server="https://127.0.0.1:6443", token="t1")


def test_the_pacer_waits_only_after_a_quick_relogin() -> None:
    pacer = LoginPacer(quick=60, first=1, maximum=30)
    assert pacer.delay(0.0) == 0  # the first login
    pacer.done(0.0)
    delays = []
    for now in (0.5, 2.0, 5.0, 10.0, 20.0, 40.0, 50.0, 55.0):
        delays.append(pacer.delay(now))
        pacer.done(now)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert pacer.delay(55.0 + 60) == 0  # long after the last one: a fresh start
    assert pacer.refusals == 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_refused_login_is_retried_with_a_distinct_copy(caplog: pytest.LogCaptureFixture) -> None:
    pacer = LoginPacer(quick=60, first=0.01, maximum=0.02)
    clock = Clock()
    reads: list[dict[str, Any]] = []

    def read(**kwargs: Any) -> kopf.ConnectionInfo:
        reads.append(kwargs)
        return INFO

    first = await login(pacer, LOG, read, clock, settings="s")
    assert reads == [{"logger": LOG, "settings": "s"}]
    assert caplog.records == []
    with caplog.at_level(logging.WARNING):
        again = await login(pacer, LOG, read, clock, settings="s")  # kopf asks again at once: refused
    assert first is not None
    assert again is not None
    assert (first.server, first.token) == (again.server, again.token) == (INFO.server, INFO.token)
    assert again != first  # kopf would not take back an equal one
    assert "refused the operator's credentials (HTTP 401)" in caplog.text


async def test_the_first_login_fails_as_its_reader_does_later_ones_keep_trying() -> None:
    pacer = LoginPacer(quick=60, first=0.01, maximum=0.01)
    clock = Clock()

    def broken(**_: Any) -> kopf.ConnectionInfo:
        raise kopf.LoginError("no kubeconfig")

    with pytest.raises(kopf.LoginError):
        await login(pacer, LOG, broken, clock)
    assert await login(pacer, LOG, lambda **_: INFO, clock) is not None
    failures = 0

    def flaky(**_: Any) -> kopf.ConnectionInfo:
        nonlocal failures
        failures += 1
        if failures < 3:
            raise kopf.LoginError("token file missing for a moment")
        return INFO

    assert await login(pacer, LOG, flaky, clock) is not None
    assert failures == 3


def _kubeconfig(path: Path, token: str) -> Path:
    user = {"name": "u", "user": {"token": token}}
    context = {"name": "c", "context": {"cluster": "k", "user": "u"}}
    cluster = {"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster], "users": [user]}
    path.write_text(json.dumps({**config, "contexts": [context], "current-context": "c"}))
    return path


async def test_a_refused_call_is_made_again_with_the_renewed_token(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "kubeconfig", "old")
    kube = Kube(new_api_client(str(path)), reload=lambda: new_api_client(str(path)))
    seen: list[str] = []

    def call() -> str:
        # What a request sends (the kubeconfig loader's hook runs first, as before a request).
        token = str(kube.api_client.configuration.get_api_key_with_prefix("BearerToken"))
        seen.append(token)
        if token != "Bearer new":
            raise ApiException(status=401, reason="Unauthorized")
        return "ok"

    try:
        with pytest.raises(ApiException):  # the token read again is the same: refused for good
            await kube._run(call)
        _kubeconfig(path, "new")  # renewed meanwhile: the second try uses it, and so does the next
        assert await kube._run(call) == "ok"
        assert await kube._run(call) == "ok"
        assert seen == ["Bearer old", "Bearer old", "Bearer new", "Bearer new"]
    finally:
        kube.close()
