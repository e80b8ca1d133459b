"""Model families: the request body each model expects and the reply it returns, one small class per family.

Also infers the family from a model id, inference-profile id or ARN, estimates prompt tokens, and decides how
a declared reply schema reaches each model (:data:`STRUCTURED_OUTPUT_SUPPORT`): a native structured-output
field, a single forced tool, or the prompt (optionally with an assistant prefill of ``{``).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar, NoReturn

import orjson

from bedrock_batch.errors import ConfigError, ResponseFormatError, UnknownModelError

INVOCATION_TYPES = ("InvokeModel", "Converse")

# Geography prefixes of system-defined cross-region inference profiles (``us.anthropic.claude-…``).
REGION_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})

# ~4 characters per token holds for English prose with the Claude, Llama and Nova tokenizers.
CHARS_PER_TOKEN = 4

# Used for models missing from the table below: the window of the smaller text models (Llama 3 8B,
# Titan Text Express), so an unknown model rather sees a long prompt quarantined than rejected.
DEFAULT_CONTEXT_WINDOW_TOKENS = 8_192

# How a reply schema reaches the model, best first: a structured-output field of the request body
# (constrained decoding), a single forced tool whose input is the reply, or the prompt alone.
OUTPUT_MODES = ("native", "tool", "prompt")
# What a pipeline may ask for: a mode, or ``auto`` for the model's best (structured_output_mode).
STRUCTURED_OUTPUT_CHOICES = ("auto", *OUTPUT_MODES)

# What an assistant prefill starts the reply with in prompt mode; the model writes the rest of the object.
PREFILL = "{"

# Anthropic adds a tool-use system prompt to every request with tools: 340 tokens for Claude 3 Haiku with a
# forced tool (tool_choice any/tool), the largest forced-tool figure of its table (docs.anthropic.com,
# "Tool use pricing and tokens"). Estimates use it for every family in tool mode.
TOOL_USE_SYSTEM_PROMPT_TOKENS = 340

# Tool names (Anthropic, Converse toolSpec, OpenAI-style functions) and schema names share this pattern.
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

_CONVERSE_REFUSES_TOOLS = (
    "batch jobs of the Converse type reject records with toolConfig (every record fails with 400); "
    "use mode 'native' where the model supports outputConfig.textFormat, mode 'prompt', or "
    "invocation_type='InvokeModel' with a model whose native body takes tools"
)


@dataclass(frozen=True)
class InferenceParams:
    """Inference parameters shared by every family; a family without a matching field ignores it.

    :param max_tokens: most tokens the model may generate.
    :param temperature: sampling temperature; ``None`` keeps the model's default.
    :param top_p: nucleus sampling mass; ``None`` keeps the model's default.
    :param top_k: sample from the k most likely tokens (Anthropic, Nova and Mistral text completion only);
        ``None`` keeps the default.
    :param stop_sequences: strings that end generation (not supported by Llama and Mistral chat).
    """

    max_tokens: int = 1024
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError(f"temperature must not be negative, got {self.temperature!r}")
        if self.top_p is not None and not 0 <= self.top_p <= 1:
            raise ConfigError(f"top_p must be between 0 and 1, got {self.top_p!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {self.top_k!r}")
        if isinstance(self.stop_sequences, str):
            # A bare string would silently become one stop sequence per character.
            raise ConfigError("stop_sequences must be a tuple of strings, got a single string")

    def body_fields(self, names: Mapping[str, str]) -> dict[str, Any]:
        """The set parameters under a family's field names.

        :param names: parameter name (``max_tokens``, ``top_p``, ...) → the family's field name; parameters
            missing from ``names`` are not supported by the family and are dropped.
        """
        values: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop_sequences": list(self.stop_sequences) or None,
        }
        return {field: values[param] for param, field in names.items() if values[param] is not None}


def _plain_json(value: Any) -> Any:
    # orjson encodes dict but not other mappings (MappingProxyType, ...): hand those over as dicts.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@dataclass(frozen=True)
class OutputFormat:
    """A declared reply schema and how it reaches the model; :func:`output_format_for` fills in the mode.

    :param schema: the JSON Schema of the reply (checked elsewhere, see ``bedrock_batch.schemas``); kept as a
        plain-dict copy.
    :param name: the schema's name, 1-64 letters, digits, ``_`` or ``-``: it names the tool in tool mode and
        the schema in native mode.
    :param description: what the reply is, sent along with the schema where the body has a field for it.
    :param mode: ``native`` (the body's structured-output field), ``tool`` (one forced tool whose input is
        the reply) or ``prompt`` (the body unchanged; the prompt carries the schema).
    :param strict: tool mode only: mark the tool ``"strict": true`` (constrained tool input). Claude before
        4.5 rejects the flag; Nova needs none (it always constrains tool input); :func:`output_format_for`
        sets it from :data:`STRUCTURED_OUTPUT_SUPPORT`.
    :param prefill: prompt mode only: end the request with an assistant turn ``{`` where the family allows
        one (Anthropic, Converse, Nova, Llama, Mistral text completion); the reply then lacks the ``{``,
        see :attr:`ModelReply.prefilled`.
    """

    schema: Mapping[str, Any] = field(hash=False)
    name: str
    description: str = ""
    mode: str = "prompt"
    strict: bool = True
    prefill: bool = True
    schema_json: str = field(init=False, repr=False, compare=False, hash=False)
    """The schema as compact JSON text, in the schema's own key order (the order properties are generated)."""

    def __post_init__(self) -> None:
        if self.mode not in OUTPUT_MODES:
            raise ConfigError(f"output mode must be one of {list(OUTPUT_MODES)}, got {self.mode!r}")
        if not isinstance(self.name, str) or not _SCHEMA_NAME.fullmatch(self.name):
            raise ConfigError(
                f"reply schema name must be 1-64 letters, digits, '_' or '-' (it names the tool or the "
                f"schema sent to the model), got {self.name!r}"
            )
        if not isinstance(self.description, str):
            raise ConfigError(f"reply schema description must be a string, got {type(self.description)}")
        if not isinstance(self.schema, Mapping):
            raise ConfigError(f"reply schema {self.name!r} must be a JSON object, got {type(self.schema)}")
        try:
            text = orjson.dumps(self.schema, default=_plain_json)
        except orjson.JSONEncodeError as exc:
            raise ConfigError(f"reply schema {self.name!r} is not JSON-serializable: {exc}") from None
        schema = orjson.loads(text)
        if self.mode == "tool" and schema.get("type") != "object":
            raise ConfigError(
                f"reply schema {self.name!r} becomes a tool's input in tool mode, so its top level must be "
                f"{{\"type\": \"object\", ...}}; wrap the value in an object or use mode 'native' or 'prompt'"
            )
        # A private copy: the caller's mapping may change later, and every body shares this one.
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "schema_json", text.decode())


@dataclass(frozen=True)
class ModelReply:
    """What collect keeps of a model's reply.

    :param text: the generated text (text blocks concatenated; reasoning blocks left out). For a forced tool
        call, the tool input as JSON text.
    :param input_tokens: prompt tokens the model reported, ``None`` if it did not.
    :param output_tokens: generated tokens the model reported, ``None`` if it did not.
    :param stop_reason: why generation ended, in the model's own words (``end_turn``, ``max_tokens``, ...).
    :param prefilled: the request ended with the assistant prefill :data:`PREFILL`, which ``text`` lacks;
        :attr:`completed_text` re-attaches it.
    """

    text: str
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None
    prefilled: bool = False

    @property
    def completed_text(self) -> str:
        """The whole answer: ``text`` with the prefill re-attached when the request was prefilled."""
        return PREFILL + self.text if self.prefilled else self.text


class ModelFamily(ABC):
    """Request body builder and response parser for one family of models.

    A family builds its plain body in ``_body``; :meth:`build_request` then adds the reply schema the way
    :attr:`OutputFormat.mode` asks, through the hooks of the modes listed in ``MODES``.
    """

    name: ClassVar[str]
    # Output modes the family's body can carry; the others are refused with a ConfigError.
    MODES: ClassVar[frozenset[str]] = frozenset({"prompt"})
    # Why a mode is refused, when there is more to say than "the body has no field for it".
    REFUSALS: ClassVar[Mapping[str, str]] = {}
    # Whether prompt mode can end the request with an assistant turn PREFILL.
    PREFILL: ClassVar[bool] = False

    def build_request(
        self, system: str, user: str, params: InferenceParams, output: OutputFormat | None = None
    ) -> dict[str, Any]:
        """The ``modelInput`` body for one prompt.

        :param system: system prompt; an empty string sends none.
        :param user: the user turn (the rendered prompt with the transcript).
        :param params: inference parameters.
        :param output: the reply schema and its mode; ``None`` sends the plain body.
        :raises ConfigError: when the family's body cannot carry ``output.mode``.
        """
        body = self._body(system, user, params)
        if output is None:
            return body
        if output.mode not in self.MODES:
            reason = self.REFUSALS.get(output.mode, "its request body has no field for it")
            raise ConfigError(
                f"the {self.name} family cannot send reply schema {output.name!r} in mode {output.mode!r}: "
                f"{reason}; modes it supports: {', '.join(m for m in OUTPUT_MODES if m in self.MODES)}"
            )
        if output.mode == "native":
            self._add_native_format(body, output)
        elif output.mode == "tool":
            self._add_forced_tool(body, output)
        elif self.prefills(output):
            self._add_prefill(body)
        return body

    def prefills(self, output: OutputFormat | None) -> bool:
        """Whether :meth:`build_request` ends the request with the assistant prefill :data:`PREFILL`.

        :param output: the reply schema the request was built with.
        """
        return output is not None and output.mode == "prompt" and output.prefill and self.PREFILL

    def parse_response(self, body: Mapping[str, Any], output: OutputFormat | None = None) -> ModelReply:
        """The reply in a ``modelOutput`` body.

        A forced tool call is read whatever ``output`` says: its input becomes :attr:`ModelReply.text`.

        :param body: the decoded ``modelOutput`` object.
        :param output: the reply schema the request was built with; sets :attr:`ModelReply.prefilled`.
        :raises ResponseFormatError: when ``body`` does not have this family's shape.
        """
        reply = self._reply(body)
        if not self.prefills(output):
            return reply
        # Built directly: dataclasses.replace costs about as much as the rest of reading a reply.
        return ModelReply(reply.text, reply.input_tokens, reply.output_tokens, reply.stop_reason, True)

    def follow_up(
        self, body: Mapping[str, Any], reply: str, message: str, output: OutputFormat | None = None
    ) -> dict[str, Any]:
        """``body`` continued by one exchange: the model's ``reply`` as its turn, then ``message`` as the
        user's (e.g. asking again for a reply that conforms). A request that ended with the assistant prefill
        ends with it again, after ``message``; the reply schema (native field, forced tool) stays.

        :param body: a ``modelInput`` :meth:`build_request` built with ``output``.
        :param reply: the model's whole answer to it (:attr:`ModelReply.completed_text`).
        :param message: the next user turn.
        :param output: the reply schema ``body`` was built with.
        :raises ConfigError: when ``body`` does not have this family's request shape.
        """
        followed: dict[str, Any] = orjson.loads(orjson.dumps(body, default=_plain_json))  # a deep copy
        prefilled = self.prefills(output)
        try:
            if prefilled:
                self._drop_prefill(followed)
            self._add_exchange(followed, reply, message)
        except (KeyError, TypeError, AttributeError, IndexError):
            keys = sorted(followed) if isinstance(followed, dict) else type(followed).__name__
            raise ConfigError(f"not a {self.name} request body (keys: {keys}); cannot continue it") from None
        if prefilled:
            self._add_prefill(followed)
        return followed

    @abstractmethod
    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]: ...

    # The exchange follow_up adds, and taking back the prefill that ended the request.
    @abstractmethod
    def _add_exchange(self, body: dict[str, Any], reply: str, message: str) -> None: ...

    def _drop_prefill(self, body: dict[str, Any]) -> None:
        if body["messages"][-1]["role"] == "assistant":
            body["messages"].pop()

    @abstractmethod
    def _reply(self, body: Mapping[str, Any]) -> ModelReply: ...

    # Hooks of the modes in MODES; build_request never calls one the family does not list.
    def _add_native_format(self, body: dict[str, Any], output: OutputFormat) -> None:
        raise NotImplementedError

    def _add_forced_tool(self, body: dict[str, Any], output: OutputFormat) -> None:
        raise NotImplementedError

    def _add_prefill(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def _first_text(self, body: Any, list_key: str, text_key: str) -> tuple[Mapping[str, Any], str]:
        # Titan and Mistral text completion answer with a list of results, the first of which is the reply.
        items = body.get(list_key) if isinstance(body, _OBJECT) else None
        first = items[0] if isinstance(items, list) and items else None
        text = first.get(text_key) if isinstance(first, _OBJECT) else None
        if not isinstance(first, _OBJECT) or not isinstance(text, str):
            self._malformed(body, f"has no '{list_key}[0].{text_key}' string")
        return first, text

    def _malformed(self, body: Any, problem: str) -> NoReturn:
        # Name the keys, never the values: they may hold model output.
        keys = sorted(body) if isinstance(body, _OBJECT) else type(body).__name__
        raise ResponseFormatError(
            f"{self.name} reply {problem} (body keys: {keys}); check that the job's model and "
            f"invocation type match the '{self.name}' family, or pass override= to family_for()"
        )

    def __repr__(self) -> str:
        return f"<model family {self.name}>"


# dict first: bodies decoded from JSON are dicts, and the exact-type check is much cheaper than the ABC's.
_OBJECT = (dict, Mapping)

_NO_TOOL_CALL = object()


def _json_text(value: Any) -> str:
    # Tool inputs arrive as decoded objects (Anthropic, Nova) or as JSON text (OpenAI-style arguments).
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise ResponseFormatError(f"tool input cannot be written as JSON: {exc}") from None


def _text_of(blocks: list[Any], tool_input: Callable[[Mapping[str, Any]], Any]) -> str:
    # Thinking / reasoning blocks (Claude extended thinking, Nova 2 reasoningContent) have no "text"
    # string, so only the answer is kept. A tool call is the answer in tool mode and wins over any text.
    parts = []
    for block in blocks:
        if not isinstance(block, _OBJECT):
            continue
        text = block.get("text")
        if isinstance(text, str):
            parts.append(text)
            continue
        value = tool_input(block)
        if value is not _NO_TOOL_CALL:
            return _json_text(value)
    return parts[0] if len(parts) == 1 else "".join(parts)


def _anthropic_tool_input(block: Mapping[str, Any]) -> Any:
    return block["input"] if block.get("type") == "tool_use" and "input" in block else _NO_TOOL_CALL


def _converse_tool_input(block: Mapping[str, Any]) -> Any:
    use = block.get("toolUse")
    return use["input"] if isinstance(use, _OBJECT) and "input" in use else _NO_TOOL_CALL


def _token_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _chat_reply(
    body: Mapping[str, Any], text: str, input_key: str, output_key: str, stop_key: str
) -> ModelReply:
    # Claude, Converse/Nova and Mistral chat replies differ only in these field names.
    usage = body.get("usage")
    usage = usage if isinstance(usage, _OBJECT) else {}
    return ModelReply(
        text=text,
        input_tokens=_token_count(usage.get(input_key)),
        output_tokens=_token_count(usage.get(output_key)),
        stop_reason=_optional_str(body.get(stop_key)),
    )


def _system_then_user(system: str, user: str) -> str:
    # For bodies without a system role (Titan, Mistral text completion): the system prompt goes first.
    return f"{system}\n\n{user}" if system else user


def _with_description(fields: dict[str, Any], output: OutputFormat) -> dict[str, Any]:
    # Descriptions are optional everywhere; an empty one is left out rather than sent as "".
    if output.description:
        fields["description"] = output.description
    return fields


class AnthropicFamily(ModelFamily):
    """Anthropic Claude through the messages API (``anthropic_version`` bedrock-2023-05-31).

    Native: ``output_config.format`` (Claude 4.5 and later); tool: one tool with ``tool_choice`` forcing it;
    prompt: a final assistant message ``{``.
    """

    name = "anthropic"
    MODES = frozenset(OUTPUT_MODES)
    PREFILL = True
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "top_k": "top_k",
        "stop_sequences": "stop_sequences",
    }

    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31"}
        body.update(params.body_fields(self.PARAMS))
        if system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": user}]}]
        return body

    def _add_native_format(self, body: dict[str, Any], output: OutputFormat) -> None:
        # The schema as an object here, unlike Converse's JSON string.
        body["output_config"] = {"format": {"type": "json_schema", "schema": output.schema}}

    def _add_forced_tool(self, body: dict[str, Any], output: OutputFormat) -> None:
        tool = _with_description({"name": output.name}, output)
        tool["input_schema"] = output.schema
        if output.strict:
            tool["strict"] = True
        body["tools"] = [tool]
        body["tool_choice"] = {"type": "tool", "name": output.name}

    def _add_prefill(self, body: dict[str, Any]) -> None:
        body["messages"].append({"role": "assistant", "content": [{"type": "text", "text": PREFILL}]})

    def _add_exchange(self, body: dict[str, Any], reply: str, message: str) -> None:
        body["messages"] += [
            {"role": "assistant", "content": [{"type": "text", "text": reply}]},
            {"role": "user", "content": [{"type": "text", "text": message}]},
        ]

    def _reply(self, body: Mapping[str, Any]) -> ModelReply:
        content = body.get("content") if isinstance(body, _OBJECT) else None
        if not isinstance(content, list):
            self._malformed(body, "has no 'content' list")
        text = _text_of(content, _anthropic_tool_input)
        return _chat_reply(body, text, "input_tokens", "output_tokens", "stop_reason")


