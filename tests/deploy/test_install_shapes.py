"""Prompts, prices and configuration load the same way in every shape the library is installed in.

The four shapes: the editable install of this virtualenv, a wheel installed by pip (non-editable), Airflow's
plugins folder (docker compose, Astro, the image) and MWAA's plugins.zip (unzipped into the plugins folder,
and imported straight from the zip). Each runs a fresh interpreter from outside the repository against a
deployment laid out in a temporary folder; a marker in the deployed prompt and configuration proves which
include/ was read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_clean_install import REPO, clean_environment
from tests.deploy.test_plugins_zip import DEV_ONLY, PRICE_TABLE
from tests.deploy.test_plugins_zip import build as build_plugins_zip

pytestmark = pytest.mark.integration

# The DAGs that read the call-center configuration; the other pipeline folders' DAGs must load beside them.
DAG_IDS = {"call_center_summarization", "call_summary_kpis"}
FOLDER_DAG_IDS = {"product_reviews", "support_tickets"}
HAIKU_INPUT_PER_1K = "0.00025"
# Never part of a deployment: caches, build leftovers, an editable install's metadata.
LEFTOVER_NAMES = ("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".pytest_cache")
LEFTOVERS = shutil.ignore_patterns(*LEFTOVER_NAMES)
# Neither are the developer's tools and outputs, when the working tree is copied for a build.
NOT_SOURCES = shutil.ignore_patterns(
    *LEFTOVER_NAMES, ".git", ".venv", ".local", ".ruff_cache", ".hypothesis", "build", "dist", "logs"
)

# What a DAG processor and a task do with the library: parse the DAGs (they read the configuration), load the
# prompt template, estimate a cost. Prints only paths, numbers and whether the marker is in the prompt.
PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
import bedrock_batch
from bedrock_batch.cost import DEFAULT_PRICE_FILE, load_price_table
from bedrock_batch.prompts import load_template
from bedrock_batch.resources import include_path
dags, marker = sys.argv[1], sys.argv[2]
bag = DagBag(dag_folder=dags, bundle_name="dags-folder", bundle_path=dags)
system, _ = load_template("call_center_summary", "v1").render({"transcript": "-"})
haiku = load_price_table().price_for("anthropic.claude-3-haiku-20240307-v1:0")
print(json.dumps({
    "library": bedrock_batch.__file__,
    "price_file": str(DEFAULT_PRICE_FILE),
    "haiku_input_per_1k": str(haiku.input_per_1k),
    "prompts": str(include_path("prompts")),
    "prompt_has_marker": marker in system,
    "dag_errors": {path: str(error) for path, error in bag.import_errors.items()},
    "results_uri": {dag_id: dag.params["results_uri"] for dag_id, dag in bag.dags.items()},
}))
"""


def deploy(airflow_home: Path, *, include_under_dags: bool, marker: str) -> Path:
    """Copy dags/ and include/ under ``airflow_home``, include/ beside dags/ or, as on MWAA, inside it.

    The deployed prompt gets ``marker`` appended and the configuration a ``results_uri`` of
    ``s3://<marker>``, so the probe can tell this copy from the repository's. Returns the DAGs folder.
    """
    dags = airflow_home / "dags"
    shutil.copytree(REPO / "dags", dags, ignore=LEFTOVERS)
    include = dags / "include" if include_under_dags else airflow_home / "include"
    shutil.copytree(REPO / "include", include)
    system = include / "prompts" / "call_center_summary" / "v1" / "system.txt"
    system.write_text(f"{system.read_text()}\n{marker}\n")
    config = include / "config" / "call_center_summarization.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "results_uri": f"s3://{marker}"}))
    return dags


