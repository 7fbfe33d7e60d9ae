"""Build the dashboards and write them as sorted, stable JSON into ``dashboards/generated``.

The generated files are checked in: Grafana's file provisioning reads them as they are,
and ``stridewatch dashboards generate --check`` fails when they drift from this code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dashboards import runner_dashboard, team_dashboard
from dashboards.builder import Json

GENERATED_DIR = Path(__file__).parent / "generated"
BUILDERS: dict[str, Callable[[], Json]] = {
    "runner.json": runner_dashboard.build,
    "team.json": team_dashboard.build,
}


def render(board: Json) -> str:
    """The file content: sorted keys, two-space indent, trailing newline."""
    return json.dumps(board, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, Json]:
    return {name: build() for name, build in BUILDERS.items()}


def rendered() -> dict[str, str]:
    return {name: render(board) for name, board in build_all().items()}


@dataclass(frozen=True)
class Drift:
    """A generated file that is missing or differs from what the code builds."""

    path: Path
    reason: str


def write(out_dir: Path = GENERATED_DIR) -> list[Path]:
    """Write every dashboard; files whose content is unchanged are left untouched."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = out_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def check(out_dir: Path = GENERATED_DIR) -> list[Drift]:
    """Generated files that are missing or stale (empty when all match)."""
    drift = []
    for name, text in rendered().items():
        path = out_dir / name
        if not path.is_file():
            drift.append(Drift(path, "missing"))
        elif path.read_text(encoding="utf-8") != text:
            drift.append(Drift(path, "differs from what the code generates"))
    return drift


if __name__ == "__main__":
    for changed in write():
        print(f"wrote {changed}")