class ConverseFamily(ModelFamily):
    """The Converse invocation type, which Bedrock translates for any model.

    ``top_k`` is ignored: Converse has no common field for it (models take it under
    ``additionalModelRequestFields`` with model-specific names). Native: ``outputConfig.textFormat`` with
    the schema as a JSON string; tool mode is refused (batch Converse jobs reject ``toolConfig``); prompt:
    a final assistant message ``{``.
    """

    name = "converse"
    MODES = frozenset({"native", "prompt"})
    REFUSALS: ClassVar[Mapping[str, str]] = {"tool": _CONVERSE_REFUSES_TOOLS}
    PREFILL = True
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "maxTokens",
        "temperature": "temperature",
        "top_p": "topP",
        "stop_sequences": "stopSequences",
    }

    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if system:
            body["system"] = [{"text": system}]
        body["messages"] = [{"role": "user", "content": [{"text": user}]}]
        body["inferenceConfig"] = params.body_fields(self.PARAMS)
        return body

    def _add_native_format(self, body: dict[str, Any], output: OutputFormat) -> None:
        json_schema = _with_description({"schema": output.schema_json, "name": output.name}, output)
        body["outputConfig"] = {
            "textFormat": {"type": "json_schema", "structure": {"jsonSchema": json_schema}}
        }

    def _add_prefill(self, body: dict[str, Any]) -> None:
        body["messages"].append({"role": "assistant", "content": [{"text": PREFILL}]})

    def _add_exchange(self, body: dict[str, Any], reply: str, message: str) -> None:
        body["messages"] += [
            {"role": "assistant", "content": [{"text": reply}]},
            {"role": "user", "content": [{"text": message}]},
        ]

    def _reply(self, body: Mapping[str, Any]) -> ModelReply:
        output = body.get("output") if isinstance(body, _OBJECT) else None
        message = output.get("message") if isinstance(output, _OBJECT) else None
        content = message.get("content") if isinstance(message, _OBJECT) else None
        if not isinstance(content, list):
            self._malformed(body, "has no 'output.message.content' list")
        # Nova 1 replies hold text blocks only; Nova 2 with reasoning (and reasoning models through
        # Converse) put {"reasoningContent": ...} blocks first. _text_of reads both generations.
        text = _text_of(content, _converse_tool_input)
        return _chat_reply(body, text, "inputTokens", "outputTokens", "stopReason")


