"""bedrock_batch.resources: the order include/ is searched in, and the error when it is nowhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bedrock_batch.errors import ConfigError
from bedrock_batch.resources import (
    INCLUDE_DIR_ENV,
    PACKAGED_PRICE_FILE,
    include_path,
    include_search_path,
    package_file,
)

REPO = Path(__file__).resolve().parents[2]
CHECKOUT_INCLUDE = REPO / "include"


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every place include/ may be, each holding prompts/, and the environment that points at them."""
    project = tmp_path / "project"
    places = {
        "explicit": tmp_path / "explicit" / "include",
        "beside_dags": project / "include",
        "inside_dags": project / "dags" / "include",
        "airflow_home": tmp_path / "home" / "include",
    }
    for place in places.values():
        (place / "prompts").mkdir(parents=True)
    monkeypatch.setenv(INCLUDE_DIR_ENV, str(places["explicit"]))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(project / "dags"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    return places


class TestIncludeSearchPath:
    def test_order_without_the_environment_variable(self, places, monkeypatch):
        monkeypatch.delenv(INCLUDE_DIR_ENV)
        assert [candidate.path for candidate in include_search_path()] == [
            places["beside_dags"],
            places["inside_dags"],
            places["airflow_home"],
            CHECKOUT_INCLUDE,
        ]

    def test_the_environment_variable_is_the_only_place(self, places):
        assert [candidate.path for candidate in include_search_path()] == [places["explicit"]]

    def test_relative_and_home_paths_become_absolute(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv(INCLUDE_DIR_ENV, "deploy/include")
        assert include_search_path()[0].path == tmp_path / "deploy" / "include"
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv(INCLUDE_DIR_ENV, "~/include")
        assert include_search_path()[0].path == tmp_path / "include"

    def test_one_folder_for_airflow_home_and_beside_the_dags_folder(self, tmp_path, monkeypatch):
        # The compose and Astro layout: $AIRFLOW_HOME/dags, so both candidates are $AIRFLOW_HOME/include.
        monkeypatch.delenv(INCLUDE_DIR_ENV, raising=False)
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
        monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path / "dags"))
        paths = [candidate.path for candidate in include_search_path()]
        assert paths == [tmp_path / "include", tmp_path / "dags" / "include", CHECKOUT_INCLUDE]


class TestIncludePath:
    def test_first_place_holding_the_entry_wins_in_the_documented_order(self, places, monkeypatch):
        assert include_path("prompts") == places["explicit"] / "prompts"
        monkeypatch.delenv(INCLUDE_DIR_ENV)
        for name in ("beside_dags", "inside_dags", "airflow_home"):
            assert include_path("prompts") == places[name] / "prompts", name
            shutil.rmtree(places[name])
        # Nothing deployed anywhere: the checkout this (editable) package runs from.
        assert include_path("prompts") == CHECKOUT_INCLUDE / "prompts"

    def test_a_folder_without_the_entry_is_skipped(self, places, monkeypatch):
        monkeypatch.delenv(INCLUDE_DIR_ENV)
        config = places["inside_dags"] / "config" / "pipeline.json"
        config.parent.mkdir()
        config.write_text("{}")
        assert places["beside_dags"].is_dir()
        assert include_path("config", "pipeline.json") == config

    def test_a_wrong_environment_variable_fails_instead_of_falling_through(self, places):
        shutil.rmtree(places["explicit"] / "prompts")
        with pytest.raises(ConfigError) as raised:
            include_path("prompts")
        message = str(raised.value)
        assert f"{places['explicit'] / 'prompts'} does not exist" in message
        assert INCLUDE_DIR_ENV in message
        assert str(places["beside_dags"]) not in message

    def test_nothing_found_lists_every_place_in_order_and_the_fix(self, places, monkeypatch):
        monkeypatch.delenv(INCLUDE_DIR_ENV)
        with pytest.raises(ConfigError) as raised:
            include_path("config", "absent.json")
        message = str(raised.value)
        assert message.startswith("cannot find include/config/absent.json")
        looked = [places["beside_dags"], places["inside_dags"], places["airflow_home"], CHECKOUT_INCLUDE]
        positions = [message.index(f"{place / 'config' / 'absent.json'}  (") for place in looked]
        assert positions == sorted(positions)
        assert "upload it under dags/" in message
        assert f"set ${INCLUDE_DIR_ENV}" in message


class TestPackageData:
    def test_files_below_the_package(self):
        assert package_file("pricing", "bedrock_batch_prices.json") == PACKAGED_PRICE_FILE
        assert Path(str(PACKAGED_PRICE_FILE)).parent == REPO / "plugins" / "bedrock_batch" / "pricing"
        assert PACKAGED_PRICE_FILE.is_file()

    def test_finding_include_does_not_import_airflow_when_the_dags_folder_is_set(self):
        # Pure modules stay usable (and fast to test) without Airflow; the DAGs folder comes from the
        # environment variable Airflow itself gives priority to.
        probe = (
            "import sys; from bedrock_batch.prompts import load_template; "
            "load_template('call_center_summary', 'v1'); print('airflow' in sys.modules)"
        )
        env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags")}
        env.pop(INCLUDE_DIR_ENV, None)
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout
        assert out.strip() == "False"
