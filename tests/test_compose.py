"""docker-compose.yml and the Dockerfile agree with the code.

There is no Docker engine here, so these tests read the files: every variable the services
get is a setting the code reads, the URLs name the compose services, the commands are real
`orchestrator` / `celery` commands, and Flower is behind basic auth. No network, no sleeps.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

import orchestrator
from orchestrator.cli import main
from orchestrator.settings import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

APP_SERVICES = ("worker", "beat", "flower")
SECRETS = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "TWELVEDATA_API_KEY")
WORKER_APP_MODULE = "orchestrator.worker_app"


# -- helpers --------------------------------------------------------------------------------


class MissingVariable(Exception):
    """A `${NAME:?message}` whose variable is not set: docker compose refuses the file."""


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, host: Mapping[str, str]) -> str:
    """Docker compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `$$`."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = host.get(name)
        if op is None:
            return current or ""
        unset = current is None or (op.startswith(":") and current == "")
        if not unset:
            return str(current)
        if op.endswith("-"):
            return str(arg)
        raise MissingVariable(f"{name}: {arg}")

    return _INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves anchors and `<<` merge keys
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found = load_compose().get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services"
    return found


def environment(service: str) -> dict[str, str]:
    """The service's environment as written (before interpolation), list or mapping form."""
    raw = services()[service].get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.partition("=") for item in raw]
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def shared_environment(service: str) -> dict[str, str]:
    """The part of a service's environment that is not a Flower option."""
    return {k: v for k, v in environment(service).items() if not k.startswith("FLOWER_")}


