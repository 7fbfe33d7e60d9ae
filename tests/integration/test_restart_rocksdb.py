"""The killed-worker scenario of ``test_restart.py`` with the RocksDB table store: the
worker keeps its tables on disk, reads only the changelog records newer than what it
had stored, and every runner's state is still exact after a SIGKILL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import new_stack_settings
from tests.integration.conftest import Pipeline, own_pipeline
from tests.integration.test_restart import (
    test_state_survives_a_killed_worker_and_replays_count_once as killed_worker_scenario,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    settings = new_stack_settings(tmp_path_factory, worker_store="rocksdb://")
    with own_pipeline(settings) as pipe:
        yield pipe


def rocksdb_tables(data_dir: Path) -> list[Path]:
    """The worker's RocksDB folders (one per table partition), below its Faust folder."""
    return sorted(p.parent for p in (data_dir / "faust").rglob("CURRENT"))


def test_rocksdb_state_survives_a_killed_worker(pipeline: Pipeline) -> None:
    killed_worker_scenario(pipeline)
    # the state really lived in RocksDB on disk, not in memory
    assert rocksdb_tables(pipeline.settings.data_dir), "no RocksDB table on disk"
