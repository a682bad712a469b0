"""Write the chart's derived files from their one source.

    .venv/bin/python helm/sync.py          # rewrite them
    .venv/bin/python helm/sync.py --check  # exit 1 when one is stale (what the tests check)

Three files, never edited by hand:

* helm/payflow/files/vocabulary.json: fault names, switch keys, parameter keys, types and
  defaults (payflow/faults.py), read by templates/_faults.tpl to render the faults ConfigMap;
* the ``faults`` section of helm/payflow/values.schema.json: payflow.faults.helm_faults_schema();
* helm/payflow/crds/payflowincident.yaml: a copy of crds/payflowincident.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from payflow import faults

CHART = Path(__file__).resolve().parent / "payflow"
VOCABULARY = CHART / "files" / "vocabulary.json"
SCHEMA = CHART / "values.schema.json"
CRD = CHART.parents[1] / "crds" / "payflowincident.yaml"
CRD_COPY = CHART / "crds" / "payflowincident.yaml"


def vocabulary() -> dict[str, Any]:
    return {
        "_generated": "from payflow/faults.py by helm/sync.py; do not edit",
        "faults": [
            {
                "name": f.name,
                "switch": f.switch,
                "params": [
                    {
                        "key": p.key,
                        "env": p.env,
                        "type": "integer" if p.type is int else "number",
                        "default": p.default,
                    }
                    for p in f.params
                ],
            }
            for f in faults.FAULTS
        ],
    }


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def expected() -> dict[Path, str]:
    """Each derived file's content as it should be."""
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["faults"] = faults.helm_faults_schema()
    return {VOCABULARY: dump(vocabulary()), SCHEMA: dump(schema), CRD_COPY: CRD.read_text()}


def stale() -> list[Path]:
    return [path for path, text in expected().items() if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for path in bad:
            print(f"stale: {path} (run .venv/bin/python helm/sync.py)", file=sys.stderr)
        return 1 if bad else 0
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
