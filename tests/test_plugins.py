"""Airflow's plugin loading over plugins/: no import errors, no test-only packages pulled in."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PLUGINS_FOLDER

# Run in a fresh interpreter so that nothing the test session already imported hides a leak.
PROBE = """
import json, sys
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
print(json.dumps({
    "plugins": sorted(p.name for p in plugins),
    "errors": errors,
    "modules": sorted(sys.modules),
}))
"""

TEST_ONLY_PACKAGES = (
    "moto",
    "faker",
    "hypothesis",
    "pytest",
    "bedrock_batch_dev.emulator",
    "bedrock_batch_dev.sample_data",
)


def load_plugins() -> dict:
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


class TestPluginLoading:
    def test_loads_our_plugin_without_import_errors(self):
        result = load_plugins()
        assert result["errors"] == {}
        assert "bedrock_batch" in result["plugins"]

    def test_does_not_import_test_only_packages(self):
        modules = load_plugins()["modules"]
        leaked = [m for m in modules if any(m == p or m.startswith(p + ".") for p in TEST_ONLY_PACKAGES)]
        assert leaked == []

    def test_library_modules_are_not_loaded_under_bare_names(self):
        # Airflow registers plugin files under their file stem; the library must only exist as bedrock_batch.*
        stems = {path.stem for path in (PLUGINS_FOLDER / "bedrock_batch").rglob("*.py")} - {"__init__"}
        assert stems, "the library has modules"
        modules = set(load_plugins()["modules"])
        assert sorted(modules & stems) == []
