"""A broken pipeline folder is an import error of its own DAG file only: every other pipeline's DAG loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PLUGINS_FOLDER, REPO

# A DAG processor's view of a DAGs folder: the DAGs it found and the import error of each file.
PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], bundle_name="dags-folder", bundle_path=sys.argv[1])
print(json.dumps({"dags": sorted(bag.dags), "errors": {k: str(v) for k, v in bag.import_errors.items()}}))
"""
DAG_FILE = '''"""The airflow DAG of the pipeline folder {folder}."""

from bedrock_batch.factory import pipeline_dag

dag = pipeline_dag({folder!r})
'''


def test_only_the_broken_folders_dag_file_has_an_import_error(tmp_path: Path) -> None:
    dags, pipelines = tmp_path / "dags", tmp_path / "pipelines"
    dags.mkdir()
    for name in ("product_reviews", "support_tickets"):
        shutil.copytree(REPO / "include" / "pipelines" / name, pipelines / name)
        (dags / f"{name}.py").write_text(DAG_FILE.format(folder=str(pipelines / name)))
    broken = pipelines / "support_tickets" / "pipeline.yaml"
    broken.write_text(broken.read_text().replace("us.amazon.nova-lite-v1:0", "acme.no-such-model-v1"))

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PLUGINS_FOLDER), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(dags)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])

    assert result["dags"] == ["product_reviews"]
    assert list(result["errors"]) == ["support_tickets.py"]
    error = result["errors"]["support_tickets.py"]
    assert f"PipelineError: {broken}: model_id: " in error
    assert "acme.no-such-model-v1" in error