class NovaFamily(ConverseFamily):
    """Amazon Nova through InvokeModel (``schemaVersion`` messages-v1); replies have the Converse shape.

    The token limit is sent as ``inferenceConfig.maxTokens``, the current documented name; older Nova
    documentation calls it ``max_new_tokens``. Nova has no native structured-output field, but decodes tool
    input constrained to the tool's schema, so tool mode (``toolConfig`` with ``toolChoice.tool``) is its
    structured output; prompt mode prefills like Converse.
    """

    name = "nova"
    MODES = frozenset({"tool", "prompt"})
    REFUSALS: ClassVar[Mapping[str, str]] = {
        "native": "Nova's InvokeModel body has no structured-output field; use mode 'tool' (Nova constrains "
        "tool input to the schema)"
    }
    PARAMS: ClassVar[Mapping[str, str]] = {**ConverseFamily.PARAMS, "top_k": "topK"}

    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        return {"schemaVersion": "messages-v1", **super()._body(system, user, params)}

    def _add_forced_tool(self, body: dict[str, Any], output: OutputFormat) -> None:
        spec = _with_description({"name": output.name}, output)
        spec["inputSchema"] = {"json": output.schema}
        if output.strict:
            spec["strict"] = True
        body["toolConfig"] = {"tools": [{"toolSpec": spec}], "toolChoice": {"tool": {"name": output.name}}}


