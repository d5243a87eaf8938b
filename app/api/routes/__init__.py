"""Routers: `conversations` (the API) and `system` (health, readiness, metrics, model)."""
