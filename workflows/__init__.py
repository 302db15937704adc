"""Deterministic orchestration only: no I/O, clock, env or randomness beyond Temporal's helpers."""