def probe(dags: Path, marker: str, *, cwd: Path, **env: Path) -> dict[str, Any]:
    """Run :data:`PROBE` in a fresh interpreter with a clean environment plus ``env``."""
    environment = clean_environment()
    environment.update({name: str(value) for name, value in env.items()})
    environment.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(dags), marker],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_deployed_copy_read(result: dict[str, Any], include: Path, marker: str) -> None:
    assert result["dag_errors"] == {}
    assert set(result["results_uri"]) == DAG_IDS | FOLDER_DAG_IDS
    assert {k: result["results_uri"][k] for k in DAG_IDS} == dict.fromkeys(DAG_IDS, f"s3://{marker}")
    assert result["prompts"] == str(include / "prompts")
    assert result["prompt_has_marker"] is True
    assert result["haiku_input_per_1k"] == HAIKU_INPUT_PER_1K


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel .`` builds, from a copy of the working tree (an in-tree build would write build/
    and egg-info into the shared checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(source), "-w", str(tmp / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (built,) = (tmp / "dist").glob("bedrock_batch-*.whl")
    return built


@pytest.fixture(scope="module")
def plugins_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("mwaa") / "plugins.zip"
    build_plugins_zip(output)
    return output


def test_editable_install_reads_the_checkout(tmp_path):
    # An Airflow home with nothing deployed: the DAGs, prompts and configuration of the checkout are used.
    home = tmp_path / "airflow-home"
    home.mkdir()
    result = probe(REPO / "dags", "exactly one JSON object", cwd=tmp_path, AIRFLOW_HOME=home)
    assert Path(result["library"]).is_relative_to(REPO / "plugins")
    assert result["price_file"] == str(REPO / "plugins" / PRICE_TABLE)
    assert result["prompts"] == str(REPO / "include" / "prompts")
    assert result["prompt_has_marker"] is True
    config = json.loads((REPO / "include" / "config" / "call_center_summarization.json").read_text())
    assert set(result["results_uri"]) == DAG_IDS | FOLDER_DAG_IDS
    assert {k: result["results_uri"][k] for k in DAG_IDS} == dict.fromkeys(DAG_IDS, config["results_uri"])
    assert result["dag_errors"] == {}
    assert result["haiku_input_per_1k"] == HAIKU_INPUT_PER_1K


class TestWheel:
    def test_holds_the_library_and_its_price_table_and_nothing_else(self, wheel):
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        assert {name.split("/")[0] for name in names} == {"bedrock_batch", "bedrock_batch-0.1.0.dist-info"}
        library = REPO / "plugins" / "bedrock_batch"
        modules = {f"bedrock_batch/{path.relative_to(library).as_posix()}" for path in library.rglob("*.py")}
        assert modules | {PRICE_TABLE, "bedrock_batch/py.typed"} <= set(names)
        assert [name for name in names if name.startswith(DEV_ONLY) or "sample_data" in name] == []

    def test_installed_wheel_reads_include_beside_the_dags_folder(self, wheel, tmp_path):
        site = tmp_path / "site"
        install = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site)]
        subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)
        home = tmp_path / "airflow-home"
        dags = deploy(home, include_under_dags=False, marker="wheel-deployment")
        # PYTHONPATH comes before the editable install's path entry, so the wheel's copy is the one imported.
        # The DAGs folder is Airflow's default, $AIRFLOW_HOME/dags, read from Airflow's configuration.
        result = probe(dags, "wheel-deployment", cwd=tmp_path, AIRFLOW_HOME=home, PYTHONPATH=site)
        assert Path(result["library"]).is_relative_to(site)
        assert Path(result["price_file"]).is_relative_to(site / "bedrock_batch")
        assert_deployed_copy_read(result, home / "include", "wheel-deployment")


def test_plugins_folder_reads_include_beside_the_dags_folder(tmp_path):
    # /opt/airflow of the image and the compose stack: dags/, plugins/ and include/ side by side.
    home = tmp_path / "opt" / "airflow"
    dags = deploy(home, include_under_dags=False, marker="plugins-folder-deployment")
    shutil.copytree(REPO / "plugins", home / "plugins", ignore=LEFTOVERS)
    result = probe(
        dags,
        "plugins-folder-deployment",
        cwd=tmp_path,
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__PLUGINS_FOLDER=home / "plugins",
        # Ahead of the editable install's path entry, as Airflow's plugins folder is in a clean image.
        PYTHONPATH=home / "plugins",
    )
    assert Path(result["library"]).is_relative_to(home / "plugins")
    assert Path(result["price_file"]).is_relative_to(home / "plugins" / "bedrock_batch")
    assert_deployed_copy_read(result, home / "include", "plugins-folder-deployment")


class TestPluginsZip:
    @pytest.fixture
    def mwaa_home(self, tmp_path: Path) -> Path:
        # /usr/local/airflow on MWAA: only dags/ is synced from S3, so include/ is uploaded under dags/.
        home = tmp_path / "usr" / "local" / "airflow"
        deploy(home, include_under_dags=True, marker="mwaa-deployment")
        assert not (home / "include").exists()
        return home

    def test_unzipped_into_the_plugins_folder_reads_include_inside_the_dags_folder(
        self, plugins_zip, mwaa_home, tmp_path
    ):
        plugins = mwaa_home / "plugins"
        with zipfile.ZipFile(plugins_zip) as archive:
            archive.extractall(plugins)
        result = probe(
            mwaa_home / "dags",
            "mwaa-deployment",
            cwd=tmp_path,
            AIRFLOW_HOME=mwaa_home,
            AIRFLOW__CORE__DAGS_FOLDER=mwaa_home / "dags",
            AIRFLOW__CORE__PLUGINS_FOLDER=plugins,
            PYTHONPATH=plugins,
        )
        assert Path(result["library"]).is_relative_to(plugins)
        assert_deployed_copy_read(result, mwaa_home / "dags" / "include", "mwaa-deployment")

    def test_imported_from_the_zip_reads_its_price_table_from_the_zip(self, plugins_zip, mwaa_home, tmp_path):
        result = probe(
            mwaa_home / "dags",
            "mwaa-deployment",
            cwd=tmp_path,
            AIRFLOW_HOME=mwaa_home,
            AIRFLOW__CORE__DAGS_FOLDER=mwaa_home / "dags",
            PYTHONPATH=plugins_zip,
        )
        # zipimport: the package and its data are entries of the archive, not files on disk.
        assert result["library"] == str(plugins_zip / "bedrock_batch" / "__init__.py")
        assert result["price_file"] == str(plugins_zip / PRICE_TABLE)
        assert not Path(result["price_file"]).exists()
        assert_deployed_copy_read(result, mwaa_home / "dags" / "include", "mwaa-deployment")
