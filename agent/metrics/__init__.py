"""Prometheus metrics: a tiny registry with its HTTP endpoint (:mod:`.registry`) and what the
sync service exports (:mod:`.sync`)."""
