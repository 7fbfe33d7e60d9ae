"""docs/roster.md names every field the roster accepts, and its example is a real roster."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from rules.catalogue import load_catalogue
from team.roster import Roster, load_roster, unknown_runner_warning

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "roster.md"


def models_and_literals(model: type[BaseModel]) -> tuple[dict[str, set[str]], set[str]]:
    """Every model reachable from ``model`` with its field names, and every Literal value."""
    fields: dict[str, set[str]] = {}
    literals: set[str] = set()

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in fields:
                fields[annotation.__name__] = set(annotation.model_fields)
                for info in annotation.model_fields.values():
                    walk(info.annotation)
            return
        if typing.get_origin(annotation) is Literal:
            literals.update(str(v) for v in typing.get_args(annotation))
            return
        if typing.get_origin(annotation) in (list, dict, typing.Union, types.UnionType):
            for arg in typing.get_args(annotation):
                walk(arg)

    walk(model)
    return fields, literals


def test_every_roster_field_is_named_in_the_doc() -> None:
    doc = DOC.read_text()
    fields, literals = models_and_literals(Roster)
    assert {"Team", "Coach", "Runner", "Shoe", "Injury", "Clearance", "RuleOverride"} <= \
        set(fields)
    missing = {f"{model}.{name}" for model, names in fields.items() for name in names
               if f"| `{name}` |" not in doc}
    assert not missing, f"docs/roster.md does not describe {sorted(missing)}"
    # the choices too: load metrics, injury kinds, severities
    assert not {v for v in literals if f"`{v}`" not in doc and v not in doc}


def test_the_doc_s_example_loads_with_the_real_loader(tmp_path: Path) -> None:
    doc = DOC.read_text()
    example = doc.split("## Example", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", example, re.S)
    assert block, "no YAML example under ## Example"
    path = tmp_path / "roster.yaml"
    path.write_text(block.group(1))
    roster = load_roster(path)
    roster.check_against(load_catalogue())
    # it shows every field of a team and of a runner somewhere
    fields, _ = models_and_literals(Roster)
    raw = yaml.safe_load(block.group(1))
    for section, model in (("teams", "Team"), ("runners", "Runner")):
        shown = {key for entry in raw[section] for key in entry}
        assert fields[model] <= shown, f"the example has no {fields[model] - shown}"
    cleo = roster.runner("cleo")
    assert cleo is not None and cleo.injury is not None and cleo.cleared_to_run is not None


def test_the_doc_quotes_the_worker_s_warning_as_it_is() -> None:
    doc = DOC.read_text()
    warning = unknown_runner_warning("zoe", Path("/srv/stridewatch/roster.yaml"))
    assert f"stridewatch.stream: {warning}\n" in doc


def test_the_demo_roster_points_at_an_existing_doc() -> None:
    demo = (ROOT / "deploy" / "local" / "demo-roster.yaml").read_text()
    assert "docs/roster.md" in demo and DOC.exists()
