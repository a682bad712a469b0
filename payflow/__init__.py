"""PayFlow: a payment service on Kubernetes whose failures are switched on and off declaratively.

The package has three parts:

* ``payflow.app``: the payment API (the folder ``app/``);
* ``payflow.operator``: the kopf operator for ``PayFlowIncident`` (the folder ``operator/``);
* ``payflow.devstack``: the local stack (etcd, kube-apiserver, kube-controller-manager,
  PostgreSQL, Redis) that the tests and ``make up`` run without Docker.
"""

__version__ = "0.1.0"
