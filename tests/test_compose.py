"""docker-compose.yml and the Dockerfile agree with the code.

There is no Docker engine here, so these tests read the files: every variable the services
get is a setting the code reads, the URLs name the compose services, the commands are real
`orchestrator` / `celery` commands, and Flower is behind basic auth. The image's files are
worked out from the Dockerfile's WORKDIR, COPY and `rm` instructions, so that the README's
`docker compose` commands can be checked against them. No network, no sleeps.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
README = ROOT / "README.md"
PYPROJECT = ROOT / "pyproject.toml"

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


@dataclass(frozen=True)
class Copied:
    """A file or folder of the repository that a COPY put into the image."""

    image_path: PurePosixPath
    source: Path
    owner: str | None
    """The user of `COPY --chown=user[:group]`; None: root."""


@dataclass
class ImageState:
    """What the image holds from the repository at some point of the Dockerfile."""

    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    user: str | None = None
    copies: tuple[Copied, ...] = ()

    def find(self, path: PurePosixPath) -> tuple[Copied, Path] | None:
        """The COPY that put `path` into the image (the last one: later layers win) and the
        repository path it came from; None when no COPY did."""
        for copied in reversed(self.copies):
            if path == copied.image_path:
                return copied, copied.source
            if copied.source.is_dir() and copied.image_path in path.parents:
                source = copied.source / path.relative_to(copied.image_path)
                if source.exists():
                    return copied, source
        return None


def image_state(stop_at: Callable[[str, str], bool] | None = None) -> ImageState:
    """Replay the Dockerfile's FROM, WORKDIR, USER, COPY and `RUN rm`, up to the first
    instruction for which `stop_at(keyword, args)` is true, or to the end."""
    state = ImageState()
    for keyword, args in dockerfile_instructions():
        if stop_at is not None and stop_at(keyword, args):
            break
        if keyword == "FROM":
            state = ImageState()  # a new stage: only the last one is the image
        elif keyword == "WORKDIR":
            state.workdir = state.workdir / args
        elif keyword == "USER":
            state.user = args.split(":")[0]
        elif keyword in ("COPY", "ADD"):
            state.copies += tuple(copied_by(args, state.workdir))
        elif keyword == "RUN":
            for gone in removed_by(args, state.workdir):
                state.copies = tuple(
                    c for c in state.copies if c.image_path != gone and gone not in c.image_path.parents
                )
    return state


def copied_by(args: str, workdir: PurePosixPath) -> list[Copied]:
    """What one COPY instruction puts into the image: a folder's contents go into the
    destination; files go into it when it is a folder (ends with `/`, or several sources)."""
    flags: list[str] = []
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.lstrip()
    assert not [f for f in flags if f.startswith("--from")], (
        "COPY --from is not modelled here: extend image_state"
    )
    owner = next((f.partition("=")[2].split(":")[0] for f in flags if f.startswith("--chown=")), None)
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    *patterns, destination = words
    target = workdir / destination
    sources = [source for pattern in patterns for source in sorted(ROOT.glob(pattern.removeprefix("./")))]
    into_folder = destination.endswith("/") or destination == "." or len(sources) > 1
    return [
        Copied(target / source.name if into_folder and not source.is_dir() else target, source, owner)
        for source in sources
    ]


def removed_by(args: str, workdir: PurePosixPath) -> list[PurePosixPath]:
    """The paths that the `rm` commands of a RUN instruction remove."""
    removed = []
    for command in re.split(r"&&|\|\||;", args):
        words = shlex.split(command)
        if words[:1] == ["rm"]:
            removed += [workdir / word for word in words[1:] if not word.startswith("-")]
    return removed


# -- the README's docker compose commands ---------------------------------------------------

# Options of `docker compose` and of its commands that take a value (the next word).
COMPOSE_GLOBAL_VALUE_OPTIONS = {"-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--ansi"}
COMPOSE_VALUE_OPTIONS = {
    *("-e", "--env", "-u", "--user", "-w", "--workdir", "--index", "-t", "--timeout", "--scale"),
    *("-n", "--tail", "--since", "--until", "--name", "--entrypoint", "-l", "--label", "-p"),
    *("--publish", "-v", "--volume", "--pull", "--exit-code-from", "--attach", "--no-attach"),
}
COMPOSE_ONE_SERVICE = {"exec", "run", "port"}  # SERVICE, then a command (or a port)
COMPOSE_SERVICES = {
    *("up", "start", "stop", "restart", "logs", "ps", "pull", "build", "kill", "rm", "create"),
    *("pause", "unpause", "top", "images", "events", "push", "attach"),
}
COMPOSE_NO_SERVICE = {"down", "config", "version", "ls"}


@dataclass(frozen=True)
class ComposeCommand:
    """One `docker compose …` line of the README."""

    line: int
    text: str
    subcommand: str
    services: list[str]
    command: list[str]
    """For `exec` and `run`: the command run in the service's container."""


def readme_compose_commands() -> list[ComposeCommand]:
    """The `docker compose …` lines of the README's code blocks, parsed."""
    found = []
    fenced = False
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and re.match(r"\s*docker(?: |-)compose\b", line):
            argv = shlex.split(line, comments=True)
            words = argv[2:] if argv[:2] == ["docker", "compose"] else argv[1:]
            found.append(parse_compose(number, line.strip(), words))
    return found


