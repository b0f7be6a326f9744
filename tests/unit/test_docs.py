"""README.md and docs/*.md say what the code does: every flag, command, metric, reason, Event and
module they name exists, every one that exists is named, and the schedules they show parse.

Docs drift silently; these checks are cheap, so the documents are held to the code here rather
than trusted. (tests/deploy/test_manifests.py checks the install documents' paths and settings,
tests/unit/test_demand_docs.py the claim reasons, phases and exit codes.)
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest
import yaml

from controller import cli
from controller.config import add_run_arguments
from controller.gpuvm import parse_spec
from controller.metrics import Metrics
from controller.reasons import Reason
from controller.schedule import Schedule, parse_schedule
from testbed.kubeemu.schema import StructuralSchema

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()
DOCS = {path.relative_to(ROOT).as_posix(): path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}


def section(text: str, heading: str) -> str:
    """The body of one ``## heading`` (up to the next heading of that level or above)."""
    start = text.index(f"\n{heading}\n")
    level = heading.split(" ")[0]
    rest = text[start + len(heading) + 2:]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


# ----------------------------------------------------------------------------- run's flags


def run_options() -> list[argparse.Action]:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, env={})
    return [a for a in parser._actions if a.option_strings and "--help" not in a.option_strings]


def test_every_run_flag_is_in_the_readme_table_with_its_environment_variables() -> None:
    table = section(README, "### `gpuvm-operator run` configuration")
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    for action in run_options():
        flag = action.option_strings[-1]
        row = next((r for r in rows if f"`{flag}`" in r.split(" | ")[0]), None)
        assert row is not None, f"{flag} has no row in README's run configuration table"
        help_text = action.help or ""
        for env in re.findall(r"\b(?:GPUVM|AZURE)_[A-Z_]+\b", help_text):
            if env != "AZURE_SUBSCRIPTION_ID" or "AZURE_SUBSCRIPTION_ID" in row:
                assert env in row, f"README's row for {flag} does not name {env}"


def test_every_flag_in_the_readme_table_is_a_flag() -> None:
    table = section(README, "### `gpuvm-operator run` configuration")
    known = {s for a in run_options() for s in a.option_strings}
    documented = set(re.findall(r"`(--[a-z-]+)`", "\n".join(line.split(" | ")[0] for line in table.splitlines())))
    assert documented and documented <= known, documented - known


# ----------------------------------------------------------------------------- commands in the docs


def options_of(command: str) -> set[str]:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {s for a in sub._actions for s in a.option_strings}


COMMAND = re.compile(r"(?:gpuvm-operator|kubectl gpuvm) ([a-z][a-z-]+)((?: +[^\s|`#]+)*)")
# Documents that show no command line of the operator (GitOps is Argo CD's and Flux's settings).
WITHOUT_COMMANDS = {"docs/gitops.md"}


def command_lines(doc: str) -> list[re.Match[str]]:
    """``gpuvm-operator COMMAND ...`` (or ``kubectl gpuvm COMMAND ...``) in the document, where
    COMMAND is one the CLI has: the rest is prose ("gpuvm-operator runs ...") or a Deployment's
    name, which the pattern cannot tell from a command line by itself."""
    commands = {*cli._SUBCOMMANDS, *cli._plugins()}
    return [m for m in COMMAND.finditer(DOCS[doc]) if m.group(1) in commands]


@pytest.mark.parametrize("doc", sorted(set(DOCS) - WITHOUT_COMMANDS))
def test_documented_commands_and_their_flags_exist(doc: str) -> None:
    """``gpuvm-operator COMMAND --flag ...`` anywhere in the docs: the command and each flag exist
    (up to `--` and what follows it: the job's own command line).

    A document that shows commands must yield at least one here: a command renamed in the CLI
    would otherwise turn every line naming it into "prose", and the case would check nothing."""
    found = command_lines(doc)
    assert found, f"{doc}: no gpuvm-operator command line found (a renamed command?); if it shows none, list it in WITHOUT_COMMANDS"
    for match in found:
        command, rest = match.group(1), match.group(2)
        words = rest.split(" -- ")[0].split()
        flags = {w.split("=")[0] for w in words if w.startswith("--") and w != "--"}
        unknown = flags - options_of(command)
        assert not unknown, f"{doc}: `gpuvm-operator {command}` has no {sorted(unknown)}: {match.group(0)!r}"
    if doc == "README.md":
        assert len(found) >= 5


def test_the_documents_without_commands_show_none() -> None:
    """What WITHOUT_COMMANDS leaves out of the check above really holds no command line: not even
    one for a command the CLI does not have (``gpuvm-operator COMMAND --flag`` in a code block)."""
    for doc in sorted(WITHOUT_COMMANDS):
        lines = [line for line in DOCS[doc].splitlines() if re.search(r"(?:gpuvm-operator|kubectl gpuvm) [a-z-]+ +-", line)]
        assert command_lines(doc) == [] and lines == [], (doc, lines)


# ----------------------------------------------------------------------------- metrics, reasons, Events