class LlamaFamily(ModelFamily):
    """Meta Llama 3.x through InvokeModel: one prompt string in the Llama 3 chat template.

    Llama on Bedrock has no ``top_k`` or stop sequences; both are ignored. Prompt mode prefills by ending the
    prompt with ``{`` after the assistant header.
    """

    name = "llama"
    PREFILL = True
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_gen_len",
        "temperature": "temperature",
        "top_p": "top_p",
    }

    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        prompt = "<|begin_of_text|>"
        if system:
            prompt += f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
        prompt += (
            f"<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
        return {"prompt": prompt, **params.body_fields(self.PARAMS)}

    def _add_prefill(self, body: dict[str, Any]) -> None:
        body["prompt"] += PREFILL

    def _drop_prefill(self, body: dict[str, Any]) -> None:
        body["prompt"] = body["prompt"].removesuffix(PREFILL)

    def _add_exchange(self, body: dict[str, Any], reply: str, message: str) -> None:
        body["prompt"] += (
            f"{reply}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{message}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )

    def _reply(self, body: Mapping[str, Any]) -> ModelReply:
        text = body.get("generation") if isinstance(body, _OBJECT) else None
        if not isinstance(text, str):
            self._malformed(body, "has no 'generation' string")
        return ModelReply(
            text=text,
            input_tokens=_token_count(body.get("prompt_token_count")),
            output_tokens=_token_count(body.get("generation_token_count")),
            stop_reason=_optional_str(body.get("stop_reason")),
        )


class TitanFamily(ModelFamily):
    """Amazon Titan Text through InvokeModel.

    Titan has no system prompt: the system prompt is put before the user prompt in ``inputText``.
    ``top_k`` is ignored. Titan has no assistant turn to prefill: prompt mode leaves the body unchanged.
    """

    name = "titan"
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "maxTokenCount",
        "temperature": "temperature",
        "top_p": "topP",
        "stop_sequences": "stopSequences",
    }

    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        return {
            "inputText": _system_then_user(system, user),
            "textGenerationConfig": params.body_fields(self.PARAMS),
        }

    def _add_exchange(self, body: dict[str, Any], reply: str, message: str) -> None:
        # One text, no turns: the conversation goes on in it, in Titan's "User:"/"Bot:" chat convention.
        body["inputText"] += f"\n\nBot: {reply}\n\nUser: {message}\n\nBot:"

    def _reply(self, body: Mapping[str, Any]) -> ModelReply:
        first, text = self._first_text(body, "results", "outputText")
        return ModelReply(
            text=text,
            input_tokens=_token_count(body.get("inputTextTokenCount")),
            output_tokens=_token_count(first.get("tokenCount")),
            stop_reason=_optional_str(first.get("completionReason")),
        )


class MistralFamily(ModelFamily):
    """Mistral AI text completion through InvokeModel: Mistral 7B Instruct, Mixtral 8x7B, Mistral Small and
    Mistral Large (24.02).

    One prompt string ``<s>[INST] … [/INST]``; the model has no system role, so the system prompt is put
    before the user prompt inside ``[INST]``. Replies ``{"outputs": [{"text", "stop_reason"}]}`` carry no
    token counts. Prompt mode prefills by ending the prompt with ``{`` after ``[/INST]``.
    """

    name = "mistral"
    PREFILL = True
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "top_k": "top_k",
        "stop_sequences": "stop",
    }

    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        instruction = _system_then_user(system, user)
        return {"prompt": f"<s>[INST] {instruction} [/INST]", **params.body_fields(self.PARAMS)}

    def _add_prefill(self, body: dict[str, Any]) -> None:
        body["prompt"] += PREFILL

    def _drop_prefill(self, body: dict[str, Any]) -> None:
        body["prompt"] = body["prompt"].removesuffix(PREFILL)

    def _add_exchange(self, body: dict[str, Any], reply: str, message: str) -> None:
        body["prompt"] += f"{reply}</s>[INST] {message} [/INST]"

    def _reply(self, body: Mapping[str, Any]) -> ModelReply:
        first, text = self._first_text(body, "outputs", "text")
        return ModelReply(text, None, None, _optional_str(first.get("stop_reason")))


