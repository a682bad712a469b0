#!/usr/bin/env bash
# Build the Kubernetes control plane and node (kubelet, kube-proxy, kube-scheduler), etcd, CoreDNS
# and helm from the Go modules into a cache outside the repo, keyed by version. Idempotent: a binary already in the cache, or found in
# $PAYFLOW_ASSETS / $KUBEBUILDER_ASSETS, is not rebuilt.
#
#   tools/build-tools.sh            build what is missing
#   tools/build-tools.sh --print    print the directory of each tool and exit
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
export GOTOOLCHAIN CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false"

cache_root=${PAYFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/payflow}
k8s_dir=$cache_root/kubernetes-$KUBERNETES_VERSION
etcd_dir=$cache_root/etcd-$ETCD_VERSION
helm_dir=$cache_root/helm-$HELM_VERSION
coredns_dir=$cache_root/coredns-$COREDNS_VERSION

if [[ ${1:-} == --print ]]; then
  printf 'kubernetes %s\netcd %s\nhelm %s\ncoredns %s\n' "$k8s_dir" "$etcd_dir" "$helm_dir" "$coredns_dir"
  exit 0
fi

log() { printf '[tools] %s\n' "$*" >&2; }

# A binary given by the user (envtest's convention) wins over building one.
given() {
  local name=$1 d
  for d in ${PAYFLOW_ASSETS:-} ${KUBEBUILDER_ASSETS:-}; do
    [[ -x $d/$name ]] && { echo "$d/$name"; return 0; }
  done
  return 1
}

build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# The machine's kubectl will do if its minor version is within one of the API server's.
kubectl_on_path_compatible() {
  local path want have
  path=$(command -v kubectl) || return 1
  [[ $path == "$k8s_dir/kubectl" ]] && return 1
  want=${KUBERNETES_VERSION#v1.}; want=${want%%.*}
  have=$("$path" version --client -o json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+"))') || return 1
  [[ $have =~ ^[0-9]+$ ]] && (( have - want <= 1 && want - have <= 1 ))
}

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy) missing=() b
  if kubectl_on_path_compatible; then
    log "kubectl: using $(command -v kubectl) (within one minor version of $KUBERNETES_VERSION)"
  else
    want+=(kubectl)
  fi
  for b in "${want[@]}"; do
    if given "$b" >/dev/null; then log "$b: using $(given "$b")"; continue; fi
    [[ -x $k8s_dir/$b ]] || missing+=("$b")
  done
  [[ ${#missing[@]} -eq 0 ]] && { log "kubernetes $KUBERNETES_VERSION: cached in $k8s_dir"; return; }

  log "kubernetes $KUBERNETES_VERSION: building ${missing[*]} (the first build takes several minutes)"
  local mod=$k8s_dir/src staging_version minor
  mkdir -p "$mod"
  # k8s.io/kubernetes vX.Y.Z points its staging modules at ./staging; each is published
  # as k8s.io/<name> v0.Y.Z, so the wrapper module replaces every one with that.
  staging_version="v0.${KUBERNETES_VERSION#v1.}"
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  (
    cd "$mod"
    cat > go.mod <<MOD
module payflow.dev/kubernetes-tools

go 1.26

require k8s.io/kubernetes $KUBERNETES_VERSION
MOD
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    local upstream
    upstream=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$upstream" | while read -r m; do
      go mod edit -replace "$m=$m@$staging_version"
    done
    go mod tidy -e >/dev/null 2>&1 || true
    go mod download
    local pkg=k8s.io/component-base/version cg=k8s.io/client-go/pkg/version ld=""
    for p in $pkg $cg; do
      ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
    done
    for b in "${missing[@]}"; do
      log "  go build $b"
      go build -trimpath -ldflags "-s -w $ld" -o "$k8s_dir/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$k8s_dir/$b.tmp" "$k8s_dir/$b"
    done
  )
  "$k8s_dir/kube-apiserver" --version >&2
}

build_etcd() {
  if given etcd >/dev/null; then log "etcd: using $(given etcd)"; return; fi
  [[ -x $etcd_dir/etcd ]] && { log "etcd $ETCD_VERSION: cached in $etcd_dir"; return; }
  log "etcd $ETCD_VERSION: building"
  local mod=$etcd_dir/src
  mkdir -p "$mod"
  (
    cd "$mod"
    printf 'module payflow.dev/etcd-tools\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go mod tidy -e >/dev/null 2>&1 || true
    go mod download
    go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
      -o "$etcd_dir/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
  )
  "$etcd_dir/etcd" --version >&2
}

build_helm() {
  if given helm >/dev/null; then log "helm: using $(given helm)"; return; fi
  [[ -x $helm_dir/helm ]] && { log "helm $HELM_VERSION: cached in $helm_dir"; return; }
  log "helm $HELM_VERSION: building"
  mkdir -p "$helm_dir"
  GOBIN=$helm_dir go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$helm_dir/helm" version --short >&2
}

# CoreDNS, the cluster's DNS on the local node (a process in the node's network namespace).
build_coredns() {
  if given coredns >/dev/null; then log "coredns: using $(given coredns)"; return; fi
  [[ -x $coredns_dir/coredns ]] && { log "coredns $COREDNS_VERSION: cached in $coredns_dir"; return; }
  log "coredns $COREDNS_VERSION: building (about 4 minutes the first time)"
  mkdir -p "$coredns_dir"
  GOBIN=$coredns_dir go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  "$coredns_dir/coredns" -version >&2
}

build_etcd
build_helm
build_kubernetes
build_coredns
