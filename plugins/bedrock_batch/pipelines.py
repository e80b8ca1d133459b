"""Pipelines declared as folders: ``include/pipelines/<name>/`` read and checked into a :class:`Pipeline`.

A folder holds

- ``pipeline.yaml``: flat settings, the pipeline's own (``dag_id``, ``table``, ``key_column``,
  ``prompt_columns``, ``reply_schema``, ``manual_run_partition`` …, :data:`DEFINITION_FIELDS`) and any
  setting of :class:`~bedrock_batch.config.PipelineConfig` (``source_uri``, ``model_id``, quotas …);
- ``prompts/<version>/system.txt`` and ``user.txt``: the prompt templates, a ``{placeholder}`` per column;
- ``reply_schema.json``: the JSON Schema of one reply (optional: without it replies are free text).

A deployment overrides settings without touching the folder: the file named by the environment variable
``BEDROCK_BATCH_PIPELINE_<NAME>_CONFIG`` (or the variable ``config_env`` names) is read over
``pipeline.yaml``; when it is unset, ``config_file`` (if declared) is. Everything that can be checked
without a network call is checked here, when the DAG file is parsed, and a problem raises
:class:`~bedrock_batch.errors.PipelineError` starting with the file and the field, e.g.
``include/pipelines/reviews/pipeline.yaml: model_id: …``.

No Airflow here (the DAG and task-group factory is :mod:`bedrock_batch.factory`), nor pyarrow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from bedrock_batch.config import PipelineConfig, as_choice, as_column_name
from bedrock_batch.errors import ConfigError, PipelineError, SchemaError, TemplateError
from bedrock_batch.models import (
    INVOCATION_TYPES,
    STRUCTURED_OUTPUT_CHOICES,
    family_for,
    structured_output_mode,
)
from bedrock_batch.prompts import PromptTemplate, load_template
from bedrock_batch.resources import include_path

PIPELINE_FILE = "pipeline.yaml"
PROMPTS_FOLDER = "prompts"
DEFAULT_REPLY_SCHEMA = "reply_schema.json"
#: The environment variable naming a settings file for pipeline ``<NAME>`` (upper case, ``_`` for the rest).
CONFIG_ENV_TEMPLATE = "BEDROCK_BATCH_PIPELINE_{NAME}_CONFIG"
#: What prepare reads (:data:`bedrock_batch.sources.SourceFormat`).
SOURCE_FORMATS = ("text", "jsonl", "csv", "parquet", "transcribe", "bedrock")
#: The partition a run without a logical date (API ``logical_date: null``, asset-triggered) processes, as a
#: Jinja expression; a run with a logical date processes its ``ds``.
PARTITION_EXPRESSIONS: Mapping[str, str] = {
    "previous_day": (
        "ds if ds is defined and ds else macros.ds_add(dag_run.run_after.strftime('%Y-%m-%d'), -1)"
    ),
    "current_day": "ds if ds is defined and ds else dag_run.run_after.strftime('%Y-%m-%d')",
}
#: ``pipeline.yaml`` fields that are not :class:`~bedrock_batch.config.PipelineConfig` settings.
DEFINITION_FIELDS = (
    "dag_id",
    "description",
    "owner",
    "tags",
    "start_date",
    "max_active_runs",
    "table",
    "key_column",
    "prompt_columns",
    "reply_schema",
    "structured_output",
    "repair_invalid_replies",
    "manual_run_partition",
    "config_file",
    "config_env",
)
DEFAULT_OWNER = "data-platform"
DEFAULT_TAGS = ("bedrock", "batch-inference")
DEFAULT_START_DATE = date(2026, 1, 1)
_DAG_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
_TABLE = re.compile(r"[a-z][a-z0-9_]{0,254}")


@dataclass(frozen=True)
class Pipeline:
    """One pipeline folder, read and checked.

    :param name: the folder's name.
    :param folder: the folder.
    :param config: the settings: ``pipeline.yaml``'s over the defaults, the override file's over both.
    :param dag_id: the DAG's id (default: ``name``).
    :param description: one line for the DAG list.
    :param owner: the DAG's owner.
    :param tags: the DAG's tags.
    :param start_date: the DAG's start date.
    :param max_active_runs: runs of the DAG at once.
    :param table: the results table under ``results_uri`` (default: ``name``).
    :param key_column: the source key: the id column read and the table's first column.
    :param prompt_name: the template name under ``prompts_root``; ``None`` for a ``bedrock`` source.
    :param prompts_root: the folder holding the templates (the pipeline's); ``None``: ``include/prompts``.
    :param prompt_columns: placeholder → source column; ``None``: each placeholder is the column of its name.
    :param reply_schema: the reply's JSON Schema file; ``None``: free-text replies.
    :param structured_output: ``auto``, ``native``, ``tool`` or ``prompt``.
    :param repair_invalid_replies: re-ask each ``invalid_output`` reply once, on demand, before publishing.
    :param manual_run_partition: the partition of a run without a logical date
        (:data:`PARTITION_EXPRESSIONS`).
    :param doc_md: the folder's ``README.md``, if any.
    :param config_file: the settings file read over ``pipeline.yaml``, if any.
    """

    name: str
    folder: Path
    config: PipelineConfig
    dag_id: str
    description: str
    owner: str
    tags: tuple[str, ...]
    start_date: date
    max_active_runs: int
    table: str
    key_column: str
    prompt_name: str | None
    prompts_root: Path | None
    prompt_columns: Mapping[str, str] | None
    reply_schema: Path | None
    structured_output: str
    repair_invalid_replies: bool
    manual_run_partition: str
    doc_md: str | None = dataclasses.field(repr=False)
    config_file: Path | None

    @property
    def partition_expression(self) -> str:
        """The Jinja expression of the run's partition (``YYYY-MM-DD``), for templates."""
        return PARTITION_EXPRESSIONS[self.manual_run_partition]

    @property
    def partition_template(self) -> str:
        """``{{ <partition_expression> }}``: a templated argument that renders the run's partition."""
        return "{{ " + self.partition_expression + " }}"


def config_env_name(name: str) -> str:
    """The default environment variable of pipeline ``name``: ``BEDROCK_BATCH_PIPELINE_<NAME>_CONFIG``."""
    return CONFIG_ENV_TEMPLATE.format(NAME=re.sub(r"[^A-Z0-9]", "_", name.upper()))


def pipeline_folder(name_or_path: str | os.PathLike[str]) -> Path:
    """The folder of a pipeline: a path as it is, a bare name under ``include/pipelines/``.

    :param name_or_path: ``"product_reviews"`` or a path to a folder (anything with a ``/`` is a path).
    :raises ConfigError: when a bare name is in no ``include/pipelines/`` (the message lists where it looked).
    """
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, Path) or os.sep in text or "/" in text:
        return Path(os.path.abspath(os.path.expanduser(text)))
    return include_path("pipelines", text)


