"""`python -m orchestrator.cli`: the `orchestrator` command."""

from orchestrator.cli.services import entry

entry()
