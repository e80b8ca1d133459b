"""scripts/build_plugins_zip.py: plugins.zip for Amazon MWAA holds the library and the plugin, no dev code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build_plugins_zip.py"
PLUGINS = REPO / "plugins"
LIBRARY = PLUGINS / "bedrock_batch"
# The library's own data, read with importlib.resources (bedrock_batch.resources), so it loads from the zip.
PRICE_TABLE = "bedrock_batch/pricing/bedrock_batch_prices.json"
# Development tools: a separate package (dev/bedrock_batch_dev) that must never reach a deployment.
DEV_ONLY = (
    "bedrock_batch_dev/",
    "bedrock_batch/emulator/",
    "bedrock_batch/sample_data/",
    "bedrock_batch/demo",
)

# Airflow over the unzipped archive, as MWAA runs it: plugins folder = the archive's content.
AIRFLOW_PROBE = """
import importlib.util, json, sys
from airflow import plugins_manager
from airflow.dag_processing.dagbag import DagBag
plugins, errors = plugins_manager._get_plugins()
bag = DagBag(dag_folder=sys.argv[1], bundle_name="dags-folder", bundle_path=sys.argv[1])
import bedrock_batch
print(json.dumps({
    "plugins": sorted(p.name for p in plugins),
    "plugin_errors": errors,
    "dags": sorted(bag.dags),
    "dag_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "library": bedrock_batch.__file__,
    # The archive's library has no development tools inside (they are the separate bedrock_batch_dev).
    "emulator": importlib.util.find_spec("bedrock_batch.emulator") is not None,
}))
"""


def build(output: Path, plugins_dir: Path = PLUGINS) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--plugins-dir", str(plugins_dir), "--output", str(output)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


@pytest.fixture(scope="module")
def plugins_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("mwaa") / "plugins.zip"
    assert f"wrote {output}" in build(output)
    return output


@pytest.fixture(scope="module")
def names(plugins_zip: Path) -> list[str]:
    with zipfile.ZipFile(plugins_zip) as archive:
        assert archive.testzip() is None
        return archive.namelist()


class TestPluginsZip:
    def test_top_level_holds_the_package_the_plugin_and_its_airflowignore(self, names):
        top_level = {name.split("/")[0] + ("/" if "/" in name else "") for name in names}
        assert top_level == {"bedrock_batch/", "bedrock_batch_plugin.py", ".airflowignore"}
        assert "bedrock_batch/" in names

    def test_holds_every_library_module_and_the_price_table(self, names):
        modules = {f"bedrock_batch/{path.relative_to(LIBRARY).as_posix()}" for path in LIBRARY.rglob("*.py")}
        data = {"bedrock_batch/py.typed", PRICE_TABLE}
        assert modules | data <= set(names)

    def test_leaves_out_development_only_code(self, names):
        assert [name for name in names if name.startswith(DEV_ONLY)] == []

    def test_leaves_out_caches_and_build_leftovers(self, tmp_path):
        plugins = tmp_path / "plugins"
        shutil.copytree(PLUGINS, plugins)
        (plugins / "bedrock_batch" / "__pycache__").mkdir(exist_ok=True)
        (plugins / "bedrock_batch" / "__pycache__" / "hooks.cpython-311.pyc").write_bytes(b"\0")
        (plugins / "bedrock_batch" / "stale.pyc").write_bytes(b"\0")
        (plugins / "bedrock_batch.egg-info").mkdir(exist_ok=True)
        build(tmp_path / "plugins.zip", plugins)
        with zipfile.ZipFile(tmp_path / "plugins.zip") as archive:
            leftovers = [
                n for n in archive.namelist() if "__pycache__" in n or n.endswith(".pyc") or "egg-info" in n
            ]
        assert leftovers == []

    def test_same_sources_give_the_same_bytes(self, plugins_zip, tmp_path):
        build(tmp_path / "again.zip")
        assert (tmp_path / "again.zip").read_bytes() == plugins_zip.read_bytes()

    def test_fails_clearly_without_the_plugin_entry_point(self, tmp_path):
        plugins = tmp_path / "plugins"
        shutil.copytree(PLUGINS / "bedrock_batch", plugins / "bedrock_batch")
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--plugins-dir", str(plugins), "--output", str(tmp_path / "p.zip")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        assert "bedrock_batch_plugin.py is missing" in result.stderr

    def test_airflow_loads_the_plugin_and_the_dags_from_the_unzipped_archive(self, plugins_zip, tmp_path):
        plugins = tmp_path / "plugins"
        with zipfile.ZipFile(plugins_zip) as archive:
            archive.extractall(plugins)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(
            {
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
                # Ahead of the development install of the library, so the archive's copy is the one imported.
                "PYTHONPATH": str(plugins),
            }
        )
        out = subprocess.run(
            [sys.executable, "-c", AIRFLOW_PROBE, str(REPO / "dags")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        assert Path(result["library"]).is_relative_to(plugins)
        assert result["plugin_errors"] == {}
        assert "bedrock_batch" in result["plugins"]
        assert result["dag_errors"] == {}
        assert {"call_center_summarization", "call_summary_kpis"} <= set(result["dags"])
        assert result["emulator"] is False
