"""Workflow versions: each registered definition kept under its digest, so that the messages
of a run carry ids, not specs, and a worker reads the exact definition a run started with.

A run document records its workflow's `spec_digest` when it is created. The engine's steps
that need the definition (the run's end, the reconciler, a chain's next segment) read it by
that digest from `workflow_versions`, through a per-process cache: a version never changes,
so it is read once per process, and a workflow edited while a run goes on does not change
that run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from orchestrator.definitions.spec import WorkflowSpec
from orchestrator.errors import WorkflowNotFound

Document = dict[str, Any]
CACHE_SIZE = 256


def spec_digest(spec: WorkflowSpec) -> str:
    """The digest that names this exact definition (its JSON, keys sorted)."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def save_version(versions: Collection[Document], spec: WorkflowSpec) -> str:
    """Keep the definition under its digest (once); the digest."""
    digest = spec_digest(spec)
    with contextlib.suppress(DuplicateKeyError):  # registered before, unchanged
        versions.insert_one({"_id": digest, "name": spec.name, "spec": spec.model_dump(mode="json")})
    return digest


class SpecCache:
    """The workflow definitions this process has read, by digest (least recently used out)."""

    def __init__(self, versions: Collection[Document], registered: Collection[Document]) -> None:
        self._versions = versions
        self._registered = registered
        self._specs: OrderedDict[str, WorkflowSpec] = OrderedDict()
        self._lock = threading.Lock()

    def of_run(self, doc: Mapping[str, Any]) -> WorkflowSpec:
        """The definition run `doc` started with; for a run stored before digests were kept,
        the workflow as registered now.

        Raises:
            WorkflowNotFound: neither that version nor a workflow of that name is stored.
        """
        digest = doc.get("spec_digest")
        if isinstance(digest, str):
            spec = self.by_digest(digest)
            if spec is not None:
                return spec
        found = self._registered.find_one({"_id": doc["workflow"]})
        if found is None:
            raise WorkflowNotFound(
                f"workflow '{doc['workflow']}' of run {doc['_id']} is no longer registered"
            )
        return WorkflowSpec.model_validate(found["spec"])

    def by_digest(self, digest: str) -> WorkflowSpec | None:
        """The definition with this digest, or None when it was never stored."""
        with self._lock:
            spec = self._specs.get(digest)
            if spec is not None:
                self._specs.move_to_end(digest)
                return spec
        found = self._versions.find_one({"_id": digest})
        if found is None:
            return None
        spec = WorkflowSpec.model_validate(found["spec"])
        with self._lock:
            self._specs[digest] = spec
            while len(self._specs) > CACHE_SIZE:
                self._specs.popitem(last=False)
        return spec
