"""Fuzzing: schemathesis against the app's OpenAPI, hypothesis against the incident API."""
