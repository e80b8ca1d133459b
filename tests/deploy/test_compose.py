"""docker-compose.yaml and .env.example: valid Compose, the Airflow 3.3 Celery stack, the local profile.

No Docker engine is needed: the file is validated against the Compose Specification's JSON schema
(vendored under tests/deploy/data/) and its content is checked against the Airflow CLI and the emulator CLI.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bedrock_batch_dev.deployment.compose import INTERPOLATION, interpolate

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
SCHEMA_FILE = Path(__file__).parent / "data" / "compose-spec.json"

# Airflow component → the command it runs (the official Airflow 3.3 compose file's set).
AIRFLOW_COMPONENTS = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
AIRFLOW_SERVICES = {*AIRFLOW_COMPONENTS, "airflow-init", "airflow-cli"}
LOCAL_SERVICES = {"bedrock-emulator", "local-setup"}
EMULATOR_SERVICE = "bedrock-emulator"
MOUNTED_FOLDERS = ("dags", "plugins", "include", "logs")

# Options that come from a provider the official image ships but this test environment does not install.
PROVIDER_OPTIONS = {("celery", "result_backend")}

ENV_LINE = re.compile(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def _unescaped(text: str) -> str:
    """``text`` without Compose's ``$$`` escapes, which the container's shell sees as a single ``$``."""
    return text.replace("$$", "")


def env_example() -> dict[str, str]:
    """Variables documented in .env.example (commented-out ones included) and their example values."""
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line)
        if match:
            variables[match.group(1)] = match.group(2)
    return variables


def interpolated_services() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env_example())["services"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def emulator_cli() -> Any:
    from bedrock_batch_dev.emulator.__main__ import build_parser

    return build_parser()


def schema_errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


class TestComposeSpecification:
    def test_file_validates_against_the_compose_specification(self, compose, validator):
        assert schema_errors(validator, compose) == []

    def test_file_validates_after_interpolation_with_the_example_settings(self, validator):
        document = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env_example())
        assert schema_errors(validator, document) == []
        assert document["services"]["airflow-apiserver"]["ports"] == ["8080:8080"]
        assert document["services"]["airflow-init"]["user"] == "0:0"
        assert document["services"]["airflow-scheduler"]["user"] == "50000:0"

    def test_the_schema_rejects_a_misspelt_service_key(self, compose, validator):
        broken = copy.deepcopy(compose)
        broken["services"]["airflow-triggerer"]["healtcheck"] = broken["services"]["airflow-triggerer"].pop(
            "healthcheck"
        )
        assert any("healtcheck" in error for error in schema_errors(validator, broken))

    def test_every_dollar_is_an_interpolation_or_an_escape(self):
        bare = re.findall(r"\$(?!\{)\S{0,20}", _unescaped(COMPOSE_FILE.read_text()))
        assert bare == [], "write $$ for the container's shell, ${VAR} for Compose"


class TestAirflowStack:
    def test_has_the_official_celery_stack(self, services):
        assert {"postgres", "redis", *AIRFLOW_SERVICES} <= set(services)
        for name, command in AIRFLOW_COMPONENTS.items():
            assert command_of(services[name]) == command.split(), name

    def test_runs_the_celery_executor_on_postgres_and_redis(self, services):
        for name in AIRFLOW_SERVICES:
            env = services[name]["environment"]
            assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
            assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
            assert re.match(r"redis://(:@)?redis:6379/", env["AIRFLOW__CELERY__BROKER_URL"]), name
            assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
            for backend in ("postgres", "redis"):
                assert services[name]["depends_on"][backend] == {"condition": "service_healthy"}, name

    def test_triggerer_runs_the_deferred_waits(self, services):
        triggerer = services["airflow-triggerer"]
        assert command_of(triggerer) == ["triggerer"]
        assert "AIRFLOW__TRIGGERER__CAPACITY" in triggerer["environment"]

    def test_components_start_after_init_has_finished(self, services):
        for name in AIRFLOW_COMPONENTS:
            assert services[name]["depends_on"]["airflow-init"] == {
                "condition": "service_completed_successfully"
            }, name

    def test_airflow_services_run_the_image_built_from_the_dockerfile(self, services):
        images = set()
        for name in AIRFLOW_SERVICES:
            assert services[name]["build"] == {"context": ".", "target": "airflow"}, name
            images.add(services[name]["image"])
        assert len(images) == 1
        assert re.search(r"^FROM \S+ AS airflow$", (REPO / "Dockerfile").read_text(), re.MULTILINE)

    def test_dags_plugins_include_and_logs_are_mounted(self, services):
        for name in AIRFLOW_SERVICES:
            volumes = services[name]["volumes"]
            for folder in MOUNTED_FOLDERS:
                assert f"${{AIRFLOW_PROJ_DIR:-.}}/{folder}:/opt/airflow/{folder}" in volumes, (name, folder)
        for folder in ("dags", "plugins", "include"):
            assert (REPO / folder).is_dir()

    def test_containers_keep_the_layout_the_code_resolves_include_from(self, services, monkeypatch):
        # The DAGs and the library look for include/ first beside Airflow's DAGs folder (/opt/airflow/dags in
        # the image), so dags/ and include/ must sit side by side in the containers.
        from bedrock_batch import resources

        monkeypatch.delenv(resources.INCLUDE_DIR_ENV, raising=False)
        monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/opt/airflow/dags")
        assert resources.include_search_path()[0].path == Path("/opt/airflow/include")
        for name in AIRFLOW_SERVICES:
            targets = {
                volume.rsplit(":", 1)[1] for volume in services[name]["volumes"] if not volume.endswith(":ro")
            }
            assert {f"/opt/airflow/{folder}" for folder in ("dags", "plugins", "include")} <= targets, name

    def test_long_running_services_have_health_checks(self, services):
        long_running = [name for name, service in services.items() if service.get("restart") == "always"]
        assert {"postgres", "redis", *AIRFLOW_COMPONENTS, EMULATOR_SERVICE} <= set(long_running)
        for name in long_running:
            check = services[name].get("healthcheck", {})
            assert check.get("test"), name
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            assert check.get("interval"), name
            assert check.get("retries"), name

    def test_one_shot_services_do_not_restart(self, services):
        for name in ("airflow-init", "local-setup", "airflow-cli"):
            assert services[name].get("restart", "no") == "no", name

    def test_airflow_settings_name_options_this_airflow_knows(self, services):
        from airflow.configuration import conf

        known = conf.configuration_description
        settings = {
            key
            for name in AIRFLOW_SERVICES
            for key in services[name]["environment"]
            if key.startswith("AIRFLOW__")
        }
        assert "AIRFLOW__TRIGGERER__CAPACITY" in settings
        for key in sorted(settings):
            section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
            if (section, option) in PROVIDER_OPTIONS:
                continue
            assert option in known.get(section, {}).get("options", {}), f"{key}: no [{section}] {option}"

    def test_init_creates_the_bedrock_pool_counting_deferred_tasks(self, services):
        from airflow.cli.cli_parser import get_parser

        init = interpolated_services()["airflow-init"]
        script = init["command"][-1].replace("\\\n", " ")
        line = next(line for line in script.splitlines() if "airflow pools set" in line)
        # The container's shell expands these from the service's environment.
        for name, value in init["environment"].items():
            line = line.replace(f"${{{name}}}", str(value))
        words = shlex.split(line)
        args = get_parser().parse_args(words[words.index("airflow") + 1 :])
        assert args.include_deferred is True
        assert args.pool == init["environment"]["BEDROCK_BATCH_POOL"]
        assert int(args.slots) == 20

    def test_deploy_doc_shows_the_same_pool_command(self):
        text = DEPLOY_DOC.read_text()
        assert re.search(r"airflow pools set bedrock_batch_\S+ 20 .*--include-deferred", text)


class TestLocalProfile:
    def test_emulator_and_setup_exist_only_in_the_local_profile(self, services):
        for name, service in services.items():
            if name in LOCAL_SERVICES:
                assert service.get("profiles") == ["local"], name
            elif name != "airflow-cli":
                assert "profiles" not in service, f"{name} must run without any profile"

    def test_emulator_runs_the_emulator_cli_on_its_default_ports(self, services, emulator_cli):
        command = command_of(interpolated_services()[EMULATOR_SERVICE])
        assert command[:3] == ["python", "-m", "bedrock_batch_dev.emulator"]
        args = emulator_cli.parse_args(command[3:])
        assert args.host == "0.0.0.0"
        assert args.port == emulator_cli.get_default("port")
        assert args.s3_port == emulator_cli.get_default("s3_port")
        published = {port.rsplit(":", 1)[1] for port in services[EMULATOR_SERVICE]["ports"]}
        assert published == {str(args.port), str(args.s3_port)}

    def test_emulator_health_check_asks_both_servers(self, services, emulator_cli):
        check = " ".join(services[EMULATOR_SERVICE]["healthcheck"]["test"])
        assert f"localhost:{emulator_cli.get_default('port')}/_emulator/health" in check
        assert f"localhost:{emulator_cli.get_default('s3_port')}/" in check

    def test_aws_default_points_every_service_the_code_uses_at_the_emulator(self, services, emulator_cli):
        connection = json.loads(services["local-setup"]["environment"]["LOCAL_AWS_CONNECTION"])
        assert connection["conn_type"] == "aws"
        extra = connection["extra"]
        assert extra["region_name"] == emulator_cli.get_default("region")
        host = f"http://{EMULATOR_SERVICE}"
        assert extra["service_config"] == {
            "s3": {"endpoint_url": f"{host}:{emulator_cli.get_default('s3_port')}"},
            "bedrock": {"endpoint_url": f"{host}:{emulator_cli.get_default('port')}"},
            "bedrock-runtime": {"endpoint_url": f"{host}:{emulator_cli.get_default('port')}"},
        }
        script = services["local-setup"]["command"][-1]
        assert 'airflow connections add aws_default --conn-json "$${LOCAL_AWS_CONNECTION}"' in script

    def test_local_services_have_the_library_and_the_test_only_packages(self, services):
        for name in LOCAL_SERVICES:
            service = services[name]
            assert service["build"] == {"context": ".", "target": "local"}, name
            for folder in ("plugins", "dev"):
                assert f"/opt/airflow/{folder}" in service["environment"]["PYTHONPATH"].split(":"), name
                assert any(re.search(rf":/opt/airflow/{folder}(:ro)?$", v) for v in service["volumes"]), name
        dockerfile = (REPO / "Dockerfile").read_text()
        assert re.search(r"^FROM airflow AS local$", dockerfile, re.MULTILINE)
        pattern = re.search(r"grep -E '([^']+)' \S*requirements-dev\.txt", dockerfile).group(1)
        picked = [
            line
            for line in (REPO / "requirements-dev.txt").read_text().splitlines()
            if re.match(pattern, line)
        ]
        assert sorted(line.split("==")[0] for line in picked) == ["faker", "moto[server]"]

    def test_without_the_profile_airflow_uses_aws_credentials_from_the_environment(self, services):
        for name in AIRFLOW_SERVICES:
            env = services[name]["environment"]
            assert EMULATOR_SERVICE not in json.dumps(env), name
            assert "AIRFLOW_CONN_AWS_DEFAULT" not in env, name
            for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                # A key without a value: Compose passes the caller's variable through, or leaves it unset.
                assert variable in env, (name, variable)
                assert env[variable] is None, (name, variable)


class TestEnvExample:
    def test_documents_every_variable_the_compose_file_uses(self, services):
        used = set(INTERPOLATION.findall(_unescaped(COMPOSE_FILE.read_text())))
        used = {name for name, _, _ in used}
        passed_through = {
            key
            for service in services.values()
            for key, value in service.get("environment", {}).items()
            if value is None
        }
        missing = sorted((used | passed_through) - set(env_example()))
        assert missing == []

    def test_documents_no_variable_the_compose_file_ignores(self, services):
        text = _unescaped(COMPOSE_FILE.read_text())
        unused = [name for name in env_example() if not re.search(rf"\b{name}\b", text)]
        assert unused == []

    def test_explains_every_variable(self):
        lines = ENV_EXAMPLE.read_text().splitlines()
        for number, line in enumerate(lines):
            if ENV_LINE.match(line) and not line.startswith("#"):
                above = lines[number - 1]
                assert above.startswith("#") or ENV_LINE.match(above), f"{line}: add a comment above it"

    def test_example_values_are_the_compose_defaults(self):
        defaults = {}
        for name, operator, argument in INTERPOLATION.findall(_unescaped(COMPOSE_FILE.read_text())):
            if operator in (":-", "-"):
                defaults.setdefault(name, set()).add(argument)
        example = env_example()
        for name, values in defaults.items():
            assert values == {example[name]}, (
                f"{name}: compose default(s) {values}, .env.example {example[name]!r}"
            )
