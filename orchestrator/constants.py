"""Names shared by the engine, its store and its tasks: collections, statuses, task names."""

from __future__ import annotations

from typing import Final, Literal

RUNS: Final = "runs"
WORKFLOWS: Final = "workflows"
NODE_LOGS: Final = "node_logs"
WORKFLOW_VERSIONS: Final = "workflow_versions"
WAITS: Final = "waits"
WAIT_ITEMS: Final = "wait_items"

RunStatus = Literal["pending", "running", "finished", "failed", "error", "cancelled"]
NodeStatus = Literal["pending", "running", "waiting", "finished", "failed", "skipped", "cancelled"]
TriggerType = Literal["api", "cli", "schedule", "run_workflow", "rerun"]
RUN_STATUSES: Final[tuple[RunStatus, ...]] = (
    "pending",
    "running",
    "finished",
    "failed",
    "error",
    "cancelled",
)

RUN_ACTIVE: Final[tuple[RunStatus, ...]] = ("pending", "running")
RUN_OVER: Final[tuple[RunStatus, ...]] = ("finished", "failed", "error", "cancelled")
NODE_OVER: Final[tuple[NodeStatus, ...]] = ("finished", "failed", "skipped")
# A node message may (re)start its node only from these: a `waiting` node is continued by
# polls and wake-ups, never started again.
NODE_STARTABLE: Final[tuple[NodeStatus, ...]] = ("pending", "running")
# A node may be ended (finished, failed, skipped) only from these, once.
NODE_ENDABLE: Final[tuple[NodeStatus, ...]] = ("running", "waiting", "pending")

NODE_TASK_PREFIX: Final = "workers."
FINALIZE_TASK: Final = "orchestrator.finalize_run"
JOIN_TASK: Final = "orchestrator.join"
CONTINUE_TASK: Final = "orchestrator.continue_chain"
SWEEP_TASK: Final = "orchestrator.sweep_waits"
PRUNE_TASK: Final = "orchestrator.prune_runs"

ENTRY_POINT_GROUP: Final = "orchestrator.node_types"

# The longest countdown any task may ask for: far below the broker's visibility timeout
# (celeryconfig.py), past which Redis redelivers a held message to a second worker.
MAX_COUNTDOWN_S: Final = 600.0

# The largest run document a node hands on to the next node of its chain (in the message);
# past it the next node reads the document from MongoDB.
HAND_ON_MAX_BYTES: Final = 64 * 1024
# What each of several nodes handed one snapshot (the first nodes of a run, or those parallel
# work starts with) may be handed at least: they share `HAND_ON_MAX_BYTES`.
HAND_ON_SHARED_MIN_BYTES: Final = 4096

# How long a run may stay `pending` and never sent before its creator is taken for dead and
# another caller (the sweeper, or a start with the same run id) sends its canvas.
DISPATCH_GRACE_S: Final = 30.0

# Past a node's `timeout_s` (its own deadline): when Celery's soft time limit interrupts a
# node that ignores its deadline, and when the hard limit kills the process.
SOFT_LIMIT_GRACE_S: Final = 1.0
HARD_LIMIT_GRACE_S: Final = 10.0

# The longest pause between two tries of a message whose store call or publish failed
# because MongoDB or Redis did not answer (an outage pauses a run; it does not fail it).
OUTAGE_MAX_BACKOFF_S: Final = 30.0
