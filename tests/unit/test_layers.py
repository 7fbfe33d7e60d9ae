"""The layers point one way: no module imports a layer above its own.

From the bottom: the shared base (``base``: settings, Kafka and MQTT client setup) →
``ingest`` → ``rules`` → ``team`` (the roster) → ``stream`` (with its outputs) →
``dashboards`` → the layer that
runs things (``stridewatch``: the CLI, demo, bench, process supervision; ``deploy``: the
local stack). The check reads every module's imports with ``ast``, so an import inside a
function or under ``TYPE_CHECKING`` counts too. docs/architecture.md draws the picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"base": 0, "ingest": 1, "rules": 2, "team": 3, "stream": 4, "dashboards": 5,
          "stridewatch": 6, "deploy": 6}
# the pure domain core: no broker, stream-processor or database client in it
CORE = ["ingest.contract", "rules", "team.roster", "stream.state", "stream.state_codec",
        "stream.session_fold", "stream.gait", "stream.days", "stream.signals",
        "stream.return_to_run", "stream.pain", "stream.sprain", "stream.points",
        "stream.runner", "stream.load", "stream.metrics", "stream.backtest"]
CLIENTS = ("faust", "paho", "influxdb_client", "aiokafka", "apprise", "requests")


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


MODULES = modules()


def test_every_package_is_known() -> None:
    # a new top-level package must be given its place in the layers
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages - {"tests"} == set(LAYERS)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(name: str) -> None:
    own = LAYERS[name.split(".")[0]]
    above = sorted(i for i in imports(MODULES[name])
                   if LAYERS.get(i.split(".")[0], -1) > own)
    assert above == [], f"{name} (layer {own}) imports {above}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES
                                        if any(n == c or n.startswith(c + ".") for c in CORE)))
def test_the_domain_core_imports_no_client_library(name: str) -> None:
    clients = sorted(i for i in imports(MODULES[name]) if i.split(".")[0] in CLIENTS)
    assert clients == [], f"{name} imports {clients}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # the checker itself: an import from a higher layer inside a function is found
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from stridewatch.cli import main\n")
    assert "stridewatch.cli" in imports(module)
