"""The image build without Docker: requirements.txt on apache-airflow 3.3.2 in a fresh venv parses every DAG.

The Dockerfile runs the same pip command; the fast tests keep it, constraints.txt and .dockerignore in step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
REQUIREMENTS = REPO / "requirements.txt"
CONSTRAINTS = REPO / "constraints.txt"
DAG_FILES = sorted(path for path in (REPO / "dags").glob("*.py") if not path.name.startswith("_"))
TEST_ONLY_PACKAGES = ("moto", "faker", "hypothesis", "pytest")

# Parses the DAGs and loads the plugins the way the image's DAG processor does: plugins/ reaches sys.path
# through Airflow's own plugins folder setting, not through PYTHONPATH.
PROBE = """
import importlib.util, json, sys
from airflow import plugins_manager
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], bundle_name="dags-folder", bundle_path=sys.argv[1])
plugins, errors = plugins_manager._get_plugins()
print(json.dumps({
    "dags": {dag_id: dag.fileloc for dag_id, dag in bag.dags.items()},
    "dag_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "plugins": sorted(p.name for p in plugins),
    "plugin_errors": errors,
    "test_only": [m for m in sys.argv[2].split(",") if importlib.util.find_spec(m)],
}))
"""


def clean_environment() -> dict[str, str]:
    """This process's environment without the test session's Airflow settings, import paths, virtualenv and
    the toolkit's own settings: what a fresh shell on a deployment machine would have."""
    prefixes = ("AIRFLOW", "PYTHON", "VIRTUAL_ENV", "BEDROCK_BATCH_", "CALL_CENTER_CONFIG")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def pinned_airflow() -> str:
    match = re.search(r"^apache-airflow==(\S+)$", CONSTRAINTS.read_text(), re.MULTILINE)
    assert match, "constraints.txt pins no apache-airflow version"
    return match.group(1)


def dockerfile_stage(name: str) -> str:
    """The instructions of one stage of the Dockerfile (``FROM ... AS name`` up to the next ``FROM``)."""
    stages = re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.MULTILINE)
    return next(stage for stage in stages if re.match(rf"FROM \S+ AS {name}\n", stage))


def docker_ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last matching pattern decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for include, regex in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not include
    return ignored


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        text = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(text):
            if text.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif text.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif text[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif text[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif text[i] == "[":
                end = text.index("]", i)
                regex, i = regex + text[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(text[i]), i + 1
        patterns.append((include, re.compile(regex + "$")))
    return patterns


class TestDockerfile:
    def test_base_image_is_the_airflow_version_the_constraints_pin(self):
        base = re.match(r"FROM apache/airflow:(\S+) AS airflow", dockerfile_stage("airflow")).group(1)
        assert base == pinned_airflow() == "3.3.2"

    def test_installs_requirements_with_the_constraints_keeping_airflow_fixed(self):
        stage = dockerfile_stage("airflow")
        install = re.search(r"RUN pip install (.*?)(?:\n\n|\Z)", stage, re.DOTALL).group(1)
        words = install.replace("\\\n", " ").split()
        assert '"apache-airflow==${AIRFLOW_VERSION}"' in words
        assert words[words.index("-r") + 1].endswith("/requirements.txt")
        assert words[words.index("-c") + 1].endswith("/constraints.txt")
        assert re.search(r"^COPY .*\brequirements\.txt constraints\.txt ", stage, re.MULTILINE)

    def test_build_context_holds_what_the_image_needs(self):
        patterns = dockerignore_patterns()
        needed = ["requirements.txt", "requirements-dev.txt", "constraints.txt", "plugins/.airflowignore"]
        needed += [str(p.relative_to(REPO)) for p in (REPO / "dags").glob("*.py")]
        needed += [str(p.relative_to(REPO)) for p in (REPO / "include").rglob("*") if p.is_file()]
        needed += [str(p.relative_to(REPO)) for p in (REPO / "plugins" / "bedrock_batch").rglob("*.py")]
        needed += ["plugins/bedrock_batch_plugin.py", "plugins/bedrock_batch/py.typed"]
        assert [path for path in needed if docker_ignored(path, patterns)] == []

    def test_build_context_leaves_out_secrets_tooling_and_development_code(self):
        patterns = dockerignore_patterns()
        unwanted = [
            ".env",
            ".git/HEAD",
            ".venv/bin/python",
            "logs/scheduler/latest",
            "tests/conftest.py",
            "dist/plugins.zip",
            "dev/bedrock_batch_dev/emulator/server.py",
            "dev/bedrock_batch_dev/sample_data/calls.py",
            "dev/bedrock_batch_dev/demo.py",
            "plugins/bedrock_batch/__pycache__/hooks.cpython-311.pyc",
            "plugins/bedrock_batch.egg-info/PKG-INFO",
            "dags/__pycache__/call_center_summarization.cpython-311.pyc",
        ]
        assert [path for path in unwanted if not docker_ignored(path, patterns)] == []

    def test_every_copied_source_exists(self):
        for match in re.finditer(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE):
            for source in match.group(1).split():
                assert (REPO / source).exists(), source


@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_requirements_install_on_airflow_and_every_dag_imports(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    # A clean environment: none of the test session's Airflow settings or import paths; pip keeps its cache.
    env = clean_environment()
    env.pop("PIP_NO_CACHE_DIR", None)
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    install += [f"apache-airflow=={pinned_airflow()}", "-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS)]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=2100)
    assert result.returncode == 0, result.stderr[-4000:]

    home = tmp_path / "airflow-home"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        }
    )
    probe = [python, "-c", PROBE, str(REPO / "dags"), ",".join(TEST_ONLY_PACKAGES)]
    result = subprocess.run(probe, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])

    assert parsed["dag_errors"] == {}
    assert {Path(fileloc).name for fileloc in parsed["dags"].values()} == {path.name for path in DAG_FILES}
    assert {"call_center_summarization", "call_summary_kpis"} <= set(parsed["dags"])
    assert parsed["plugin_errors"] == {}
    assert "bedrock_batch" in parsed["plugins"]
    # requirements.txt alone is enough: nothing from requirements-dev.txt was needed or installed.
    assert parsed["test_only"] == []