def exposed_metrics() -> set[str]:
    metrics = Metrics()
    metrics.watch(lambda: iter(()))
    names = set()
    for family in metrics.registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def exposed_series() -> set[str]:
    """Every series name /metrics carries: a histogram's ``_bucket``, ``_count`` and ``_sum`` too."""
    metrics = Metrics()
    metrics.watch(lambda: iter(()))
    return {sample.name for family in metrics.registry.collect() for sample in family.samples} | exposed_metrics()


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    names = exposed_metrics()
    assert "gpuvm_unclaimed_billed_seconds_total" in names and "gpuvm_idle_deallocations_total" in names
    table = section(API, "## Metrics")
    for name in names:
        assert f"`{name}`" in table, f"docs/api.md's Metrics table lacks {name}"
        assert f"`{name}`" in README, f"README's metrics list lacks {name}"
    series = exposed_series()
    for doc, text in DOCS.items():
        for name in set(re.findall(r"\bgpuvm_[a-z_]+\b", text)):
            assert name in series, f"{doc} names a metric that does not exist: {name}"


@pytest.mark.parametrize("reason", list(Reason))
def test_every_ready_reason_is_documented(reason: Reason) -> None:
    assert f"`{reason.value}`" in section(API, "## Ready reasons")
    if reason is Reason.HIBERNATION_NOT_SUPPORTED:  # an Event and status.stopMode, never a lasting Ready reason
        assert f"| `{reason.value}` | Warning |" in section(API, "## Events")
    else:
        table = section(README, "### Ready reasons — what each means and what to do")
        first_cells = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| `")]
        assert any(f"`{reason.value}`" in cell for cell in first_cells), f"README's Ready reasons table lacks {reason.value}"


def emitted_event_reasons() -> set[str]:
    """Event reasons the engine posts: the literal ones, and the action-derived ones."""
    source = (ROOT / "controller" / "engine.py").read_text()
    literal = set(re.findall(r'"(?:Normal|Warning)", "([A-Za-z]+)"', source))
    assert 'f"{action.value}Requested"' in source and 'f"{action.value}Failed"' in source
    assert '"Started" if action is Action.START else "Deallocated"' in source
    return literal | {"StartRequested", "DeallocateRequested", "StartFailed", "DeallocateFailed", "Started", "Deallocated"}


def test_every_event_the_engine_posts_is_documented() -> None:
    reasons = emitted_event_reasons()
    assert {"DeallocationScheduled", "Evicted", "HibernationNotSupported"} <= reasons
    events = section(API, "## Events")
    for reason in reasons:
        assert f"`{reason}`" in events, f"docs/api.md's Events section lacks {reason}"


# ----------------------------------------------------------------------------- modules and the import rule


def test_the_readme_names_every_module_of_the_operator_and_the_test_bed() -> None:
    how = section(README, "## How it works")
    for path in sorted((ROOT / "controller").glob("*.py")):
        if path.name not in ("__init__.py", "__main__.py"):
            assert f"`{path.name}`" in how, f"README's module list lacks controller/{path.name}"
    for path in sorted((ROOT / "testbed").iterdir()):
        if path.name.startswith(("_", ".")) or path.suffix not in (".py", ""):
            continue
        name = f"{path.name}/" if path.is_dir() else path.name
        assert f"`{name}`" in how, f"README's module list lacks testbed/{name}"
    for name in set(re.findall(r"`(\w+\.py)`", how)):
        assert (ROOT / "controller" / name).exists() or (ROOT / "testbed" / name).exists(), name


def test_the_operator_never_imports_the_test_bed() -> None:
    """Imports go one way: testbed -> controller (the image ships controller/ alone)."""
    for path in sorted((ROOT / "controller").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "testbed" or n.startswith(("testbed.", "tests.", "bench.")) for n in names), \
                f"{path.relative_to(ROOT)} imports {names}"


# ----------------------------------------------------------------------------- schedules shown in docs/api.md


CRD = yaml.safe_load((ROOT / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml").read_text())
SCHEMA = StructuralSchema.build(CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def valid_under_the_crd(spec: dict) -> list[str]:
    errors = SCHEMA.validate({"apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm", "spec": spec})
    return [str(e) for e in errors]


def test_the_schedule_examples_of_the_api_document_are_valid() -> None:
    block = section(API, "## Schedules").split("```yaml\n", 1)[1].split("```", 1)[0]
    raw = yaml.safe_load(block)["schedule"]
    assert isinstance(parse_schedule(raw), Schedule), parse_schedule(raw)
    vm = {"resourceId": "/subscriptions/3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a/resourceGroups/rg/providers/"
                        "Microsoft.Compute/virtualMachines/vm"}
    assert valid_under_the_crd({"vm": vm, "desiredState": "Auto", "schedule": raw}) == []


def test_every_spec_in_the_migration_table_parses_and_passes_the_crd() -> None:
    migration = section(API, "## Migrating from other schedulers")
    block = migration.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = yaml.safe_load(block.replace("<sub>", "3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a"))["spec"]
    parsed = parse_spec(spec, default_subscription=None)
    assert not hasattr(parsed, "field"), parsed
    assert valid_under_the_crd(spec) == []
    windows = re.findall(r"`windows: (\[.*?\])`", migration)
    zones = re.findall(r"`timeZone: ([\w/]+)`", migration)
    assert len(windows) >= 5 and len(zones) >= 4
    for text in windows:
        raw = {"timeZone": zones[0], "windows": yaml.safe_load(text)}
        assert isinstance(parse_schedule(raw), Schedule), (text, parse_schedule(raw))
        assert valid_under_the_crd({**spec, "schedule": raw}) == [], text
    for zone in zones:
        assert isinstance(parse_schedule({"timeZone": zone, "windows": [{"days": "Mon", "start": "08:00", "end": "09:00"}]}),
                          Schedule), zone
