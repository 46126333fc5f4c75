"""Observability: Prometheus metrics of every process (registry, snapshot files, exposition), W3C trace
context and optional OTLP span export. See README, "Metrics"; the families are listed in families.py."""
