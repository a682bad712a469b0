"""Fault injection in the app: the state in force, its live source, and the injectors."""