class MistralChatFamily(ModelFamily):
    """Mistral AI chat completion through InvokeModel: Mistral Large 2 (24.07) and later Mistral models.

    Request ``{"messages", "max_tokens", "temperature", "top_p"}`` (no ``top_k``, no stop sequences); reply
    ``{"choices": [{"message": {"role", "content", "tool_calls"}, "stop_reason"}]}`` (OpenAI-style
    ``finish_reason`` and ``usage`` are read too where present). Native: OpenAI-style ``response_format``
    (Bedrock's field for open-weight models); tool: one function tool with ``tool_choice`` ``any`` (Bedrock
    documents ``auto``/``any``/``none``, not a tool name); prompt: no prefill (Bedrock documents none).
    """

    name = "mistral_chat"
    MODES = frozenset(OUTPUT_MODES)
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
    }

    def _body(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return {"messages": messages, **params.body_fields(self.PARAMS)}

    def _add_native_format(self, body: dict[str, Any], output: OutputFormat) -> None:
        json_schema = _with_description({"name": output.name}, output)
        json_schema.update(schema=output.schema, strict=True)
        body["response_format"] = {"type": "json_schema", "json_schema": json_schema}

    def _add_forced_tool(self, body: dict[str, Any], output: OutputFormat) -> None:
        function = _with_description({"name": output.name}, output)
        function["parameters"] = output.schema
        if output.strict:
            function["strict"] = True
        body["tools"] = [{"type": "function", "function": function}]
        # With a single tool, "any" forces exactly that one.
        body["tool_choice"] = "any"

    def _add_exchange(self, body: dict[str, Any], reply: str, message: str) -> None:
        body["messages"] += [{"role": "assistant", "content": reply}, {"role": "user", "content": message}]

    def _reply(self, body: Mapping[str, Any]) -> ModelReply:
        choices = body.get("choices") if isinstance(body, _OBJECT) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, _OBJECT) else None
        if not isinstance(first, _OBJECT) or not isinstance(message, _OBJECT):
            self._malformed(body, "has no 'choices[0].message' object")
        calls = message.get("tool_calls")
        call = calls[0] if isinstance(calls, list) and calls and isinstance(calls[0], _OBJECT) else None
        function = call.get("function") if call is not None else None
        if isinstance(function, _OBJECT) and "arguments" in function:
            text = _json_text(function["arguments"])
        else:
            content = message.get("content")
            if not isinstance(content, str):
                self._malformed(body, "has no 'choices[0].message.content' string")
            text = content
        usage = body.get("usage")
        usage = usage if isinstance(usage, _OBJECT) else {}
        # Bedrock documents stop_reason; OpenAI-style replies of later models say finish_reason.
        stop_key = "stop_reason" if "stop_reason" in first else "finish_reason"
        return ModelReply(
            text=text,
            input_tokens=_token_count(usage.get("prompt_tokens")),
            output_tokens=_token_count(usage.get("completion_tokens")),
            stop_reason=_optional_str(first.get(stop_key)),
        )


FAMILIES: Mapping[str, ModelFamily] = MappingProxyType(
    {
        family.name: family
        for family in (
            AnthropicFamily(),
            NovaFamily(),
            LlamaFamily(),
            TitanFamily(),
            ConverseFamily(),
            MistralFamily(),
            MistralChatFamily(),
        )
    }
)

