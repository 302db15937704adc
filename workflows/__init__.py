"""Deterministic orchestration only: no I/O, clocks, env or randomness outside Temporal's helpers."""
