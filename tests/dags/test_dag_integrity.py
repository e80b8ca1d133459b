"""DAG integrity: every file in dags/ parses cleanly, quickly, and follows the project's conventions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DAGS_FOLDER, PLUGINS_FOLDER
from tests.dags.conftest import PARSE_SECONDS

DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("pandas", "pyarrow", "moto", "faker", "bedrock_batch_dev.emulator")

# Parsing runs in a fresh interpreter with sockets disabled, so a DAG file that touches the network at
# top level fails here, and the modules it drags in at parse time can be listed.
PARSE_PROBE = """
import json, socket, sys, time
def _no_network(*args, **kwargs):
    raise RuntimeError("DAG file opened a network connection at parse time")
socket.socket.connect = _no_network
socket.create_connection = _no_network
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], bundle_name="dags-folder", bundle_path=sys.argv[2])
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds,
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": {
        dag_id: {
            "tags": sorted(dag.tags),
            "owner": dag.default_args.get("owner") or dag.owner,
            "retries": [t.retries for t in dag.tasks],
            "doc_md": bool(dag.doc_md),
        }
        for dag_id, dag in bag.dags.items()
    },
    "modules": sorted(sys.modules),
}))
"""


def parse(dag_file: Path) -> dict:
    pythonpath = os.pathsep.join([str(PLUGINS_FOLDER), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(dag_file), str(DAGS_FOLDER)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=DAG_FILES, ids=[p.name for p in DAG_FILES])
def parsed(request: pytest.FixtureRequest) -> dict:
    result = parse(request.param)
    PARSE_SECONDS[request.param.name] = result["seconds"]
    return result


class TestDagIntegrity:
    def test_imports_without_errors(self, parsed):
        assert parsed["errors"] == {}
        assert parsed["dags"], "the file defines at least one DAG"

    def test_every_dag_has_tags_owner_retries_and_docs(self, parsed):
        for dag_id, dag in parsed["dags"].items():
            assert dag["tags"], f"{dag_id} has no tags"
            assert dag["owner"] not in (None, "", "airflow"), f"{dag_id} has no owner"
            assert all(r >= 1 for r in dag["retries"]), f"{dag_id} has tasks without retries"
            assert dag["doc_md"], f"{dag_id} has no doc_md"

    def test_parse_does_not_import_heavy_modules(self, parsed):
        heavy = [m for m in parsed["modules"] if m.startswith(HEAVY_MODULES)]
        assert heavy == []