# (provider, start of the model name) → family, for InvokeModel; the first match wins. Converse covers every
# other model. Mistral: the four models of the text-completion page (model-parameters-mistral-text-
# completion.html) take prompt bodies; every later Mistral model takes the chat body (Mistral Large 24.07
# page). Mistral Large 24.02 is listed on the chat-completion page as well: override='mistral_chat' picks it.
_FAMILY_BY_MODEL_PREFIX: tuple[tuple[str, str, str], ...] = (
    ("anthropic", "claude", "anthropic"),
    ("amazon", "nova", "nova"),
    ("amazon", "titan-text", "titan"),
    ("amazon", "titan-tg1", "titan"),
    ("meta", "llama", "llama"),
    ("mistral", "mistral-7b", "mistral"),
    ("mistral", "mixtral-8x7b", "mistral"),
    ("mistral", "mistral-small-2402", "mistral"),
    ("mistral", "mistral-large-2402", "mistral"),
    ("mistral", "", "mistral_chat"),
)

# Context windows in tokens, by the start of the base model id; the longest matching prefix wins.
# Mistral: the Bedrock model cards (model-card-mistral-ai-*.html) say 32K for 7B, Mixtral, Small and
# Large 24.02, and 128K for Large 2 (24.07).
_CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("anthropic.claude", 200_000),
    ("amazon.nova-micro", 128_000),
    ("amazon.nova-lite", 300_000),
    ("amazon.nova-pro", 300_000),
    ("amazon.nova-premier", 1_000_000),
    ("amazon.nova-2-lite", 1_000_000),
    ("amazon.titan-text-lite", 4_096),
    ("amazon.titan-text-express", 8_192),
    ("amazon.titan-text-premier", 32_000),
    ("amazon.titan-tg1-large", 8_192),
    ("meta.llama3-8b", 8_192),
    ("meta.llama3-70b", 8_192),
    ("meta.llama3-1", 128_000),
    ("meta.llama3-2", 128_000),
    ("meta.llama3-3", 128_000),
    ("meta.llama4", 128_000),
    ("mistral.mistral-7b", 32_000),
    ("mistral.mixtral-8x7b", 32_000),
    ("mistral.mistral-small-2402", 32_000),
    ("mistral.mistral-large-2402", 32_000),
    ("mistral.mistral-large-2407", 128_000),
)


@dataclass(frozen=True)
class StructuredOutputSupport:
    """How one model can receive a reply schema: a row of :data:`STRUCTURED_OUTPUT_SUPPORT`.

    :param invoke_model: best mode in InvokeModel bodies (``native``, ``tool`` or ``prompt``).
    :param converse: best mode in Converse bodies (``native`` or ``prompt``: batch Converse jobs refuse
        tools).
    :param strict_tools: tools may carry ``"strict": true`` (constrained tool input).
    :param prefill: the model accepts a request ending with an assistant turn.
    :param source: where the row comes from.
    """

    invoke_model: str
    converse: str
    strict_tools: bool
    prefill: bool
    source: str


_STRUCTURED_OUTPUTS_DOC = "https://docs.aws.amazon.com/bedrock/latest/userguide/structured-output.html"
_CLAUDE_STRUCTURED_DOC = (
    "https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-structured-outputs.html"
)

_CLAUDE_LEGACY = StructuredOutputSupport(
    "prompt",
    "prompt",
    strict_tools=False,
    prefill=True,
    source=f"{_CLAUDE_STRUCTURED_DOC} lists Claude Haiku/Sonnet/Opus 4.5 and Opus 4.6 only; tool use works "
    "without 'strict' (not constrained), so override mode='tool' sends an unconstrained forced tool",
)
_CLAUDE_4_5 = StructuredOutputSupport(
    "native", "native", strict_tools=True, prefill=True, source=_CLAUDE_STRUCTURED_DOC
)
_CLAUDE_4_6 = StructuredOutputSupport(
    "native",
    "native",
    strict_tools=True,
    prefill=False,
    source="https://platform.claude.com/docs/en/build-with-claude/structured-outputs (GA on Bedrock for "
    "Opus 4.6 and Sonnet 4.6); Anthropic retires assistant prefill on its newest models",
)
_MISTRAL_TEXT = StructuredOutputSupport(
    "prompt",
    "prompt",
    strict_tools=False,
    prefill=True,
    source="https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-mistral-text-completion.html"
    " (prompt-only body, no tools)",
)

