"""The README stays true: its fault reference, commands, files and links exist."""

from __future__ import annotations

import re
from pathlib import Path

from payflow.operator.reference import faults_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def test_quick_start_has_the_two_commands() -> None:
    quick = README[README.index("## Quick start") : README.index("### What runs in `make demo`")]
    assert "make demo" in quick
    assert "make test" in quick


def test_the_fault_reference_is_the_vocabulary() -> None:
    assert faults_markdown() in README, "regenerate with: python -m payflow.operator.reference"


def test_every_make_target_named_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", MAKEFILE, re.M))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README))
    assert named, "the README names make targets"
    assert named <= targets, f"missing targets: {named - targets}"


def test_every_file_and_benchmark_named_exists() -> None:
    paths = set(
        re.findall(r"\b((?:examples|docs|helm|tools|crds|kind)/[\w./-]+\.(?:ya?ml|md|env|sh|png))", README)
    )
    benches = set(re.findall(r"-m bench\.(\w+)", README))
    assert paths
    assert benches
    for path in paths:
        assert (ROOT / path).exists(), path
    for bench in benches:
        assert (ROOT / "bench" / f"{bench}.py").exists(), bench
