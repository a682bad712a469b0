#!/usr/bin/env bash
# checkov (the infrastructure-as-code scanner of tests/security/test_checkov.py) in a venv of its own,
# outside the repo and keyed by version: ~/.cache/payflow/checkov-<CHECKOV_VERSION>. Not in the
# project's venv: checkov pins packages the dev tools use (`pip install --dry-run -e '.[dev]'
# checkov` downgrades packaging, pytest, kubernetes and python-dateutil). Its dependencies come
# from tools/checkov-constraints.txt, so a rebuild gets the same set; a changed constraints file
# rebuilds the venv. Idempotent.
#
#   tools/install-checkov.sh            install when missing or stale
#   tools/install-checkov.sh --print    print the venv's directory and exit
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
constraints=$here/checkov-constraints.txt
cache_root=${PAYFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/payflow}
venv=$cache_root/checkov-$CHECKOV_VERSION

if [[ ${1:-} == --print ]]; then
  echo "$venv"
  exit 0
fi

log() { printf '[tools] %s\n' "$*" >&2; }

key=$(sha256sum "$constraints" | cut -c1-16)
stamp=$venv/.installed
if [[ -x $venv/bin/checkov && -f $stamp && $(cat "$stamp") == "$key" ]]; then
  log "checkov $CHECKOV_VERSION: cached in $venv"
  exit 0
fi

python=${PYTHON:-python3}
log "checkov $CHECKOV_VERSION: installing into $venv (log: $venv.log)"
rm -rf "$venv"
mkdir -p "$cache_root"
"$python" -I -m venv "$venv"
if ! { "$venv/bin/pip" install --disable-pip-version-check -q -c "$constraints" "checkov==$CHECKOV_VERSION" \
  && "$venv/bin/checkov" --version; } >"$venv.log" 2>&1; then
  cat "$venv.log" >&2
  rm -rf "$venv"
  exit 1
fi
echo "$key" >"$stamp"
log "checkov $CHECKOV_VERSION: $("$venv/bin/checkov" --version) in $venv"
