"""Workflows and runs as Mermaid charts, and the `workflows show` view; no services needed.

Each chart is read back two ways: by `structure`, a strict reader of the few line forms the
charts are made of (a stray quote or line break from a name makes a line it does not know),
and, when npm and node are at hand, by Mermaid's own parser (mermaid 11 under jsdom, installed
once into pytest's cache directory), which must see the same nodes, shapes, labels, edges and
classes. Without npm or node those Mermaid tests are skipped and say why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.definitions.spec import WorkflowSpec, parse_workflow
from orchestrator.engine.child_runs import called_workflows
from orchestrator.store.models import Run
from orchestrator.views.mermaid import STATUS_CLASSES, escape_label, mermaid_id, run_mermaid, workflow_mermaid
from orchestrator.views.workflow_view import describe_workflow, next_firings

NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # the day before Europe's clocks go forward

# ---------------------------------------------------------------------------------------------
# Workflows


def spec_of(*nodes: dict[str, Any], **extra: Any) -> WorkflowSpec:
    return parse_workflow({"name": "W", "nodes": list(nodes), **extra})


def line() -> WorkflowSpec:
    return spec_of(
        {"id": "fetch", "type": "market_data"},
        {"id": "analyze", "type": "indicators", "after": ["fetch"]},
        {"id": "report", "type": "report", "after": ["analyze"]},
    )


def fan_out_fan_in() -> WorkflowSpec:
    return spec_of(
        {"id": "start", "type": "set"},
        {"id": "left", "type": "sleep", "after": ["start"]},
        {"id": "right", "type": "sleep", "after": ["start"]},
        {"id": "join", "type": "merge", "after": ["left", "right"]},
    )


def branching() -> WorkflowSpec:
    return spec_of(
        {"id": "fetch", "type": "market_data"},
        {"id": "check", "type": "condition", "after": ["fetch"], "params": {"if": "{{ true }}"}},
        {
            "id": "alert",
            "type": "run_workflow",
            "after": ["check.yes"],
            "params": {"workflow": "Alert", "mode": "fire_and_forget"},
        },
        {"id": "log", "type": "set", "after": ["check.no"]},
    )


def calling() -> WorkflowSpec:
    return spec_of(
        {"id": "fixed", "type": "run_workflow", "params": {"workflow": "Fetch Data"}},
        {"id": "chosen", "type": "run_workflow", "params": {"workflow": "{{ target }}"}},
        {
            "id": "each",
            "type": "parameter_loop",
            "params": {
                "values": ["BTCUSD", "ETHUSD"],
                "body": {"type": "run_workflow", "params": {"workflow": "Fetch Data"}},
            },
        },
        {
            "id": "scores",
            "type": "parameter_loop",
            "params": {"values": [1, 2], "body": {"type": "indicators", "params": {}}},
        },
    )


HOSTILE = 'Evil "] --> n_x; click n_a "javascript:alert(1)" <script>alert(1)</script> #quot; |[bold]'


def hostile() -> WorkflowSpec:
    """A stored workflow read back unchecked: every text holds what could end a label."""
    return WorkflowSpec.model_validate(
        {
            "name": HOSTILE,
            "description": "two\nlines --> n_x",
            "nodes": [
                {
                    "id": "call",
                    "type": "run_workflow",
                    "params": {"workflow": HOSTILE},
                    "description": 'line one\nline "two" --> n_x[evil]\r\nend',
                },
                {"id": "pick", "type": 'gate"]{x}', "after": ["call"]},
                {"id": "end", "type": "set", "after": ['pick.a"|b -->c']},
            ],
        }
    )


SAMPLES = {
    "line": line,
    "fan-out/fan-in": fan_out_fan_in,
    "branches": branching,
    "calls": calling,
    "hostile": hostile,
}

# ---------------------------------------------------------------------------------------------
# Reading a chart back


@dataclass
class Chart:
    """A chart as read back: nodes (id -> (shape, label lines)), edges, class definitions and
    each node's class."""

    nodes: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    edges: list[tuple[str, str, str | None]] = field(default_factory=list)
    class_defs: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)


SHAPES = {"[": "square", "{": "diamond", "[[": "subroutine", "([": "stadium"}
NODE_LINE = re.compile(r'    (n_\w+)(\[\[|\(\[|\{|\[)"([^"\n]*)"(\]\]|\]\)|\}|\])')
EDGE_LINE = re.compile(r'    (n_\w+) -->(?:\|"([^"\n]*)"\|)? (n_\w+)')
CLASS_DEF_LINE = re.compile(r"    classDef (\w+) ([\w:#,-]+)")
CLASS_LINE = re.compile(r"    class (n_\w+) (\w+)")
CLOSING = {"[": "]", "{": "}", "[[": "]]", "([": "])"}