STRUCTURED_OUTPUT_SUPPORT: Mapping[str, StructuredOutputSupport] = MappingProxyType(
    {
        "anthropic.claude": _CLAUDE_LEGACY,
        "anthropic.claude-haiku-4-5": _CLAUDE_4_5,
        "anthropic.claude-sonnet-4-5": _CLAUDE_4_5,
        "anthropic.claude-opus-4-5": _CLAUDE_4_5,
        "anthropic.claude-opus-4-6": _CLAUDE_4_6,
        "anthropic.claude-sonnet-4-6": _CLAUDE_4_6,
        # Sources disagree: the AWS list above has 4.5+ only, models.dev#1765 reads the Opus 4.1 model card as
        # supporting structured outputs. AWS's list wins; mode='native' overrides it.
        "anthropic.claude-opus-4-1": replace(
            _CLAUDE_LEGACY,
            source=f"{_CLAUDE_STRUCTURED_DOC}; contra: github.com/anomalyco/models.dev/pull/1765",
        ),
        "anthropic.claude-opus-4-7": StructuredOutputSupport(
            "prompt",
            "prompt",
            strict_tools=False,
            prefill=False,
            source="github.com/anomalyco/models.dev/pull/1765, citing the Bedrock Opus 4.7 model card: "
            "output_config.format is rejected ('Extra inputs are not permitted')",
        ),
        "amazon.nova": StructuredOutputSupport(
            "tool",
            "prompt",
            strict_tools=False,
            prefill=True,
            source="https://docs.aws.amazon.com/nova/latest/userguide/concept-chapter-servicename.html "
            "(constrained decoding whenever a tool configuration is passed; toolChoice.tool forces it); "
            "Nova is not in the structured-outputs model list",
        ),
        "amazon.titan": StructuredOutputSupport(
            "prompt",
            "prompt",
            strict_tools=False,
            prefill=False,
            source="https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-text.html "
            "(inputText only: no tools, no assistant turn)",
        ),
        "meta.llama": StructuredOutputSupport(
            "prompt",
            "prompt",
            strict_tools=False,
            prefill=True,
            source="https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html "
            f"(prompt-only body); not in the model list of {_STRUCTURED_OUTPUTS_DOC}",
        ),
        "mistral.mistral-7b": _MISTRAL_TEXT,
        "mistral.mixtral-8x7b": _MISTRAL_TEXT,
        "mistral.mistral-small-2402": _MISTRAL_TEXT,
        "mistral.mistral-large-2402": _MISTRAL_TEXT,
        "mistral.mistral-large-2407": StructuredOutputSupport(
            "prompt",
            "prompt",
            strict_tools=False,
            prefill=False,
            source="https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-mistral-chat-completion"
            ".html: tools with tool_choice auto/any/none, but no 'strict', response_format or prefill "
            "documented",
        ),
        "openai.gpt-oss": StructuredOutputSupport(
            "native",
            "native",
            strict_tools=False,
            prefill=False,
            source=f"{_STRUCTURED_OUTPUTS_DOC} (response_format for open-weight models; OpenAI OSS "
            "listed) and https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-openai.html",
        ),
    }
)
"""Structured-output support by base model id prefix; the longest matching prefix wins, models matching none
are sent the schema in the prompt. Rows are a point-in-time reading of the sources they name: a pipeline
can force another mode (``mode=`` of :func:`output_format_for`)."""


def _check_invocation_type(invocation_type: str) -> None:
    if invocation_type not in INVOCATION_TYPES:
        raise ConfigError(f"invocation_type must be one of {list(INVOCATION_TYPES)}, got {invocation_type!r}")


def _longest_prefix_match(table: Mapping[str, Any], model_id: str) -> Any:
    model = base_model_id(model_id)
    best = max((prefix for prefix in table if model.startswith(prefix)), key=len, default=None)
    return None if best is None else table[best]


def structured_output_support(model_id: str) -> StructuredOutputSupport | None:
    """The row of :data:`STRUCTURED_OUTPUT_SUPPORT` for a model, ``None`` for models it does not know.

    :param model_id: model id, cross-region inference-profile id or ARN.
    """
    support: StructuredOutputSupport | None = _longest_prefix_match(STRUCTURED_OUTPUT_SUPPORT, model_id)
    return support


def structured_output_mode(
    model_id: str, invocation_type: str = "InvokeModel", override: str | None = None
) -> str:
    """The best way to send a reply schema to a model: ``native`` > ``tool`` > ``prompt``.

    :param model_id: model id, cross-region inference-profile id or ARN; unknown models get ``prompt``.
    :param invocation_type: the job's ``modelInvocationType``.
    :param override: a mode to use instead (a pipeline may force ``prompt``, or ``native`` for an application
        inference profile of a model that supports it).
    :raises ConfigError: for an unknown mode or invocation type, and for ``tool`` with ``Converse``.
    """
    _check_invocation_type(invocation_type)
    if override is not None:
        if override not in OUTPUT_MODES:
            raise ConfigError(f"output mode must be one of {list(OUTPUT_MODES)}, got {override!r}")
        if override == "tool" and invocation_type == "Converse":
            raise ConfigError(
                "output mode 'tool' cannot be used with invocation_type 'Converse': "
                + _CONVERSE_REFUSES_TOOLS
            )
        return override
    support = structured_output_support(model_id)
    if support is None:
        return "prompt"
    return support.invoke_model if invocation_type == "InvokeModel" else support.converse


def output_format_for(
    model_id: str,
    schema: Mapping[str, Any],
    name: str,
    *,
    description: str = "",
    invocation_type: str = "InvokeModel",
    mode: str | None = None,
) -> OutputFormat:
    """The :class:`OutputFormat` for a model: its best mode, and ``strict`` / ``prefill`` as its row allows.

    :param model_id: model id, cross-region inference-profile id or ARN.
    :param schema: the reply's JSON Schema.
    :param name: the schema's name (see :class:`OutputFormat`).
    :param description: what the reply is.
    :param invocation_type: the job's ``modelInvocationType``.
    :param mode: force a mode instead of the model's best (see :func:`structured_output_mode`).
    :raises ConfigError: as :func:`structured_output_mode` and :class:`OutputFormat` do.
    """
    chosen = structured_output_mode(model_id, invocation_type, mode)
    support = structured_output_support(model_id)
    return OutputFormat(
        schema=schema,
        name=name,
        description=description,
        mode=chosen,
        # Unknown models (application inference profiles, ...) get neither: each would fail every record of a
        # model that rejects it. Build the OutputFormat directly to send them anyway.
        strict=support is not None and support.strict_tools,
        prefill=support is not None and support.prefill,
    )


