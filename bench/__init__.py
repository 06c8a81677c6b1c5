"""Benchmarks: one script per path, each run as ``python -m bench.NAME`` (not pytest tests)."""