def decode(label: str) -> str:
    """A label's text as shown: numeric entities (`#34;`) decoded."""
    return re.sub(r"#(\d+);", lambda m: chr(int(m[1])), label)


def structure(chart: str) -> Chart:
    """The chart read line by line; any line of another form fails the test."""
    assert chart.endswith("\n")
    first, *lines = chart.removesuffix("\n").split("\n")
    assert first == "flowchart TD"
    read = Chart()
    for text in lines:
        if match := NODE_LINE.fullmatch(text):
            node_id, opening, label, closing = match.groups()
            assert CLOSING[opening] == closing, text
            assert node_id not in read.nodes, f"node {node_id} defined twice"
            read.nodes[node_id] = (SHAPES[opening], [decode(part) for part in label.split("<br>")])
        elif match := EDGE_LINE.fullmatch(text):
            start, branch, end = match.groups()
            assert {start, end} <= read.nodes.keys(), f"edge to an undefined node: {text}"
            read.edges.append((start, end, decode(branch) if branch is not None else None))
        elif match := CLASS_DEF_LINE.fullmatch(text):
            read.class_defs[match[1]] = match[2]
        elif match := CLASS_LINE.fullmatch(text):
            assert match[1] in read.nodes and match[2] in read.class_defs, text
            read.classes[match[1]] = match[2]
        else:
            raise AssertionError(f"a line of no known form: {text!r}")
    return read


# ---------------------------------------------------------------------------------------------
# Charts of workflows


def test_workflow_mermaid_of_a_line_has_one_rectangle_per_node_and_an_edge_per_dependency() -> None:
    chart = structure(workflow_mermaid(line()))
    assert chart.nodes == {
        "n_fetch": ("square", ["fetch", "market_data"]),
        "n_analyze": ("square", ["analyze", "indicators"]),
        "n_report": ("square", ["report", "report"]),
    }
    assert chart.edges == [("n_fetch", "n_analyze", None), ("n_analyze", "n_report", None)]
    assert chart.classes == {}


def test_workflow_mermaid_of_a_fan_out_and_fan_in_draws_every_edge_once() -> None:
    chart = structure(workflow_mermaid(fan_out_fan_in()))
    assert sorted(chart.edges) == sorted(
        [
            ("n_start", "n_left", None),
            ("n_start", "n_right", None),
            ("n_left", "n_join", None),
            ("n_right", "n_join", None),
        ]
    )


def test_workflow_mermaid_of_a_condition_is_a_rhombus_with_edges_labelled_by_branch() -> None:
    chart = structure(workflow_mermaid(branching()))
    assert chart.nodes["n_check"] == ("diamond", ["check", "condition"])
    assert ("n_check", "n_alert", "yes") in chart.edges
    assert ("n_check", "n_log", "no") in chart.edges
    assert ("n_fetch", "n_check", None) in chart.edges


def test_workflow_mermaid_when_a_node_of_another_type_is_followed_by_branch_then_it_is_a_rhombus() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "name": "W",
            "nodes": [{"id": "gate", "type": "vote"}, {"id": "go", "type": "set", "after": "gate.ok"}],
        }
    )
    chart = structure(workflow_mermaid(spec))
    assert chart.nodes["n_gate"][0] == "diamond"
    assert chart.edges == [("n_gate", "n_go", "ok")]


def test_workflow_mermaid_of_run_workflow_is_a_subroutine_naming_a_literal_target_only() -> None:
    chart = structure(workflow_mermaid(calling()))
    assert chart.nodes["n_fixed"] == ("subroutine", ["fixed", "run_workflow → Fetch Data"])
    assert chart.nodes["n_chosen"] == ("subroutine", ["chosen", "run_workflow"])


def test_workflow_mermaid_of_parameter_loop_is_a_stadium_with_its_body() -> None:
    chart = structure(workflow_mermaid(calling()))
    assert chart.nodes["n_each"] == ("stadium", ["each", "parameter_loop ↻ run_workflow → Fetch Data"])
    assert chart.nodes["n_scores"] == ("stadium", ["scores", "parameter_loop ↻ indicators"])


