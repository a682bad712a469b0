"""schemathesis against the app's own OpenAPI document, served by a real payflow-app process on
real PostgreSQL and Redis with every fault off: every operation, with data that fits the schema
(positive) and data that does not (negative). No answer may be a 5xx, and every answer must be
one the document declares: its status code, content type, headers and body schema. Invalid
input must be refused with a 4xx.

Budget: ``PAYFLOW_FUZZ_API_EXAMPLES`` examples per operation and mode (default 15; `make fuzz`
uses 200). ``PAYFLOW_FUZZ_REPORT``: a JSON file to write the figures to."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import DEFAULT_API_EXAMPLES, budget, write_report
from tests.integration.app.conftest import AppServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODES = {
    schemathesis.GenerationMode.POSITIVE: CHECKS,
    schemathesis.GenerationMode.NEGATIVE: [*CHECKS, negative_data_rejection],
}


def _first_lines(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[:n])


def _fuzz(
    operation: Any,
    mode: schemathesis.GenerationMode,
    checks: list[Any],
    *,
    examples: int,
    base_url: str,
    session: requests.Session,
    runs: Counter[str],
    statuses: Counter[str],
    failures: dict[str, str],
) -> None:
    """Run ``examples`` generated requests against one operation; record, never stop early."""
    label = f"{operation.label} [{mode.value}]"

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # count every call; no shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        runs[label] += 1
        response = case.call(base_url=base_url, session=session, timeout=30)
        statuses[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            failures.setdefault(
                f"{label}: {response.status_code}",
                f"{case.as_curl_command()}\n{response.text[:500]}",
            )
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                failures.setdefault(f"{label}: {failure.title}", _first_lines(str(group)))

    if os.environ.get("PAYFLOW_FUZZ_SEED"):
        run = seed(int(os.environ["PAYFLOW_FUZZ_SEED"]))(run)
    try:
        run()
    except Unsatisfiable:
        # Negative data for an operation that takes no input (GET /health): nothing to send.
        assert mode is schemathesis.GenerationMode.NEGATIVE, label


def test_every_operation_answers_as_its_schema_says(app_server: AppServer) -> None:
    examples = budget("PAYFLOW_FUZZ_API_EXAMPLES", DEFAULT_API_EXAMPLES)
    schema = schemathesis.openapi.from_url(f"{app_server.url}/openapi.json")
    results = list(schema.get_all_operations())
    broken = [r.err() for r in results if isinstance(r, Err)]
    assert not broken, f"the OpenAPI document has operations schemathesis cannot read: {broken}"
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) >= 8, [op.label for op in operations]  # the document lists the API

    runs: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    failures: dict[str, str] = {}  # one per operation, mode and check: the first seen
    session = requests.Session()
    for operation in operations:
        for mode, checks in MODES.items():
            _fuzz(
                operation,
                mode,
                checks,
                examples=examples,
                base_url=app_server.url,
                session=session,
                runs=runs,
                statuses=statuses,
                failures=failures,
            )

    report = {
        "operations": len(operations),
        "modes": [m.value for m in MODES],
        "examples_per_operation_and_mode": examples,
        "requests": sum(runs.values()),
        "responses_by_class": dict(sorted(statuses.items())),
        "failures": len(failures),
        "failure_titles": sorted(failures),
    }
    write_report("api", report)
    assert sum(runs.values()) >= len(operations), report
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
    assert "5xx" not in statuses, report


# What schemathesis found, kept as plain regression tests (see docs/security.md, Fuzzing).


def test_date_time_parameters_refuse_what_the_schema_refuses(app_server: AppServer) -> None:
    # pydantic alone took "0" as the Unix epoch: a 200 for a value the document calls invalid.
    for path, param in (
        ("/api/transactions", "created_from"),
        ("/api/transactions", "created_to"),
        ("/api/faults/history", "since"),
    ):
        for bad in ("0", "1700000000", "2026-01-01", "yesterday"):
            response = app_server.client.get(path, params={param: bad})
            assert response.status_code == 422, (path, param, bad, response.text)
            assert response.json()["error"]["code"] == "validation_error"
        good = app_server.client.get(path, params={param: "2026-01-01T00:00:00Z"})
        assert good.status_code == 200, good.text


def test_metrics_are_documented_as_text(app_server: AppServer) -> None:
    document = app_server.client.get("/openapi.json").json()
    declared = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(declared) == ["text/plain"]
    assert app_server.client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_nul_characters_are_refused_not_a_500(app_server: AppServer) -> None:
    # PostgreSQL text cannot hold NUL: both reached the database and came back as 500s.
    payment = {
        "amount": "1.00",
        "currency": "EUR",
        "merchant_ref": "m1",
        "customer_ref": "c1",
        "card_token": "tok_visa",
        "description": "a\u0000b",
    }
    created = app_server.client.post("/api/transactions", json=payment, headers={"Idempotency-Key": "nul"})
    assert created.status_code == 422, created.text
    assert "NUL" in created.json()["error"]["message"]
    listed = app_server.client.get("/api/faults/history?release=a%00b")
    assert listed.status_code == 422, listed.text
    assert app_server.client.get("/api/faults/history", params={"release": "*"}).status_code == 200
