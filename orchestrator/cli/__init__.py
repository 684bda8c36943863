"""The `orchestrator` command: register workflows, run them, inspect runs, start services.

`main` is the click group (`orchestrator.cli.base`); each module below adds its commands.
"""

from orchestrator.cli import lists, retention, runs, services, workflows
from orchestrator.cli.base import main
from orchestrator.cli.services import entry
from orchestrator.cli.variables import parse_vars

__all__ = ["entry", "lists", "main", "parse_vars", "retention", "runs", "services", "workflows"]
