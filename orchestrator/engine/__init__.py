"""The engine: the Celery app, compiling workflows to canvases, the node tasks, waiting,
run ends, recovery, schedules.

Above the store and the definitions; the public API (`orchestrator.api`) is above it.
"""
