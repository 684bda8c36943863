"""Node types: one module per type, each exposing `node_type` (see `orchestrator.engine.registry`)."""
