"""A run's reply: its schema, how the schema reaches the model, and how every reply is read back.

Prepare builds a :class:`ReplyFormat` from what the pipeline declares (:meth:`ReplyFormat.declare`: a reply
schema file or mapping and a structured-output mode) and records it in the run's XCom
(:meth:`ReplyFormat.to_run`); collect, repair and publish rebuild the very same one from there
(:meth:`ReplyFormat.from_run`) and read each reply with it (:meth:`ReplyFormat.read`): parsed with the model
family and the output format, validated against the whole schema. A pipeline without a reply schema gets the
reply text as it is (free-text tasks).

No Airflow here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from bedrock_batch.errors import ConfigError, SchemaError
from bedrock_batch.models import (
    OUTPUT_MODES,
    STRUCTURED_OUTPUT_CHOICES,
    ModelFamily,
    OutputFormat,
    output_format_for,
)
from bedrock_batch.schemas import ReplySchema, parse_reply, prompt_instructions

#: Statuses of a reply read back (:meth:`ReplyFormat.read`).
SUCCEEDED = "succeeded"
INVALID_OUTPUT = "invalid_output"

#: The results table's own columns around the reply columns (the key column, named by publish, comes first);
#: a reply property may not take one of these names.
RESULT_COLUMNS = (
    "record_id",
    "ds",
    "model_id",
    "parse_error",
    "raw_text",
    "input_tokens",
    "output_tokens",
    "stop_reason",
    "status",
    "error_code",
    "error_message",
    "retryable",
    "job_arn",
    "dag_run_id",
    "processed_at",
    "source_position",
)
#: The one reply column of a pipeline without a reply schema.
FREE_TEXT_COLUMN = "text"

_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]")


class ReadReply(NamedTuple):
    """One reply read back.

    :param status: :data:`SUCCEEDED` or :data:`INVALID_OUTPUT`.
    :param text: with a reply schema and a conforming reply, the reply's value as compact JSON (enum values in
        the schema's spelling); otherwise the text the model wrote, the assistant prefill re-attached.
    :param parse_error: ``"<path>: <reason>"`` of the first violation when the reply does not conform.
    :param input_tokens: prompt tokens the model reported.
    :param output_tokens: generated tokens the model reported.
    :param stop_reason: why generation ended, in the model's words.
    """

    status: str
    text: str
    parse_error: str | None
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None


@dataclass(frozen=True)
class ReplyFormat:
    """A run's reply schema (``None``: free text) and how it reaches the model (``None``: it does not, e.g.
    records built elsewhere).

    :param schema: the reply schema the replies are validated against, validator-only keywords included.
    :param output: the schema as sent to the service (:meth:`ReplySchema.service_schema`) and its mode.
    """

    schema: ReplySchema | None = None
    output: OutputFormat | None = None

    @classmethod
    def declare(
        cls,
        reply_schema: Mapping[str, Any] | str | Path | None,
        *,
        model_id: str,
        family: ModelFamily | None,
        invocation_type: str = "InvokeModel",
        structured_output: str = "auto",
        name: str | None = None,
        default_name: str = "reply",
    ) -> ReplyFormat:
        """The reply format a pipeline declares.

        :param reply_schema: a JSON Schema (mapping or JSON text), a path to a JSON file (relative paths are
            looked for in the working directory, then in the project's ``include/``), or ``None`` for free
            text.
        :param model_id: the model, for the ``auto`` mode and the tool's ``strict`` flag / the prefill.
        :param family: the model family whose bodies carry the schema; ``None`` when the records are not
            built here (``bedrock`` sources): the schema only validates the replies.
        :param invocation_type: ``InvokeModel`` or ``Converse``.
        :param structured_output: ``auto`` (the model's best mode), ``native``, ``tool`` or ``prompt``.
        :param name: the schema's name (structured-output ``name``, tool name); by default the schema file's
            folder name (``include/pipelines/<name>/reply_schema.json``), the file's name, or
            ``default_name`` for a mapping.
        :param default_name: the name of a schema given as a mapping, e.g. the prompt template's name.
        :raises SchemaError: when the schema is outside the supported subset (naming the file and pointer).
        :raises ConfigError: for an unknown mode, or a mode the model family cannot carry.
        """
        mode = _choice(structured_output)
        schema = load_reply_schema(reply_schema, name=name, default_name=default_name)
        if schema is None:
            return cls()
        if family is None:
            return cls(schema=schema)
        description = schema.description or schema.schema.get("description") or ""
        output = output_format_for(
            model_id,
            schema.service_schema(),
            schema.name,
            description=description if isinstance(description, str) else "",
            invocation_type=invocation_type,
            mode=None if mode == "auto" else mode,
        )
        if output.mode not in family.MODES:
            modes = [m for m in OUTPUT_MODES if m in family.MODES]
            raise ConfigError(
                f"the {family.name} family cannot carry reply schema {schema.name!r} in mode "
                f"{output.mode!r}; set structured_output to one of {modes}"
            )
        return cls(schema=schema, output=output)

    @property
    def instructions(self) -> str:
        """What the system prompt gets in prompt mode: the whole schema and how to answer, else nothing."""
        if self.schema is None or self.output is None or self.output.mode != "prompt":
            return ""
        return prompt_instructions(self.schema)

    def prefilled(self, family: ModelFamily) -> bool:
        """Whether requests end with the assistant prefill ``{`` (prompt mode, where the family allows it)."""
        return family.prefills(self.output)

    # -- the run's XCom ----------------------------------------------------------------------------------

    def to_run(self) -> dict[str, Any]:
        """The ``output_format`` and ``reply_schema`` keys of the run XCom (small, JSON)."""
        output = None
        if self.output is not None:
            output = {
                "mode": self.output.mode,
                "name": self.output.name,
                "description": self.output.description,
                "strict": self.output.strict,
                "prefill": self.output.prefill,
            }
        schema = None
        if self.schema is not None:
            schema = {
                "name": self.schema.name,
                "description": self.schema.description,
                "schema": dict(self.schema.schema),
            }
        return {"output_format": output, "reply_schema": schema}

    @classmethod
    def from_run(cls, run: Mapping[str, Any]) -> ReplyFormat:
        """The reply format prepare recorded in the run XCom (runs of earlier versions: free text).

        :param run: the ``run`` XCom.
        """
        recorded = run.get("reply_schema")
        if not isinstance(recorded, Mapping):
            return cls()
        schema = ReplySchema.from_mapping(
            recorded["schema"], name=recorded["name"], description=recorded.get("description")
        )
        given = run.get("output_format")
        if not isinstance(given, Mapping):
            return cls(schema=schema)
        output = OutputFormat(
            schema=schema.service_schema(),
            name=str(given["name"]),
            description=str(given.get("description") or ""),
            mode=str(given["mode"]),
            strict=bool(given.get("strict", True)),
            prefill=bool(given.get("prefill", True)),
        )
        return cls(schema=schema, output=output)

    # -- columns -----------------------------------------------------------------------------------------

    @property
    def columns(self) -> pa.Schema:
        """The reply's columns in the results table: one per top-level property in declaration order, or
        ``text`` for free text."""
        if self.schema is None:
            return pa.schema([pa.field(FREE_TEXT_COLUMN, pa.string())])
        return self.schema.compiled.arrow_schema

    def check_columns(self, taken: Collection[str]) -> None:
        """Refuse a reply property named like another column of the results table.

        :param taken: the table's other column names (:data:`RESULT_COLUMNS`, the key and passthrough
            columns); compared regardless of case, as Glue lowercases names.
        :raises SchemaError: naming the property.
        """
        if self.schema is None:
            return
        lowered = {name.lower(): name for name in taken}
        for name in self.columns.names:
            if name.lower() in lowered:
                raise SchemaError(
                    f'reply property "{name}" would be a second "{lowered[name.lower()]}" column of the '
                    "results table; rename the property",
                    f"/properties/{name}",
                    source=f"reply schema {self.schema.name}",
                )

    # -- reading replies ---------------------------------------------------------------------------------

    def read(self, family: ModelFamily, body: Mapping[str, Any]) -> ReadReply:
        """Read one ``modelOutput`` body: parse it with the family and the output format, validate the reply.

        Without an output format (records built elsewhere) the reply may or may not continue a prefill ``{``:
        both readings are tried.

        :param family: the model family of the job.
        :param body: the decoded ``modelOutput``.
        :raises ResponseFormatError: when the body does not have the family's shape.
        """
        reply = family.parse_response(body, self.output)
        tokens = (reply.input_tokens, reply.output_tokens, reply.stop_reason)
        if self.schema is None:
            return ReadReply(SUCCEEDED, reply.completed_text, None, *tokens)
        # Records built elsewhere (no output format) may have ended with the prefill: parse leniently.
        prefilled = reply.prefilled or self.output is None
        parsed = parse_reply(reply.text, self.schema.compiled, prefilled=prefilled)
        if parsed.violation is not None:
            return ReadReply(INVALID_OUTPUT, reply.completed_text, str(parsed.violation), *tokens)
        return ReadReply(SUCCEEDED, orjson.dumps(parsed.value).decode(), None, *tokens)


def load_reply_schema(
    reply_schema: Mapping[str, Any] | str | Path | None,
    *,
    name: str | None = None,
    default_name: str = "reply",
) -> ReplySchema | None:
    """A reply schema from what a pipeline declares (see :meth:`ReplyFormat.declare`), or ``None``.

    :param reply_schema: a mapping, JSON text, a path to a JSON file, or ``None`` (also ``""``/``"None"``,
        what a rendered empty template gives).
    :param name: the schema's name; see :meth:`ReplyFormat.declare`.
    :param default_name: the name of a schema given as a mapping or JSON text.
    :raises SchemaError: naming the file (if any) and the JSON pointer of the problem.
    """
    if reply_schema is None or (isinstance(reply_schema, str) and reply_schema.strip() in ("", "None")):
        return None
    if isinstance(reply_schema, Mapping):
        return ReplySchema.from_mapping(reply_schema, name=name or _schema_name(default_name))
    text = str(reply_schema).strip()
    if text.startswith("{"):
        try:
            mapping = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            raise SchemaError(f"not valid JSON: {err.msg}", source="reply_schema") from err
        return ReplySchema.from_mapping(mapping, name=name or _schema_name(default_name))
    return ReplySchema.from_file(_schema_path(text), name=name)


def _schema_path(text: str) -> Path:
    from bedrock_batch.resources import include_path

    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return include_path(*path.parts)


def _schema_name(text: str) -> str:
    # Prompt names may hold dots; structured-output names may not.
    return _NAME_CHARACTERS.sub("_", text)[:64] or "reply"


def _choice(structured_output: str) -> str:
    value = str(structured_output).strip()
    if value not in STRUCTURED_OUTPUT_CHOICES:
        raise ConfigError(
            f"structured_output must be one of {list(STRUCTURED_OUTPUT_CHOICES)}, got {structured_output!r}"
        )
    return value
