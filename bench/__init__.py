"""Benchmarks against baselines measured in the same run: ``python -m bench`` (see docs/performance.md)."""
