"""Benchmarks of outlast against Celery; see bench/README.md. Entry point: bench/run.py."""
