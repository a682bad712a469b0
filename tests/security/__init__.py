"""Security: rendered manifests, secrets kept out of every output, the RBAC matrix, the opt-in."""
