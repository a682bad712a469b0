#!/usr/bin/env bash
# Install the Debian packages the local stack needs, only those missing:
# PostgreSQL and Redis servers, Chromium for the dashboard's browser test, wrk, the HTTP load
# of the API benchmark (bench/api.py), and the node's runtime: containerd, runc, the CNI plugins,
# iptables and conntrack (kube-proxy), mmdebstrap and buildah (images without Docker), socat.
set -euo pipefail

need=()
have_pg() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null; }
have_pg || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
# initdb, pg_ctl and psql come with the server package; the client for scripts:
command -v psql >/dev/null || need+=(postgresql-client)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
command -v wrk >/dev/null || need+=(wrk)
# Debian's python3 (3.11.2, the base of the node's images) with its venv: the lock check's venv.
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
# The local node (payflow/devstack/node.py).
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v buildah >/dev/null || need+=(buildah)
command -v socat >/dev/null || need+=(socat)
command -v nsenter >/dev/null || need+=(util-linux)

if [[ ${#need[@]} -eq 0 ]]; then
  echo "[tools] system packages: present (postgresql, redis-server, chromium, wrk, containerd, runc, cni, buildah)" >&2
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  sudo=sudo
else
  sudo=
fi
echo "[tools] installing Debian packages: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged services; the local stack runs its own on free ports.
for svc in redis-server postgresql containerd; do
  $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
done