def test_workflow_mermaid_of_a_hostile_workflow_keeps_every_text_inside_its_label() -> None:
    chart = structure(workflow_mermaid(hostile()))
    assert list(chart.nodes) == ["n_call", "n_pick", "n_end"]
    shape, label = chart.nodes["n_call"]
    assert shape == "subroutine"
    assert label[1] == "run_workflow → " + HOSTILE[:59] + "…"
    assert label[2] == 'line one line "two" --> n_x[evil] end'  # line breaks made spaces
    assert chart.nodes["n_pick"] == ("diamond", ["pick", 'gate"]{x}'])
    assert chart.edges == [("n_call", "n_pick", None), ("n_pick", "n_end", 'a"|b -->c')]


@pytest.mark.parametrize(
    "text", [HOSTILE, "a\nb\r\nc\u2028d", "\x1b[31m\u202eevil", "#quot; &amp; %%{init: {}}%%", "`**md**`"]
)
def test_escape_label_when_text_is_hostile_then_only_safe_characters_and_entities_remain(text: str) -> None:
    escaped = escape_label(text, limit=1000)
    assert re.fullmatch(r"([\w .,/()+*=!?@$%~'-]|#\d+;)*", escaped), escaped
    assert decode(escaped) == " ".join("".join(" " if not c.isprintable() else c for c in text).split())


def test_mermaid_id_when_the_id_is_not_a_node_id_then_it_is_safe_and_distinct() -> None:
    assert mermaid_id("fetch") == "n_fetch"
    assert mermaid_id("end") == "n_end"  # `end` alone would close a subgraph
    odd = [mermaid_id(text) for text in ("a b", "a_b", "a-b", 'x"]', "Ω")]
    assert all(re.fullmatch(r"n_\w+", found, re.ASCII) for found in odd)
    assert len(set(odd)) == len(odd)


# ---------------------------------------------------------------------------------------------
# Charts of runs

STARTED = datetime(2026, 3, 28, 8, 0, tzinfo=UTC)


def run_of(nodes: dict[str, dict[str, Any]], workflow: str = "W") -> Run:
    doc = {"_id": "r1", "workflow": workflow, "status": "running", "created_at": STARTED, "nodes": nodes}
    return Run.model_validate(doc)


def ended(status: str, seconds: float) -> dict[str, Any]:
    return {"status": status, "started_at": STARTED, "finished_at": STARTED + timedelta(seconds=seconds)}


def test_run_mermaid_gives_each_node_its_status_class_and_duration() -> None:
    run = run_of(
        {
            "fetch": ended("finished", 1.5),
            "check": ended("finished", 0.01),
            "alert": ended("failed", 75),
            "log": {"status": "skipped"},
        }
    )
    chart = structure(run_mermaid(branching(), run))
    assert chart.class_defs == STATUS_CLASSES
    assert chart.classes == {
        "n_fetch": "finished",
        "n_check": "finished",
        "n_alert": "failed",
        "n_log": "skipped",
    }
    assert chart.nodes["n_fetch"] == ("square", ["fetch", "market_data", "finished · 1.50 s"])
    assert chart.nodes["n_alert"][1][-1] == "failed · 75.0 s"
    assert chart.nodes["n_log"][1][-1] == "skipped"
    assert ("n_check", "n_alert", "yes") in chart.edges


def test_run_mermaid_colours_every_status() -> None:
    statuses = list(STATUS_CLASSES)
    spec = spec_of(*({"id": f"n{i}", "type": "set"} for i in range(len(statuses))))
    run = run_of({f"n{i}": {"status": status} for i, status in enumerate(statuses)})
    chart = structure(run_mermaid(spec, run))
    assert chart.classes == {f"n_n{i}": status for i, status in enumerate(statuses)}
    fills = {status: style.split(",")[0] for status, style in chart.class_defs.items()}
    assert fills["finished"] != fills["failed"] != fills["running"] != fills["waiting"]
    assert fills["pending"] == "fill:#ffffff"


def test_run_mermaid_without_its_workflow_shows_the_run_nodes_without_edges() -> None:
    run = run_of({"fetch": ended("finished", 2), 'odd"] --> x': {"status": "pending"}})
    chart = structure(run_mermaid(None, run))
    assert chart.edges == []
    assert chart.nodes["n_fetch"] == ("square", ["fetch", "finished · 2.00 s"])
    odd = mermaid_id('odd"] --> x')
    assert chart.nodes[odd] == ("square", ['odd"] --> x', "pending"])
    assert chart.classes == {"n_fetch": "finished", odd: "pending"}