def parse_compose(number: int, text: str, words: list[str]) -> ComposeCommand:
    i = 0
    while i < len(words) and words[i].startswith("-"):
        i += 2 if words[i] in COMPOSE_GLOBAL_VALUE_OPTIONS else 1
    assert i < len(words), f"README.md:{number}: `{text}` names no docker compose command"
    subcommand, rest = words[i], words[i + 1 :]
    positional: list[str] = []
    j = 0
    while j < len(rest) and not (positional and subcommand in COMPOSE_ONE_SERVICE):
        if rest[j].startswith("-"):
            j += 2 if rest[j] in COMPOSE_VALUE_OPTIONS else 1
        else:
            positional.append(rest[j])
            j += 1
    if subcommand in COMPOSE_ONE_SERVICE:
        return ComposeCommand(number, text, subcommand, positional[:1], rest[j:])
    if subcommand in COMPOSE_SERVICES:
        return ComposeCommand(number, text, subcommand, positional, [])
    if subcommand in COMPOSE_NO_SERVICE:
        return ComposeCommand(number, text, subcommand, [], [])
    pytest.fail(f"README.md:{number}: `docker compose {subcommand}` is unknown to this test: add it above")


def path_arguments(argv: list[str]) -> list[str]:
    """The values an `orchestrator …` command line gives to parameters of type `click.Path`."""
    path, params = resolve_cli(argv)
    cmd: click.Command = main
    ctx: click.Context | None = None
    for name in path:
        assert isinstance(cmd, click.Group)
        ctx = click.Context(cmd, info_name=name, parent=ctx)
        found = cmd.get_command(ctx, name)
        assert found is not None
        cmd = found
    values: list[str] = []
    for param in cmd.params:
        value = params.get(param.name or "")
        if isinstance(param.type, click.Path) and value is not None:
            values += [str(v) for v in value] if isinstance(value, tuple | list) else [str(value)]
    return values


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


def test_flower_runs_the_cli_flower_command_open_to_the_network_with_a_password() -> None:
    path, params = resolve_cli(command("flower"))
    assert path == ["flower"]
    assert (params["address"], params["port"], params["no_auth"]) == ("0.0.0.0", 5555, False)
    assert environment("flower")["FLOWER_BASIC_AUTH"].endswith("${FLOWER_PASSWORD:?set FLOWER_PASSWORD}")


def test_flower_keeps_its_state_on_a_volume_at_the_images_orch_home() -> None:
    home = re.search(r"^ENV ORCH_HOME=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert home is not None, "the Dockerfile sets no ORCH_HOME"
    mounts = [str(volume).split(":") for volume in services()["flower"].get("volumes", [])]
    assert [name for name, target, *_ in mounts if target == home.group(1)] == ["flower-data"]
    assert "flower-data" in load_compose()["volumes"]


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

    from orchestrator.engine.app import OrchestratorApp

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


def test_dockerfile_gives_pip_install_every_file_pyproject_names() -> None:
    """`pip install .` builds from what was copied: every package folder (examples/ is one,
    `orchestrator._examples`), module and the readme that pyproject.toml names."""
    at_install = image_state(
        lambda kw, args: kw == "RUN" and bool(re.search(r"\bpip install \.(\s|$)", args))
    )
    pyproject = tomllib.loads(PYPROJECT.read_text())
    setuptools = pyproject["tool"]["setuptools"]
    folders = setuptools.get("package-dir", {})
    needed = ["pyproject.toml", str(pyproject["project"]["readme"])]
    needed += [f"{module}.py" for module in setuptools.get("py-modules", [])]
    needed += [folders.get(package, package.replace(".", "/")) for package in setuptools.get("packages", [])]
    missing = [name for name in needed if at_install.find(at_install.workdir / name) is None]
    assert not missing, f"`pip install .` runs in {at_install.workdir} without: {', '.join(missing)}"


def test_dockerfile_puts_the_examples_in_the_workdir_owned_by_the_app_user() -> None:
    image = image_state()
    found = image.find(image.workdir / "examples" / "workflows")
    assert found is not None, f"the image has no examples/workflows in its working directory {image.workdir}"
    copied, source = found
    assert source == ROOT / "examples" / "workflows"
    assert image.user is not None
    assert copied.owner == image.user, f"examples/ belongs to {copied.owner or 'root'}, not {image.user}"


def test_readme_docker_compose_commands_name_services_that_exist() -> None:
    commands = readme_compose_commands()
    assert commands, "the README shows no docker compose command"
    for command in commands:
        if command.subcommand in COMPOSE_ONE_SERVICE:
            assert command.services, f"README.md:{command.line}: `{command.text}` names no service"
        for service in command.services:
            assert service in services(), (
                f"README.md:{command.line}: `{command.text}`: docker-compose.yml has no service {service!r}"
            )


def test_readme_compose_exec_commands_are_real_and_their_paths_are_in_the_image() -> None:
    """`docker compose exec SERVICE orchestrator …` runs in the service's working directory
    (its `working_dir`, else the image's WORKDIR): every path it names is in the image."""
    image = image_state()
    execs = [
        c for c in readme_compose_commands() if c.subcommand == "exec" and c.command[:1] == ["orchestrator"]
    ]
    assert execs, "the README shows no `docker compose exec SERVICE orchestrator …` command"
    for command in execs:
        service = services()[command.services[0]]
        assert service.get("build"), (
            f"README.md:{command.line}: the service does not run this project's image"
        )
        workdir = PurePosixPath(str(service.get("working_dir") or image.workdir))
        for value in path_arguments(command.command):
            in_image = workdir / value
            copied = ", ".join(f"{c.source.relative_to(ROOT)} -> {c.image_path}" for c in image.copies)
            assert image.find(in_image) is not None, (
                f"README.md:{command.line}: `{command.text}` names {value}, but the image has no "
                f"{in_image} (the Dockerfile copies: {copied or 'nothing'})"
            )
