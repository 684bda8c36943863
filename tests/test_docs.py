"""The reference pages (docs/) and the README say what the code does.

Every command and option of the CLI is documented, and nothing else is; every setting has
its line in docs/configuration.md; every built-in node type has a section naming all its
params, with an example that validates; every relative link and section citation points at
something that exists; and nothing points at design notes outside the repository.

These tests read files and introspect the code (importing the node types' modules): they
start no service.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from pydantic import BaseModel

import workers
from orchestrator.cli import main
from orchestrator.definitions.spec import parse_workflow
from orchestrator.engine.registry import load_registry
from orchestrator.settings import ENV_VARS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CLI_DOC = DOCS / "cli.md"
CONFIG_DOC = DOCS / "configuration.md"
NODE_TYPES_DOC = DOCS / "node-types.md"

# Variables that are not settings of `orchestrator.settings` but are documented, and the file
# that reads each (so that the docs cannot keep one the code dropped).
TEST_VARS = {"ORCH_TEST_REDIS_URL": "tests/conftest.py", "ORCH_TEST_MONGO_URL": "tests/conftest.py"}
FLOWER_VARS = {
    "FLOWER_BASIC_AUTH": "orchestrator/cli/services.py",
    "FLOWER_USER": "docker-compose.yml",
    "FLOWER_PASSWORD": "docker-compose.yml",
}
OTHER_VARS = TEST_VARS | FLOWER_VARS

# Written in two parts so that this file does not mention them itself.
FORBIDDEN_MENTIONS = ("CONTRACT" + ".md", "../" + "shared")
SKIPPED_DIRS = {".git", ".venv", "build", "dist", "node_modules", ".orchestrator"}


# -- Markdown -------------------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of `language` (```yaml … ```)."""
    found = re.findall(rf"^```{language}[ \t]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [str(block) for block in found]


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def sections(text: str) -> list[tuple[int, str, str]]:
    """(level, title, body) of every heading outside code; the body, code blocks included,
    runs to the next heading of any level."""
    found: list[tuple[int, str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            found.append((len(match[1]), match[2], []))
        elif found:
            found[-1][2].append(line)
    return [(level, title, "\n".join(body)) for level, title, body in found]


def plain_title(title: str) -> str:
    """A heading's text as GitHub shows it: no backticks, links reduced to their text."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "").strip()


def anchors(path: Path) -> set[str]:
    """The `#fragment`s GitHub makes for the headings of a Markdown file."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, title, _ in sections(path.read_text()):
        slug = re.sub(r"[^\w\- ]", "", plain_title(title).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def heading_titles(path: Path) -> set[str]:
    return {plain_title(title).lower() for _, title, _ in sections(path.read_text())}


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of the Markdown links outside code."""
    for number, line in prose_lines(path.read_text()):
        for match in _LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            yield number, match[1]


# -- the command line -----------------------------------------------------------------------


def cli_commands() -> dict[tuple[str, ...], click.Command]:
    """Every command and group of `orchestrator`, by path (`()` is `orchestrator` itself)."""
    found: dict[tuple[str, ...], click.Command] = {}

    def walk(cmd: click.Command, path: tuple[str, ...], parent: click.Context | None) -> None:
        found[path] = cmd
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd, info_name=path[-1] if path else "orchestrator", parent=parent)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, (
                    f"orchestrator {' '.join(path)} lists '{name}' but has no such command"
                )
                walk(sub, (*path, name), ctx)

    walk(main, (), None)
    return found


_COMMAND_HEADING = re.compile(r"^`orchestrator(?P<rest>(?: [^`]*)?)`$")


def documented_commands() -> dict[tuple[str, ...], str]:
    """The commands docs/cli.md has a heading for (`## \\`orchestrator runs show RUN_ID\\``),
    by path, with the body of their section."""
    found: dict[tuple[str, ...], str] = {}
    for level, title, body in sections(CLI_DOC.read_text()):
        match = _COMMAND_HEADING.match(title.strip())
        if level < 2 or match is None:
            continue
        words: list[str] = []
        for word in match["rest"].split():
            if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                break  # an argument (NAME, RUN_ID) or an option
            words.append(word)
        path = tuple(words)
        assert path not in found, f"docs/cli.md documents `orchestrator {' '.join(path)}` twice"
        found[path] = f"{title}\n{body}"
    return found


def command_line(path: tuple[str, ...]) -> str:
    return " ".join(("orchestrator", *path))


def long_name(option: click.Option) -> str:
    names = [*option.opts, *option.secondary_opts]
    return next((n for n in names if n.startswith("--")), names[0])


def option_names(cmd: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for param in cmd.params:
        if isinstance(param, click.Option):
            names |= {*param.opts, *param.secondary_opts}
    return names


def test_every_cli_command_is_documented_in_docs_cli() -> None:
    missing = sorted(command_line(p) for p in set(cli_commands()) - set(documented_commands()))
    assert not missing, f"docs/cli.md has no heading (## `orchestrator …`) for: {', '.join(missing)}"


def test_every_command_docs_cli_documents_exists() -> None:
    extra = sorted(command_line(p) for p in set(documented_commands()) - set(cli_commands()))
    assert not extra, (
        f"docs/cli.md documents commands that orchestrator.cli does not have: {', '.join(extra)}"
    )


def test_every_option_and_argument_is_named_in_its_command_section() -> None:
    documented = documented_commands()
    missing = []
    for path, cmd in cli_commands().items():
        section = documented.get(path, "")
        for param in cmd.params:
            if isinstance(param, click.Option):
                name = long_name(param)
                if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", section):
                    missing.append(f"{command_line(path)} {name}")
            elif param.human_readable_name not in section:
                missing.append(f"{command_line(path)} {param.human_readable_name}")
    assert not missing, f"docs/cli.md does not name, in the command's section: {', '.join(missing)}"


def test_every_option_docs_cli_lists_exists() -> None:
    """The option tables (`| \\`--name VALUE\\` | …`) name only options the command has."""
    commands = cli_commands()
    unknown = []
    for path, section in documented_commands().items():
        if path not in commands:
            continue  # reported by the test above
        known = option_names(commands[path])
        for line in section.splitlines():
            if not line.startswith("| `-"):
                continue
            first_cell = line.split("|")[1]
            for name in re.findall(r"`(-{1,2}[A-Za-z][\w-]*)", first_cell):
                if name not in known:
                    unknown.append(f"{command_line(path)} {name}")
    assert not unknown, f"docs/cli.md lists options that do not exist: {', '.join(unknown)}"


# -- configuration --------------------------------------------------------------------------


def test_every_setting_is_documented_in_docs_configuration() -> None:
    text = CONFIG_DOC.read_text()
    missing = [name for name in (*ENV_VARS, *TEST_VARS) if f"`{name}`" not in text]
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"


def test_docs_name_only_variables_the_code_reads() -> None:
    """A variable in a table of docs/configuration.md, or any `ORCH_…` name in the docs and
    the README, is a setting (or one of the few others, read where noted above)."""
    for name, reader in OTHER_VARS.items():
        assert name in (ROOT / reader).read_text(), (
            f"{name} is documented as read by {reader}, which does not"
        )
    known = set(ENV_VARS) | set(OTHER_VARS)
    unknown = set()
    for number, line in prose_lines(CONFIG_DOC.read_text()):
        if line.startswith("| `"):
            unknown |= {
                f"docs/configuration.md:{number}: {n}" for n in _variables(line.split("|")[1]) - known
            }
    for path in markdown_files():
        for number, line in prose_lines(path.read_text()):
            for name in set(re.findall(r"`(ORCH_[A-Z0-9_]+)`", line)) - known:
                unknown.add(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert not unknown, "the docs name variables the code does not read:\n" + "\n".join(sorted(unknown))


def _variables(cell: str) -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cell))


# -- node types -----------------------------------------------------------------------------


def builtin_types() -> list[str]:
    """The built-in node types: the modules of `workers/`, found without importing them."""
    return sorted(
        info.name for info in pkgutil.iter_modules(workers.__path__) if not info.name.startswith("_")
    )


def type_sections() -> dict[str, str]:
    """The sections of docs/node-types.md whose heading is a type name (`## \\`set\\``)."""
    found = {}
    for level, title, body in sections(NODE_TYPES_DOC.read_text()):
        match = re.fullmatch(r"`([a-z][a-z0-9_]*)`", title.strip())
        if level == 2 and match:
            found[match[1]] = body
    return found


def params_model(type_name: str) -> type[BaseModel]:
    module = importlib.import_module(f"workers.{type_name}")
    model: type[BaseModel] = module.node_type.params
    return model


def test_every_builtin_node_type_has_a_section_in_docs_node_types() -> None:
    documented = type_sections()
    missing = sorted(set(builtin_types()) - set(documented))
    extra = sorted(set(documented) - set(builtin_types()))
    assert not missing, f"docs/node-types.md has no section (## `type`) for: {', '.join(missing)}"
    assert not extra, f"docs/node-types.md has sections for types that are not built in: {', '.join(extra)}"


@pytest.mark.parametrize("type_name", builtin_types())
def test_node_type_section_names_every_param_and_has_an_example(type_name: str) -> None:
    section = type_sections().get(type_name, "")
    fields = [field.alias or name for name, field in params_model(type_name).model_fields.items()]
    missing = [name for name in fields if f"`{name}`" not in section]
    assert not missing, f"docs/node-types.md, section `{type_name}`, does not name: {', '.join(missing)}"
    assert "```yaml" in section, f"docs/node-types.md, section `{type_name}`, has no YAML example"


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def yaml_examples() -> list[tuple[str, str]]:
    return [
        (f"{path.relative_to(ROOT)} #{index + 1}", block)
        for path in sorted(DOCS.glob("*.md"))
        for index, block in enumerate(code_blocks(path.read_text(), "yaml"))
    ]


@pytest.mark.parametrize(("where", "block"), yaml_examples(), ids=[w for w, _ in yaml_examples()])
def test_yaml_examples_in_docs_are_valid(where: str, block: str) -> None:
    """Whole workflows validate (node types included); a node's params without templates
    validate against its type's params model."""
    data = yaml.safe_load(block)
    if not (isinstance(data, dict) and "nodes" in data):
        return  # a fragment, such as a `schedule:`
    registry = load_registry()
    spec = parse_workflow(data, registry.names(), source=where)
    for node in spec.nodes:
        if not _has_template(node.params):
            registry.get(node.type).params.model_validate(node.params)


# -- links and citations --------------------------------------------------------------------


def test_relative_links_in_readme_and_docs_point_at_files_and_headings_that_exist() -> None:
    broken = []
    for path in markdown_files():
        for number, target in links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            file_part, _, fragment = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}:{number}: {target}"
            if not linked.exists() or not linked.is_relative_to(ROOT):
                broken.append(f"{where} (no such file in the repository)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{where} (no heading '#{fragment}' in {linked.relative_to(ROOT)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def repository_files() -> list[Path]:
    """The files that must not point outside the repository: the README, docs, every Python
    file, the Dockerfile and docker-compose.yml."""
    found = [*markdown_files(), ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if not any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in parts):
            found.append(path)
    return found


def test_no_file_mentions_design_notes_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in repository_files()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if any(mention in line for mention in FORBIDDEN_MENTIONS)
    ]
    assert not found, "these lines point at notes outside the repository:\n" + "\n".join(found)


# The README or a page of docs/, then the heading: in quotes inside parentheses, or after
# the word section, in quotes.
_CITATION = re.compile(
    r"(?P<file>README(?:\.md)?|docs/[\w.-]+\.md)(?:'s)?"
    r"(?:\s*\(\"(?P<quoted>[^\"]+)\"\)|,? section \"(?P<plain>[^\"]+)\")"
)


def test_cited_sections_exist() -> None:
    """Section citations in any of those files, and the README's `(see Heading)`, name
    headings that exist."""
    missing = []
    for path in repository_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in _CITATION.finditer(line):
                cited = ROOT / ("README.md" if match["file"].startswith("README") else match["file"])
                title = match["quoted"] or match["plain"]
                if not cited.exists() or title.lower() not in heading_titles(cited):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {match[0]}")
    titles = heading_titles(README)
    for number, line in prose_lines(README.read_text()):
        for title in re.findall(r"\(see ([A-Z][^)`]*)\)", line):
            if title.lower() not in titles:
                missing.append(f"README.md:{number}: (see {title})")
    assert not missing, "these cite sections that do not exist:\n" + "\n".join(missing)