def base_model_id(model_id: str) -> str:
    """The foundation-model id behind a model id, inference-profile id or ARN.

    ``arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0`` and
    ``us.anthropic.claude-3-haiku-20240307-v1:0`` both give ``anthropic.claude-3-haiku-20240307-v1:0``.
    ARNs whose resource id is opaque (application inference profiles, provisioned models) give that id
    unchanged; it then matches no family, context window or price.

    :param model_id: what the job's ``modelId`` is set to.
    """
    model = model_id.strip()
    if model.startswith("arn:"):
        # arn:partition:bedrock:region:account:resource-type/resource-id; model ids contain ':' themselves.
        parts = model.split(":", 5)
        resource = parts[5] if len(parts) == 6 else ""
        _, _, model = resource.partition("/")
        # Custom-model ARNs nest the base model id as the first path segment.
        model = model.split("/", 1)[0]
    prefix, dot, rest = model.partition(".")
    if dot and prefix in REGION_PREFIXES:
        model = rest
    return model


def _infer_family_name(model_id: str) -> str | None:
    provider, _, name = base_model_id(model_id).partition(".")
    for family_provider, name_prefix, family_name in _FAMILY_BY_MODEL_PREFIX:
        if provider == family_provider and name.startswith(name_prefix):
            return family_name
    return None


def family_for(
    model_id: str, *, invocation_type: str = "InvokeModel", override: str | None = None
) -> ModelFamily:
    """The model family whose bodies a job for ``model_id`` must use.

    :param model_id: model id, cross-region inference-profile id (``us.``/``eu.``/``apac.``/``global.``...)
        or ARN (foundation-model, inference-profile, custom-model).
    :param invocation_type: the job's ``modelInvocationType``; ``Converse`` uses the Converse family for
        every model.
    :param override: family name to use instead of inferring it, required for ids that do not name the
        model (application inference profiles, provisioned or imported models).
    :raises UnknownModelError: when no family can be inferred, or ``override`` is not a family name.
    :raises ConfigError: when ``invocation_type`` is unknown or contradicts ``override``.
    """
    _check_invocation_type(invocation_type)
    supported = ", ".join(FAMILIES)
    if override is not None:
        if override not in FAMILIES:
            raise UnknownModelError(f"override {override!r} is not a model family; supported: {supported}")
        if invocation_type == "Converse" and override != "converse":
            raise ConfigError(
                f"invocation_type 'Converse' needs Converse bodies, but override is {override!r}; "
                "drop the override or set invocation_type='InvokeModel'"
            )
        return FAMILIES[override]
    if invocation_type == "Converse":
        return FAMILIES["converse"]
    family_name = _infer_family_name(model_id)
    if family_name is None:
        raise UnknownModelError(
            f"cannot tell the model family of {model_id!r}; supported families: {supported}. "
            "Pass override='<family>' (needed for application inference profile ARNs), or "
            "invocation_type='Converse' to use Converse bodies for any model"
        )
    return FAMILIES[family_name]


def estimate_tokens(text: str) -> int:
    """A cheap upper-leaning estimate of the tokens in ``text``: one token per 4 characters, rounded up.

    Non-ASCII text counts UTF-8 bytes instead of characters, because tokenizers spend more tokens per
    character on accented and non-Latin scripts; the estimate then errs towards too many tokens.

    :param text: prompt text.
    """
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return math.ceil(size / CHARS_PER_TOKEN)


def output_format_tokens(output: OutputFormat | None, instructions: str = "") -> int:
    """Estimated input tokens a reply schema adds to every record, for the cost estimate.

    Every mode bills the schema as input: prompt mode puts it in the prompt; for tool mode Anthropic documents
    that tool names, descriptions and schemas count as input tokens plus a tool-use system prompt
    (:data:`TOOL_USE_SYSTEM_PROMPT_TOKENS`); for native mode (``output_config``, ``outputConfig``,
    ``response_format``) no published count was found, so the schema, name and description are counted as if
    they were prompt text, erring high rather than low.

    :param output: the reply schema and its mode; ``None`` adds nothing.
    :param instructions: prompt mode only: instruction text sent around the schema that the prompt template
        does not already hold (its tokens are counted once, here).
    """
    if output is None:
        return 0
    tokens = estimate_tokens(output.schema_json)
    if output.mode == "prompt":
        tokens += estimate_tokens(instructions)
        return tokens + (estimate_tokens(PREFILL) if output.prefill else 0)
    tokens += estimate_tokens(output.name + output.description)
    return tokens + (TOOL_USE_SYSTEM_PROMPT_TOKENS if output.mode == "tool" else 0)


def context_window_tokens(model_id: str) -> int:
    """Tokens (prompt plus generated) the model can handle, from a small table.

    Models missing from the table get the small :data:`DEFAULT_CONTEXT_WINDOW_TOKENS`: an unknown model
    rather has a long prompt quarantined than a whole job of records rejected. The caller should compare
    against the estimated prompt tokens plus ``max_tokens``.

    :param model_id: model id, inference-profile id or ARN.
    """
    model = base_model_id(model_id)
    matches = [(len(prefix), tokens) for prefix, tokens in _CONTEXT_WINDOWS if model.startswith(prefix)]
    return max(matches)[1] if matches else DEFAULT_CONTEXT_WINDOW_TOKENS


# Where each family's request body holds its reply token limit: (containing object or None, field). The
# older Nova name max_new_tokens is read too, for records built elsewhere.
_MAX_TOKENS_FIELDS: tuple[tuple[str | None, str], ...] = (
    (None, "max_tokens"),  # Anthropic, Mistral, OpenAI-style
    (None, "max_gen_len"),  # Meta Llama
    ("inferenceConfig", "maxTokens"),  # Nova, Converse
    ("inferenceConfig", "max_new_tokens"),  # older Nova
    ("textGenerationConfig", "maxTokenCount"),  # Titan Text
)


def requested_max_tokens(body: Mapping[str, Any]) -> int | None:
    """The reply token limit a request body asks for, in any family's field, or ``None`` when it names
    none (the cost estimate then uses the pipeline's ``max_tokens``).

    :param body: a record's ``modelInput``.
    """
    for container, name in _MAX_TOKENS_FIELDS:
        holder = body if container is None else body.get(container)
        value = holder.get(name) if isinstance(holder, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
