"""The local stack: real etcd, kube-apiserver, kube-controller-manager, PostgreSQL and Redis.

Like controller-runtime's envtest, it runs a real Kubernetes control plane without nodes,
from binaries built from the Go modules (see ``tools/build-tools.sh``). Every process runs
on a free loopback port, in a throwaway directory, in a process group of its own, and is
stopped with its group; a child also dies with the process that started it.
"""

from payflow.devstack.stack import LocalStack, StackConfig

__all__ = ["LocalStack", "StackConfig"]