def command(service: str) -> list[str]:
    raw = services()[service].get("command")
    assert raw, f"service {service!r} has no command"
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def option_value(argv: list[str], *names: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in argv, or None."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.partition("=")[2]
    return None


def resolve_cli(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse an `orchestrator ...` command line with click, without running it.

    Returns the subcommand path and the parsed params; an unknown command, an unknown
    option or a bad value fails the test.
    """
    assert argv and argv[0] == "orchestrator", f"not an orchestrator command: {argv}"
    cmd: click.Command = main
    name, rest, parent = "orchestrator", list(argv[1:]), None
    path: list[str] = []
    while isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=name, parent=parent)
        assert rest, f"{shlex.join(argv)}: names no subcommand of {' '.join(['orchestrator', *path])}"
        name, rest = rest[0], rest[1:]
        sub = cmd.get_command(ctx, name)
        if sub is None:
            pytest.fail(f"{shlex.join(argv)}: '{name}' is not an orchestrator command")
        cmd, parent = sub, ctx
        path.append(name)
    try:
        leaf = cmd.make_context(name, rest, parent=parent)
    except click.UsageError as exc:
        pytest.fail(f"{shlex.join(argv)}: {exc.format_message()}")
    return path, leaf.params


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    found = []
    for line in lines:
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            found.append((keyword.upper(), args.strip()))
    return found


# -- docker-compose.yml ---------------------------------------------------------------------


def test_compose_defines_redis_mongo_worker_beat_and_flower() -> None:
    assert {"redis", "mongo", "worker", "beat", "flower"} <= set(services())


def test_compose_app_services_share_one_environment() -> None:
    worker = environment("worker")
    for service in APP_SERVICES:
        assert shared_environment(service) == worker, f"{service} reads a different environment"
    assert {"REDIS_URL", "MONGO_URL", "ORCH_MAX_DEPTH", *SECRETS} <= set(worker)


def test_compose_services_read_only_known_variables() -> None:
    for service in APP_SERVICES:
        for name in environment(service):
            known = name in ENV_VARS or (service == "flower" and name.startswith("FLOWER_"))
            assert known, f"{service} sets {name}, which orchestrator.settings does not read"


def test_compose_environment_is_valid_settings_with_an_empty_host() -> None:
    values = {name: interpolate(value, {}) for name, value in environment("worker").items()}
    settings = Settings.model_validate(values)  # these win over the process env and any .env
    assert settings.max_depth == 8
    assert settings.mongo_database == "orchestrator"


def test_compose_points_the_app_at_the_redis_and_mongo_services() -> None:
    env = environment("worker")
    redis_url, mongo_url = urlsplit(env["REDIS_URL"]), urlsplit(env["MONGO_URL"])
    assert (redis_url.scheme, redis_url.hostname, redis_url.port or 6379) == ("redis", "redis", 6379)
    assert (mongo_url.scheme, mongo_url.hostname, mongo_url.port or 27017) == ("mongodb", "mongo", 27017)
    assert mongo_url.path.strip("/"), "MONGO_URL names no database"
    assert services()["redis"]["image"].startswith("redis:7")
    assert services()["mongo"]["image"] == "mongo:7"


def test_compose_passes_secrets_through_from_the_host() -> None:
    env = environment("worker")
    for name in SECRETS:
        assert env[name] == f"${{{name}:-}}", f"{name} must come from the host, not the file"
        assert interpolate(env[name], {name: "from-host"}) == "from-host"
        assert interpolate(env[name], {}) == ""


def test_compose_keeps_mongo_data_in_a_named_volume() -> None:
    named = set(load_compose().get("volumes") or {})
    mounts = [str(v).split(":") for v in services()["mongo"].get("volumes", [])]
    assert any(source in named and target == "/data/db" for source, target, *_ in mounts)


def test_compose_app_services_wait_for_healthy_redis_and_mongo() -> None:
    for backing in ("redis", "mongo"):
        assert services()[backing].get("healthcheck", {}).get("test"), f"{backing} has no healthcheck"
    for service in APP_SERVICES:
        depends_on = services()[service].get("depends_on")
        assert isinstance(depends_on, dict), f"{service}: depends_on needs conditions"
        for backing in ("redis", "mongo"):
            assert depends_on.get(backing, {}).get("condition") == "service_healthy", (service, backing)


def test_compose_app_services_run_the_project_image() -> None:
    for service in APP_SERVICES:
        assert services()[service].get("build"), f"{service} is not built from the Dockerfile"


@pytest.mark.parametrize(("service", "subcommand"), [("worker", ["worker"]), ("beat", ["beat"])])
def test_compose_worker_and_beat_run_real_cli_commands(service: str, subcommand: list[str]) -> None:
    path, _ = resolve_cli(command(service))
    assert path == subcommand


def test_compose_worker_runs_four_processes() -> None:
    _, params = resolve_cli(command("worker"))
    assert params["concurrency"] == 4


def test_flower_runs_against_the_worker_app_module() -> None:
    argv = command("flower")
    assert argv[0] == "celery"
    assert "flower" in argv
    assert option_value(argv, "-A", "--app") == WORKER_APP_MODULE


def test_flower_publishes_port_5555() -> None:
    listens_on = option_value(command("flower"), "--port") or environment("flower").get("FLOWER_PORT", "5555")
    assert listens_on == "5555"
    published = []
    for port in services()["flower"].get("ports", []):
        if isinstance(port, dict):
            published.append((str(port.get("published")), str(port.get("target"))))
        else:
            *_, host, container = str(port).split("/")[0].split(":")
            published.append((host, container))
    assert ("5555", "5555") in published


def test_flower_api_requires_basic_auth_and_a_password() -> None:
    env = environment("flower")
    auth = option_value(command("flower"), "--basic-auth") or env.get("FLOWER_BASIC_AUTH")
    assert auth, "Flower runs without --basic-auth / FLOWER_BASIC_AUTH"
    assert interpolate(env.get("FLOWER_UNAUTHENTICATED_API", ""), {}).lower() in ("", "0", "false")
    with pytest.raises(MissingVariable, match="FLOWER_PASSWORD"):
        interpolate(auth, {})
    assert interpolate(auth, {"FLOWER_PASSWORD": "s3cret"}) == "admin:s3cret"
    assert interpolate(auth, {"FLOWER_USER": "ops", "FLOWER_PASSWORD": "s3cret"}) == "ops:s3cret"


def test_flower_reads_only_variables_it_knows() -> None:
    """Flower exits on a FLOWER_* variable that names none of its options."""
    from flower.options import options  # type: ignore[import-untyped]

    known = set(options._options)  # tornado keeps option names normalised with '-'
    for name in environment("flower"):
        if name.startswith("FLOWER_"):
            option = name.removeprefix("FLOWER_").lower()
            assert {option, option.replace("_", "-")} & known, f"{name} is not a Flower option"


# -- the celery -A target -------------------------------------------------------------------


def test_worker_app_module_builds_the_app_with_every_task_without_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.app.utils import find_app

    from orchestrator.app import OrchestratorApp

    monkeypatch.setenv("REDIS_URL", "redis://compose-test.invalid:6379/0")
    monkeypatch.setenv("MONGO_URL", "mongodb://compose-test.invalid:27017/orchestrator")

    def no_network(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"importing {WORKER_APP_MODULE} opened a connection: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    # A fresh import, undone afterwards, so the module reads this environment.
    monkeypatch.delitem(sys.modules, WORKER_APP_MODULE, raising=False)
    monkeypatch.delattr(orchestrator, "worker_app", raising=False)

    app = find_app(WORKER_APP_MODULE)  # what `celery -A orchestrator.worker_app` does
    monkeypatch.setitem(sys.modules, WORKER_APP_MODULE, sys.modules[WORKER_APP_MODULE])
    monkeypatch.setattr(orchestrator, "worker_app", sys.modules[WORKER_APP_MODULE], raising=False)

    assert isinstance(app, OrchestratorApp)
    assert app is sys.modules[WORKER_APP_MODULE].app
    assert app.conf.broker_url == "redis://compose-test.invalid:6379/0"
    assert app.settings.mongo_url == "mongodb://compose-test.invalid:27017/orchestrator"
    assert "workers.set" in app.tasks


# -- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_installs_the_project_on_python_311_slim() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(kw == "RUN" and re.search(r"\bpip install \.(\s|$)", args) for kw, args in instructions)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [args.split(":")[0] for kw, args in dockerfile_instructions() if kw == "USER"]
    assert users, "the image runs as root"
    assert users[-1] not in ("root", "0")


def test_dockerfile_default_command_is_a_real_cli_command() -> None:
    instructions = dockerfile_instructions()
    assert not [args for kw, args in instructions if kw == "ENTRYPOINT"]
    cmds = [args for kw, args in instructions if kw == "CMD"]
    assert cmds, "the Dockerfile has no CMD"
    raw = cmds[-1]
    argv = json.loads(raw) if raw.startswith("[") else shlex.split(raw)
    path, _ = resolve_cli(argv)
    assert path == ["worker"]
