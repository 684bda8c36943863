"""Celery settings for the orchestrator (broker and backend URLs come from `REDIS_URL`).

Chosen for at-least-once execution with exactly-once effects enforced in MongoDB: see
docs/runs.md ("Delivery guarantees").
"""

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Far above any countdown (orchestrator.constants.MAX_COUNTDOWN_S) and node runtime: past it
# Redis hands a held message to a second worker.
broker_transport_options = {"visibility_timeout": 7200}
result_backend_transport_options = {"visibility_timeout": 7200}
broker_connection_retry_on_startup = True

result_expires = 7 * 86400
# Above the longest wait a node may do inside a chord header; the chord counter expires silently.
result_chord_expires = 30 * 86400

# Errbacks on chord header tasks too (the run's engine-fault handler is idempotent).
task_allow_error_cb_on_chord_header = True

worker_soft_shutdown_timeout = 30
worker_send_task_events = True
task_send_sent_event = True
task_track_started = False
worker_hijack_root_logger = False

# `orchestrator beat` also runs the sweeper and reconciler (every ORCH_SWEEP_S, set by
# orchestrator.engine.app.create_app): waits whose poll was lost, runs never sent, and runs whose
# messages were lost or whose worker died are sent again from their documents.
beat_schedule = {
    "orchestrator-sweep-waits": {
        "task": "orchestrator.sweep_waits",
        "schedule": 30.0,
        "kwargs": {"grace_s": 30.0},
        "options": {"expires": 25.0},
    }
}
