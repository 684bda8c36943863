"""Hostile input, at run time: no secret reaches a run document, ids are strings, and a forged
message cannot touch a run.

Secrets: variables named like one are refused wherever variables enter a run, whatever their
case and separators; the secret values a worker holds are masked (case-insensitively) in what
its nodes record. Ids: the API refuses anything but strings before MongoDB sees it (an
operator such as `{"$regex": "."}` would match other runs). Messages: one whose run id is not
a string, or that names a node its run does not have, is dropped without touching any run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from orchestrator import Orchestrator, OrchestratorError
from orchestrator.definitions.secrets import looks_secret
from orchestrator.settings import Settings
from tests.conftest import PLUGINS, WorkerProcess, workflow

SECRET = "Sekr3t-Value-42"  # what a worker holds in its environment


@pytest.mark.parametrize(
    "name", ["password", "Api-Key", "private-key", "PASSPHRASE", "credentials", "auth", "authToken",
             "db_password", "TWELVEDATA_API_KEY", "client_secret", "x.access_key"],
)  # fmt: skip
def test_names_like_secrets_whatever_their_case_and_separators_are_secrets(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize("name", ["author", "apiary", "keyboard", "symbol", "monkey", "period"])
def test_ordinary_names_are_not_secrets(name: str) -> None:
    assert not looks_secret(name)


@pytest.mark.parametrize(
    "variables", [{"Api-Key": "x"}, {"nested": {"private-key": "x"}}, {"list": [{"auth": 1}]}]
)
def test_a_trigger_with_a_variable_named_like_a_secret_is_refused(
    orch: Orchestrator, variables: dict[str, Any]
) -> None:
    orch.register(workflow("Plain", {"id": "a", "type": "set"}))
    with pytest.raises(OrchestratorError, match="looks like a secret"):
        orch.trigger("Plain", variables)
    assert orch.list_runs(workflow="Plain") == []


def test_a_workflow_that_allows_secret_variables_takes_them(orch: Orchestrator) -> None:
    orch.register(workflow("Allowed", {"id": "a", "type": "set"}, allow_secret_variables=True))
    assert orch.get_run(orch.trigger("Allowed", {"api_key": "x"})).variables == {"api_key": "x"}


def test_variables_past_the_run_documents_budget_are_refused_naming_them(orch: Orchestrator) -> None:
    orch.register(workflow("Big Vars", {"id": "a", "type": "set"}))
    with pytest.raises(OrchestratorError, match=r"its variables are .* KiB.*ORCH_MAX_RUN_DOC_BYTES"):
        orch.trigger("Big Vars", {"blob": "x" * (2 * 1024 * 1024)})


@pytest.mark.parametrize(
    "call",
    [
        lambda o: o.get_run({"$regex": "."}),
        lambda o: o.list_runs(workflow={"$regex": "."}),
        lambda o: o.cancel({"$regex": "."}),
        lambda o: o.trigger({"$regex": "."}),
        lambda o: o.run_tree(["a"]),
    ],
)
def test_ids_that_are_not_strings_are_refused_before_mongodb_sees_them(orch: Orchestrator, call: Any) -> None:
    orch.register(workflow("Victim", {"id": "a", "type": "set"}))
    victim = orch.store.create_run(
        {"_id": "victim", "workflow": "Victim", "status": "pending", "nodes": {"a": {"status": "pending"}}}
    )
    assert victim[1]
    with pytest.raises(OrchestratorError, match="must be a string"):
        call(orch)
    assert orch.store.get_run_document("victim")["status"] == "pending"  # untouched


@pytest.mark.usefixtures("worker")
def test_forged_messages_are_dropped_and_leave_every_run_alone(orch: Orchestrator) -> None:
    orch.register(workflow("Healthy", {"id": "nap", "type": "sleep", "params": {"seconds": 1}}))
    run_id = orch.trigger("Healthy")
    orch.app.signature(
        "workers.set", kwargs={"run_id": {"$regex": "."}, "node": {"id": "nap", "type": "set"}}
    ).apply_async()
    orch.app.signature(
        "workers.set", kwargs={"run_id": run_id, "node": {"id": "ghost", "type": "set"}}
    ).apply_async()
    run = orch.wait(run_id, timeout=30)
    assert run.status == "finished" and set(run.nodes) == {"nap"}


@pytest.fixture
def secret_worker(settings: Settings, spare_redis_url: str) -> Iterator[Orchestrator]:
    """A worker whose environment holds a secret, on a broker of its own."""
    own = Settings.model_validate(
        {"REDIS_URL": spare_redis_url, "MONGO_URL": settings.mongo_url, "ORCH_PLUGINS": PLUGINS,
         "ORCH_HOME": settings.home}
    )  # fmt: skip
    redis.Redis.from_url(spare_redis_url).flushdb()
    with Orchestrator(settings=own) as orch:
        worker = WorkerProcess(own, orch, "--pool=prefork", "--concurrency=1", name="secrets",
                               env={"PAYMENTS_SERVICE_TOKEN": SECRET}).wait_ready()  # fmt: skip
        try:
            yield orch
        finally:
            worker.stop()
            log = worker.log.read_text()
            assert SECRET.lower() not in log.lower(), "the secret reached the worker's log"
            redis.Redis.from_url(spare_redis_url).flushdb()


def test_secret_values_a_worker_holds_are_masked_in_outputs_and_errors_whatever_their_case(
    secret_worker: Orchestrator,
) -> None:
    orch = secret_worker
    orch.register(
        workflow(
            "Leaky",
            {"id": "echo", "type": "set", "params": {"said": f"the key is {SECRET.lower()}!"}},
            {"id": "boom", "type": "fail", "params": {"message": f"cannot use {SECRET.upper()}"}},
        )
    )
    run = orch.wait(orch.trigger("Leaky"), timeout=30)
    doc = str(orch.store.get_run_document(run.id)).lower()
    assert SECRET.lower() not in doc
    assert run.nodes["echo"].output == {"said": "the key is ***!"}
    assert "cannot use ***" in (run.nodes["boom"].error or "")


@pytest.mark.usefixtures("worker")
def test_a_workflow_output_too_large_for_its_run_document_ends_the_run_as_error_saying_so(
    orch: Orchestrator,
) -> None:
    orch.register(
        workflow(
            "Huge Output",
            {"id": "b", "type": "big", "params": {"kib": 400}},
            output={
                "once": "{{ nodes.b.output }}",
                "twice": "{{ nodes.b.output }}",
                "more": "{{ nodes.b.output }}",
            },
        )
    )
    run = orch.run("Huge Output", timeout=60)
    assert run.status == "error" and run.nodes["b"].status == "finished"
    assert "the workflow's output is" in (run.error or "") and "ORCH_MAX_RUN_DOC_BYTES" in (run.error or "")
    assert run.results is None
