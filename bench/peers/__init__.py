"""Peer benchmarks: the same measures as `bench/run_workflow.py`, on other orchestrators, beside ours.

Each peer runs in a venv of its own (its dependencies would clash with the project's), made
on first run under this folder and ignored by git.
"""
