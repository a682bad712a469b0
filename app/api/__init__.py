"""The HTTP API: routes per resource, and their dependencies."""
