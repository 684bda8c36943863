"""Benchmarks (scripts, not tests): `bench/engine.py` compares the engine with raw Celery."""
