"""The example workflows that ship with the package (`examples/workflows/` of the repository).

They are installed as package data (`orchestrator/_examples/`, mapped from the repository's
`examples/` in `pyproject.toml`), so `orchestrator demo` and `orchestrator standalone` find
them after a plain `pip install` as well as in a checkout.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from orchestrator.errors import ConfigurationError

_CHECKOUT = Path(__file__).resolve().parents[2] / "examples" / "workflows"


def examples_dir() -> Path:
    """The folder of the example workflow files: the checkout's, else the installed copy."""
    if _CHECKOUT.is_dir():
        return _CHECKOUT
    try:
        with as_file(files("orchestrator._examples") / "workflows") as installed:
            if installed.is_dir():
                return installed
    except ModuleNotFoundError:
        pass
    raise ConfigurationError(
        "the example workflows are not installed with this package: reinstall it "
        "(`pip install celery-orchestrator`) or run from a checkout of the repository"
    )


def example_files() -> list[Path]:
    """Every example workflow file (YAML or JSON), in all sub-folders, sorted by path."""
    root = examples_dir()
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
