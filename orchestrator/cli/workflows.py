"""`orchestrator workflows`: register, list, show and delete workflow definitions."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from orchestrator.cli.base import connected, err, main, out, print_json
from orchestrator.errors import WorkflowValidationError


@main.group()
def workflows() -> None:
    """Register and list workflow definitions."""


@workflows.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def workflows_apply(paths: tuple[Path, ...]) -> None:
    """Validate workflow files (YAML or JSON; a folder: all of its files, sub-folders too)
    and register them; nothing is registered when any is invalid."""
    from orchestrator.definitions.workflow_files import load_workflow_file
    from orchestrator.engine.child_runs import unknown_targets

    with connected() as orch:
        files = [p for path in paths for p in (workflow_files(path) if path.is_dir() else [path])]
        known_types = orch.node_types()
        budget = orch.settings.max_run_doc_bytes // 2  # a run's variables, as the launcher allows
        specs, problems = [], []
        for path in files:  # every file is checked before any is registered
            try:
                specs.append(load_workflow_file(path, known_types, max_variables_bytes=budget))
            except WorkflowValidationError as exc:
                problems += exc.problems
            except Exception as exc:  # a check that failed itself: still this file's problem
                problems.append(f"{path}: could not be checked: {type(exc).__name__}: {exc}")
        if problems:
            raise WorkflowValidationError("\n".join(problems), problems)
        for spec in specs:
            orch.register(spec)
            out.print(f"registered '{spec.name}' ({len(spec.nodes)} nodes)")
        registered = orch.store.workflow_names()
        for spec in specs:
            for warning in unknown_targets(spec, registered):
                err.print(Text.assemble(("warning: ", "yellow"), warning))


def workflow_files(folder: Path) -> list[Path]:
    """The workflow files (YAML or JSON) in a folder and its sub-folders, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())


@workflows.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def workflows_list(as_json: bool) -> None:
    """List registered workflows."""
    with connected() as orch:
        specs = orch.workflows()
        if as_json:
            print_json([s.model_dump(mode="json") for s in specs])
            return
        for spec in specs:
            schedule = f"  (cron {spec.schedule.cron} {spec.schedule.timezone})" if spec.schedule else ""
            out.print(f"{spec.name}  {len(spec.nodes)} nodes{schedule}  {spec.description}")


@workflows.command("show")
@click.argument("name")
@click.option("--mermaid", is_flag=True, help="print only its Mermaid flowchart (for Markdown)")
@click.option("--json", "as_json", is_flag=True, help="print the workflow as JSON")
def workflows_show(name: str, mermaid: bool, as_json: bool) -> None:
    """Show workflow NAME: its variables, schedule, nodes, output, the workflows it calls, and
    its graph as a Mermaid flowchart (which GitHub and most Markdown viewers draw)."""
    from orchestrator.views.mermaid import workflow_mermaid

    with connected() as orch:
        spec = orch.store.get_workflow(name)
        if as_json:
            print_json(spec.model_dump(mode="json"))
            return
        if mermaid:
            click.echo(workflow_mermaid(spec))
            return
        from orchestrator.views.workflow_view import describe_workflow

        out.print(describe_workflow(spec))
        out.print()
        out.print(Text("Graph (Mermaid):", style="bold"))
        out.print(Text("```mermaid\n" + workflow_mermaid(spec) + "```"))


@workflows.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="delete it even while runs of it are active")
def workflows_delete(name: str, force: bool) -> None:
    """Remove workflow NAME (its runs stay, readable); refused while runs of it are active,
    unless --force."""
    with connected() as orch:
        orch.delete_workflow(name, force=force)
        out.print(Text.assemble("deleted workflow '", name, "'"))