def test_run_mermaid_when_the_workflow_changed_then_nodes_of_either_are_shown() -> None:
    run = run_of({"fetch": ended("finished", 1), "gone": ended("failed", 1)})
    chart = structure(run_mermaid(line(), run))
    assert list(chart.nodes) == ["n_fetch", "n_analyze", "n_report", "n_gone"]
    assert chart.nodes["n_analyze"][1] == ["analyze", "indicators"]  # not in the run: no status
    assert chart.classes == {"n_fetch": "finished", "n_gone": "failed"}


# ---------------------------------------------------------------------------------------------
# Mermaid's own parser (mermaid 11 under jsdom, through node)

MERMAID_PACKAGES = ("mermaid@11", "jsdom@26")

PARSE_SCRIPT = r"""
import { JSDOM } from "jsdom";
const dom = new JSDOM("<!doctype html><html><body></body></html>", { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
// Mermaid keeps entities encoded until it renders: `#34;` is held as `ﬂ°°34¶ß`.
const decode = (text) => (text ?? "")
  .replace(/ﬂ°°(\d+)¶ß/g, (_, code) => String.fromCodePoint(Number(code)))
  .replace(/ﬂ°(\w+)¶ß/g, (_, name) => `&${name};`);
let input = "";
for await (const chunk of process.stdin) input += chunk;
const answers = [];
for (const text of JSON.parse(input)) {
  try {
    await mermaid.parse(text);
    const { db } = await mermaid.mermaidAPI.getDiagramFromText(text);
    const nodes = {};
    for (const [id, vertex] of db.getVertices()) {
      nodes[id] = { type: vertex.type, text: decode(vertex.text), classes: vertex.classes };
    }
    const edges = db.getEdges().map((e) => [e.start, e.end, decode(e.text)]);
    const classes = Object.fromEntries([...db.getClasses()].map(([name, c]) => [name, c.styles]));
    answers.push({ ok: true, nodes, edges, classes });
  } catch (error) {
    answers.push({ ok: false, error: String(error?.message ?? error) });
  }
}
process.stdout.write(JSON.stringify(answers));
"""


@pytest.fixture(scope="session")
def mermaid_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with mermaid and jsdom installed, kept in pytest's cache between sessions."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to check charts with Mermaid's parser")
    cache = getattr(request.config, "cache", None)
    where = cache.mkdir("mermaid-parser") if cache is not None else tmp_path_factory.mktemp("mermaid")
    if not (where / "node_modules" / "mermaid").is_dir() or not (where / "node_modules" / "jsdom").is_dir():
        command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(where), *MERMAID_PACKAGES]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of mermaid took over 180 s (no registry access?)")
        if done.returncode != 0:
            pytest.skip(f"npm install of mermaid failed: {done.stderr.strip()[-300:]}")
    (where / "parse.mjs").write_text(PARSE_SCRIPT)
    return where


def mermaid_parse(where: Path, charts: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["node", str(where / "parse.mjs")],
        input=json.dumps(charts),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=where,
    )
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    return answers


def as_mermaid_sees_it(chart: Chart) -> dict[str, Any]:
    """What Mermaid's parser should find for a chart read by `structure`."""
    return {
        "ok": True,
        "nodes": {
            node_id: {
                "type": shape,
                "text": "<br>".join(label),
                "classes": [chart.classes[node_id]] if node_id in chart.classes else [],
            }
            for node_id, (shape, label) in chart.nodes.items()
        },
        "edges": [[start, end, branch or ""] for start, end, branch in chart.edges],
        "classes": {name: style.split(",") for name, style in chart.class_defs.items()},
    }


def test_mermaid_parses_every_chart_as_this_module_reads_it(mermaid_dir: Path) -> None:
    run = run_of({"fetch": ended("finished", 1.5), "check": {"status": "running", "started_at": STARTED}})
    charts = [workflow_mermaid(make()) for make in SAMPLES.values()]
    charts += [run_mermaid(branching(), run), run_mermaid(None, run_of({'x"]': {"status": "failed"}}))]
    answers = mermaid_parse(mermaid_dir, charts)
    for chart, answer in zip(charts, answers, strict=True):
        assert answer.get("ok"), f"{answer.get('error')}\n{chart}"
        assert answer == as_mermaid_sees_it(structure(chart)), chart


def test_mermaid_parser_when_a_label_is_not_escaped_then_it_breaks_or_injects(mermaid_dir: Path) -> None:
    """The check itself checks: a raw quote either breaks the chart or adds a node."""
    naive = 'say "] --> n_x["hi'
    broken, injected = mermaid_parse(
        mermaid_dir, ['flowchart TD\n    n_a["x""]\n', f'flowchart TD\n    n_a["{naive}"]\n']
    )
    assert not broken["ok"]
    assert injected["ok"] and set(injected["nodes"]) == {"n_a", "n_x"}
    [escaped] = mermaid_parse(mermaid_dir, [f'flowchart TD\n    n_a["{escape_label(naive)}"]\n'])
    assert escaped["nodes"] == {"n_a": {"type": "square", "text": naive, "classes": []}}


