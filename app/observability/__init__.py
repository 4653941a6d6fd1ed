"""Prometheus metrics: one registry per app instance, created by the app factory."""
