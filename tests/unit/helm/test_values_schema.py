"""values.schema.json refuses bad values with a message that names the value; lint is clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.helm.chart import CHART, VALUES_FILES, find, helm, render, template_text

# Each file's first line says what the refusal must name: "# refused, naming: <text>".
BAD_VALUES_DIR = Path(__file__).parent / "bad-values"
BAD_VALUES = sorted(BAD_VALUES_DIR.glob("*.yaml"))


def _named(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    prefix = "# refused, naming: "
    assert first.startswith(prefix), f"{path.name}: the first line must be {prefix!r}"
    return first.removeprefix(prefix)


@pytest.mark.parametrize("path", BAD_VALUES, ids=lambda p: p.stem)
def test_bad_values_files_are_refused_naming_the_value(path: Path) -> None:
    proc = template_text([path], check=False)
    assert proc.returncode != 0, f"{path.name}: accepted"
    assert "don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert _named(path) in proc.stderr, proc.stderr


def test_at_least_eight_kinds_of_bad_values_are_checked() -> None:
    assert len(BAD_VALUES) >= 8


def test_an_external_database_and_redis_are_accepted() -> None:
    values = {
        "database": {"existingSecret": "shop-db", "existingSecretKey": "url"},
        "postgresql": {"enabled": False},
        "redis": {"enabled": False, "externalUrl": "redis://cache.shop:6379/0"},
    }
    text = template_text(values=values).stdout
    assert "kind: StatefulSet" not in text
    assert "name: shop-db" in text
    assert "redis://cache.shop:6379/0" in text
    assert "name: payflow-redis" not in text  # no Redis Deployment, Service or Secret of the chart


def test_an_external_redis_from_a_secret_is_accepted() -> None:
    values = {"redis": {"enabled": False, "existingSecret": "shop-cache", "existingSecretKey": "url"}}
    manifests = render(values=values)
    (app,) = [d for d in find(manifests, "Deployment") if d["metadata"]["name"] == "payflow"]
    env = {e["name"]: e for e in app["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_URL"] == {
        "name": "REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "shop-cache", "key": "url"}},
    }
    assert not [m for m in manifests if m["metadata"]["name"] == "payflow-redis"]


@pytest.mark.parametrize("which", VALUES_FILES)
def test_helm_lint_strict_passes(which: str) -> None:
    path: Path | None = VALUES_FILES[which]
    proc = helm("lint", "--strict", str(CHART), *(["-f", str(path)] if path else []), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