def load_pipeline(
    name_or_path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Pipeline:
    """Read and check a pipeline folder.

    :param name_or_path: a pipeline name under ``include/pipelines/`` or the path of a folder.
    :param environ: the environment to read the override variable from (default: ``os.environ``).
    :raises PipelineError: naming the file and the field of the first problem.
    """
    folder = pipeline_folder(name_or_path)
    return _Reader(folder, os.environ if environ is None else environ).pipeline()


class _Reader:
    """Reads one folder; every message starts with the file (and the field) at fault."""

    def __init__(self, folder: Path, environ: Mapping[str, str]) -> None:
        self.folder = folder
        self.name = folder.name
        self.file = folder / PIPELINE_FILE
        self.environ = environ

    def fail(self, field: str | None, message: str, file: Path | str | None = None) -> PipelineError:
        where = f"{file or self.file}: " + (f"{field}: " if field else "")
        return PipelineError(where + message)

    def pipeline(self) -> Pipeline:
        raw = self.read(self.file, required=True)
        settings_names = {f.name for f in dataclasses.fields(PipelineConfig)}
        unknown = sorted(set(raw) - settings_names - set(DEFINITION_FIELDS))
        if unknown:
            raise self.fail(
                unknown[0],
                f"unknown field; pipeline fields: {sorted(DEFINITION_FIELDS)}; "
                f"settings: {sorted(settings_names)} (docs/pipelines.md)",
            )
        definition = {k: v for k, v in raw.items() if k in DEFINITION_FIELDS}
        config, config_file = self.config({k: v for k, v in raw.items() if k in settings_names}, definition)

        dag_id = self.text(definition, "dag_id", self.name)
        if not _DAG_ID.fullmatch(dag_id):
            raise self.fail("dag_id", f"must be letters, digits, '_', '-' or '.', got {dag_id!r}")
        table = self.text(definition, "table", self.name)
        if not _TABLE.fullmatch(table):
            raise self.fail(
                "table",
                f"must be lowercase letters, digits and underscores (a Glue table name), got {table!r}",
            )
        key_column = self.guard(
            "key_column", as_column_name, "key_column", definition.get("key_column") or config.id_column
        )
        prompt_name, prompts_root, template = self.prompts(config)
        prompt_columns = self.prompt_columns(definition.get("prompt_columns"), template)
        structured_output = self.guard(
            "structured_output",
            as_choice,
            "structured_output",
            definition.get("structured_output", "auto"),
            STRUCTURED_OUTPUT_CHOICES,
        )
        self.check_model(config, structured_output)
        readme = self.folder / "README.md"
        return Pipeline(
            name=self.name,
            folder=self.folder,
            config=config,
            dag_id=dag_id,
            description=self.text(definition, "description", f"Bedrock batch inference pipeline {self.name}"),
            owner=self.text(definition, "owner", DEFAULT_OWNER),
            tags=self.tags(definition),
            start_date=self.start_date(definition.get("start_date", DEFAULT_START_DATE)),
            max_active_runs=self.positive(definition, "max_active_runs", 3),
            table=table,
            key_column=key_column,
            prompt_name=prompt_name,
            prompts_root=prompts_root,
            prompt_columns=prompt_columns,
            reply_schema=self.reply_schema(definition),
            structured_output=structured_output,
            repair_invalid_replies=self.flag(definition, "repair_invalid_replies", False),
            manual_run_partition=self.guard(
                "manual_run_partition",
                as_choice,
                "manual_run_partition",
                definition.get("manual_run_partition", "previous_day"),
                tuple(PARTITION_EXPRESSIONS),
            ),
            doc_md=readme.read_text(encoding="utf-8") if readme.is_file() else None,
            config_file=config_file,
        )

    # --- files -------------------------------------------------------------------------------------------

    def read(self, path: Path, *, required: bool) -> dict[str, Any]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if not required:
                return {}
            raise self.fail(None, "no such file: a pipeline folder needs a pipeline.yaml", path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self.fail(None, f"cannot be read ({exc})", path) from exc
        try:
            loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise self.fail(
                None, f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}", path
            ) from None
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise self.fail(None, "must hold a mapping of field: value", path)
        return loaded

    def config(
        self, settings: dict[str, Any], definition: Mapping[str, Any]
    ) -> tuple[PipelineConfig, Path | None]:
        """The settings: folder defaults < pipeline.yaml < the override file (the variable's, else
        ``config_file``)."""
        env_name = self.text(definition, "config_env", config_env_name(self.name))
        override: Path | None = None
        if self.environ.get(env_name):
            override = Path(os.path.expanduser(self.environ[env_name]))
        elif definition.get("config_file") is not None:
            override = Path(os.path.normpath(self.folder / self.text(definition, "config_file", "")))
        merged: dict[str, Any] = {
            "text_column": None,
            "glue_table": self.text(definition, "table", self.name),
        }
        if definition.get("key_column") is not None:
            merged["id_column"] = definition["key_column"]
        if (self.folder / PROMPTS_FOLDER).is_dir():
            merged["prompt_name"] = None
        merged.update(settings)
        origin = {"": str(self.file)}
        if override is not None:
            if not override.is_file():
                source = f"${env_name}" if self.environ.get(env_name) else f"{self.file}: config_file"
                raise PipelineError(f"{source}: {override} is not a file")
            overrides = self.read(override, required=True)
            merged.update(overrides)
            origin.update(dict.fromkeys(overrides, str(override)))
        try:
            return PipelineConfig.from_mapping(merged, origin), override
        except PipelineError:
            raise
        except ConfigError as exc:
            raise PipelineError(str(exc)) from None

    def prompts(self, config: PipelineConfig) -> tuple[str | None, Path | None, PromptTemplate | None]:
        """The template's name and root: the folder's ``prompts/``, else ``include/prompts/<prompt_name>``."""
        if config.source_format == "bedrock":
            return None, None, None
        own = self.folder / PROMPTS_FOLDER
        try:
            if own.is_dir():
                if config.prompt_name is not None:
                    raise self.fail(
                        "prompt_name",
                        f"this folder has its own {PROMPTS_FOLDER}/: leave prompt_name out (it names "
                        "templates under include/prompts/ for folders without one)",
                    )
                return (
                    PROMPTS_FOLDER,
                    self.folder,
                    load_template(PROMPTS_FOLDER, config.prompt_version, root=self.folder),
                )
            if config.prompt_name is None:
                raise self.fail(
                    "prompt_name",
                    f"no {own}/<prompt_version>/ templates and no prompt_name under include/prompts/; "
                    "a source that is not already in Bedrock's format needs a prompt",
                )
            # Found in include/prompts/ again when the task runs, as prompt_name always was.
            return config.prompt_name, None, load_template(config.prompt_name, config.prompt_version)
        except TemplateError as exc:
            raise self.fail("prompt_version", str(exc)) from None

    def prompt_columns(self, value: Any, template: PromptTemplate | None) -> Mapping[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.fail(
                "prompt_columns", f"must map each placeholder to a source column name, got {value!r}"
            )
        if template is not None:
            strangers = sorted(set(value) - template.fields)
            if strangers:
                raise self.fail(
                    "prompt_columns",
                    f"{strangers} are not placeholders of prompt {template.label} "
                    f"(its placeholders: {sorted(template.fields)})",
                )
        return dict(value)

    def reply_schema(self, definition: Mapping[str, Any]) -> Path | None:
        """The schema file, checked against the structured-outputs subset now rather than when a job fails."""
        from bedrock_batch.schemas import check_supported

        if "reply_schema" in definition and definition["reply_schema"] is None:
            return None
        path = self.folder / self.text(definition, "reply_schema", DEFAULT_REPLY_SCHEMA)
        if not path.is_file():
            if "reply_schema" not in definition:
                return None  # no schema file, none asked for: free-text replies
            raise self.fail("reply_schema", f"{path} does not exist")
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self.fail(None, f"not valid JSON: {exc}", path) from None
        try:
            check_supported(schema)
        except SchemaError as exc:
            raise PipelineError(str(SchemaError(exc.rule, exc.pointer, source=str(path)))) from None
        return path

    def check_model(self, config: PipelineConfig, structured_output: str) -> None:
        """The model's family is known, and it takes the structured-output mode asked for."""
        for name, value, choices in (
            ("invocation_type", config.invocation_type, INVOCATION_TYPES),
            ("source_format", config.source_format, SOURCE_FORMATS),
        ):
            self.guard(name, as_choice, name, value, choices)
        try:
            family_for(config.model_id, invocation_type=config.invocation_type)
        except ConfigError as exc:
            raise self.fail("model_id", str(exc)) from None
        if structured_output != "auto":
            self.guard(
                "structured_output",
                structured_output_mode,
                config.model_id,
                config.invocation_type,
                structured_output,
            )

    # --- values ------------------------------------------------------------------------------------------

    def guard(self, field: str, check: Any, *args: Any) -> Any:
        try:
            return check(*args)
        except ConfigError as exc:
            raise self.fail(field, str(exc)) from None

    def text(self, definition: Mapping[str, Any], field: str, default: str) -> str:
        value = definition.get(field, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def flag(self, definition: Mapping[str, Any], field: str, default: bool) -> bool:
        value = definition.get(field, default)
        if not isinstance(value, bool):
            raise self.fail(field, f"must be true or false, got {value!r}")
        return value

    def positive(self, definition: Mapping[str, Any], field: str, default: int) -> int:
        value = definition.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(field, f"must be a whole number, at least 1, got {value!r}")
        return value

    def tags(self, definition: Mapping[str, Any]) -> tuple[str, ...]:
        value = definition.get("tags", list(DEFAULT_TAGS))
        if not isinstance(value, list) or not value or not all(isinstance(t, str) and t for t in value):
            raise self.fail("tags", f"must be a non-empty list of strings, got {value!r}")
        return tuple(value)

    def start_date(self, value: Any) -> date:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise self.fail("start_date", f"must be a date YYYY-MM-DD, got {value!r}") from None