# ---------------------------------------------------------------------------------------------
# `workflows show`


def shown(spec: WorkflowSpec) -> str:
    console = Console(record=True, width=120, markup=False, highlight=False, color_system=None)
    console.print(describe_workflow(spec, now=NOW))
    return console.export_text()


def test_describe_workflow_shows_name_variables_schedule_nodes_output_and_calls() -> None:
    spec = parse_workflow(
        {
            "name": "Fetch Data",
            "description": "Fetch OHLCV for one symbol",
            "variables": {"symbol": "BTCUSD", "limit": 500},
            "schedule": {"cron": "0 8 * * *", "timezone": "UTC"},
            "nodes": [
                {"id": "fetch", "type": "market_data", "params": {"symbol": "{{ symbol }}"}, "timeout_s": 60},
                {"id": "notify", "type": "run_workflow", "after": ["fetch"], "params": {"workflow": "Alert"}},
            ],
            "output": "{{ nodes.fetch.output }}",
        }
    )
    text = shown(spec)
    assert text.startswith("Fetch Data\nFetch OHLCV for one symbol\n")
    assert 'variables: {"symbol": "BTCUSD", "limit": 500}' in text
    assert "schedule: cron 0 8 * * * in UTC" in text
    assert "next: 2026-03-29 08:00 UTC, 2026-03-30 08:00 UTC, 2026-03-31 08:00 UTC" in text
    assert re.search(r"fetch +│ market_data +│ - +│ symbol=\"\{\{ symbol }}\"  \(timeout 60 s\)", text)
    assert re.search(r"notify +│ run_workflow +│ fetch +│ workflow=\"Alert\"", text)
    assert 'output: "{{ nodes.fetch.output }}"' in text
    assert "calls: Alert" in text


def test_describe_workflow_without_schedule_or_output_says_what_happens_instead() -> None:
    text = shown(branching())
    assert "schedule: none (runs when triggered)" in text
    assert "output: the outputs of the final nodes (alert, log)" in text
    assert "variables: none" in text


def test_describe_workflow_cuts_long_params() -> None:
    spec = spec_of({"id": "big", "type": "set", "params": {"value": "x" * 500, "other": list(range(100))}})
    text = shown(spec)
    assert "x" * 500 not in text
    assert 'value="' + "x" * 38 + "…, other=[0,1,2," in text


def test_describe_workflow_when_names_hold_markup_or_control_characters_then_they_show_as_text() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "name": "[bold red]Boom[/] \x1b[2J",
            "description": "line one\nline [link=x]two[/link] \u202e",
            "nodes": [{"id": "n", "type": "[i]t[/i]", "params": {"k": "\x1b[31m[b]"}}],
        }
    )
    text = shown(spec)
    assert "\x1b" not in text and "\u202e" not in text
    assert text.startswith("[bold red]Boom[/] \\x1b[2J\nline one\nline [link=x]two[/link] \\u202e\n")
    assert "[i]t[/i]" in text
    assert 'k="\\u001b[31m[b]"' in text


def test_describe_workflow_shows_the_local_firing_times_across_a_clock_change() -> None:
    spec = spec_of({"id": "a", "type": "set"}, schedule={"cron": "30 2 * * *", "timezone": "Europe/Warsaw"})
    text = shown(spec)
    # 02:30 does not exist on 29 March 2026 in Warsaw: beat fires when the clock jumps to 03:00.
    assert "next: 2026-03-29 03:00 CEST (01:00 UTC), 2026-03-30 02:30 CEST (00:30 UTC)" in text


def test_next_firings_are_in_the_schedule_time_zone_after_now() -> None:
    spec = spec_of({"id": "a", "type": "set"}, schedule={"cron": "0 */6 * * *", "timezone": "Asia/Tokyo"})
    assert spec.schedule is not None
    firings = next_firings(spec.schedule, count=3, now=NOW)
    assert [f.strftime("%d %H:%M %Z") for f in firings] == ["29 00:00 JST", "29 06:00 JST", "29 12:00 JST"]


def test_called_workflows_lists_literal_targets_once_in_node_order() -> None:
    assert called_workflows(calling()) == ["Fetch Data"]
    assert called_workflows(branching()) == ["Alert"]
    assert called_workflows(line()) == []
