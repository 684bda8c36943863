"""Workflow files: read and parsed safely, then validated (`orchestrator.definitions.spec`).

A file is read only when it is a regular file of at most `MAX_FILE_BYTES`, in UTF-8 (not a
device such as /dev/zero, nor a pipe); JSON is read strictly (`orchestrator.definitions.json_values`);
YAML with duplicate keys, too many aliases or deep nesting is refused while it is parsed.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from orchestrator.definitions.json_values import MAX_DEPTH, Refused, load_json, show
from orchestrator.definitions.spec import KnownTypes, WorkflowSpec, parse_workflow
from orchestrator.errors import WorkflowValidationError

MAX_FILE_BYTES = 1024 * 1024
"""The largest workflow file read."""
MAX_YAML_ALIASES = 100
"""The most YAML aliases (`*name`) a workflow file may use."""


def load_workflow_file(
    path: str | Path, known_types: KnownTypes = None, *, max_variables_bytes: int | None = None
) -> WorkflowSpec:
    """Read and validate a workflow file (`.json` as JSON, any other as YAML).

    Args:
        known_types, max_variables_bytes: as for `parse_workflow`.
    """
    path = Path(path)
    data = parse_text(read_workflow_text(path), path)
    return parse_workflow(data, known_types, source=str(path), max_variables_bytes=max_variables_bytes)


def read_workflow_text(path: Path) -> str:
    """The text of a workflow file: a regular file (not a device such as /dev/zero, nor a
    pipe), at most `MAX_FILE_BYTES`, in UTF-8; else a `WorkflowValidationError` saying so."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise WorkflowValidationError(
                f"{path}: not a regular file: a workflow is read from a file, not a directory, device or pipe"
            )
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)  # a file that grows while read is cut here
    except OSError as exc:
        raise WorkflowValidationError(f"{path}: cannot read the file: {exc.strerror}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise WorkflowValidationError(
            f"{path}: the file is larger than {MAX_FILE_BYTES // 1024} KiB, the most a workflow file "
            "may be: keep data out of workflows (in variables given to runs, or in files nodes read)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise WorkflowValidationError(
            f"{path}: not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} (save the file as UTF-8)"
        ) from None


def parse_text(text: str, path: Path) -> Any:
    """The document in a workflow file's text: JSON for `.json`, else YAML (safely, bounded)."""
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        return load_json(text) if kind == "JSON" else load_yaml(text)
    except Refused as exc:
        raise WorkflowValidationError(f"{path}: {exc}") from None
    except RecursionError:
        raise WorkflowValidationError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError is a ValueError, as are numbers
        message = str(exc).split("; use sys.set_int_max_str_digits()")[0]  # past 4300 digits
        raise WorkflowValidationError(f"{path}: not valid {kind}: {message}") from exc


def load_yaml(text: str) -> Any:
    """YAML with PyYAML's safe loader, refusing duplicate keys, more than `MAX_YAML_ALIASES`
    aliases and nesting past `MAX_DEPTH` (see `_BoundedLoader`)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _Refused(Refused):
    """A YAML file refused while it is parsed, with the line and column."""

    def __init__(self, message: str, mark: yaml.Mark | None = None) -> None:
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        super().__init__(f"{where}{message}")


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with what a workflow file does not need refused while composing:
    duplicate keys (PyYAML keeps the last silently), more than `MAX_YAML_ALIASES` aliases
    (an alias bomb is a few of them), and nesting past `MAX_DEPTH` (the composer recurses)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _Refused(
                    f"more than {MAX_YAML_ALIASES} aliases (*name): write the values out",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value)
            if key in first:
                raise _Refused(
                    f"duplicate key {show(key_node.value)} (first on line {first[key]}): "
                    "the keys of a mapping must be unique",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line + 1
        return node
