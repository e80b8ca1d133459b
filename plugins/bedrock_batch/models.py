"""Model families: the request body each model expects and the reply it returns, one small class per family.

Also infers the family from a model id, inference-profile id or ARN, and estimates prompt tokens.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, NoReturn

from bedrock_batch.errors import ConfigError, OutputFormatError, UnknownModelError

INVOCATION_TYPES = ("InvokeModel", "Converse")

# Geography prefixes of system-defined cross-region inference profiles (``us.anthropic.claude-…``).
REGION_PREFIXES = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})

# ~4 characters per token holds for English prose with the Claude, Llama and Nova tokenizers.
CHARS_PER_TOKEN = 4

# Used for models missing from the table below: the window of the smaller text models (Llama 3 8B,
# Titan Text Express), so an unknown model rather sees a long prompt quarantined than rejected.
DEFAULT_CONTEXT_WINDOW_TOKENS = 8_192


class ResponseFormatError(OutputFormatError):
    """A model reply does not have the body shape of the model family it was parsed as."""


@dataclass(frozen=True)
class InferenceParams:
    """Inference parameters shared by every family; a family without a matching field ignores it.

    :param max_tokens: most tokens the model may generate.
    :param temperature: sampling temperature; ``None`` keeps the model's default.
    :param top_p: nucleus sampling mass; ``None`` keeps the model's default.
    :param top_k: sample from the k most likely tokens (Anthropic and Nova only); ``None`` keeps the default.
    :param stop_sequences: strings that end generation (not supported by Llama).
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


@dataclass(frozen=True)
class ModelReply:
    """What collect keeps of a model's reply.

    :param text: the generated text (text blocks concatenated; reasoning blocks left out).
    :param input_tokens: prompt tokens the model reported, ``None`` if it did not.
    :param output_tokens: generated tokens the model reported, ``None`` if it did not.
    :param stop_reason: why generation ended, in the model's own words (``end_turn``, ``max_tokens``, ...).
    """

    text: str
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None


class ModelFamily(ABC):
    """Request body builder and response parser for one family of models."""

    name: ClassVar[str]

    @abstractmethod
    def build_request(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        """The ``modelInput`` body for one prompt.

        :param system: system prompt; an empty string sends none.
        :param user: the user turn (the rendered prompt with the transcript).
        :param params: inference parameters.
        """

    @abstractmethod
    def parse_response(self, body: Mapping[str, Any]) -> ModelReply:
        """The reply in a ``modelOutput`` body.

        :param body: the decoded ``modelOutput`` object.
        :raises ResponseFormatError: when ``body`` does not have this family's shape.
        """

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


def _text_of(blocks: list[Any]) -> str:
    # Thinking / reasoning blocks (Claude extended thinking, Nova 2 reasoningContent) have no "text"
    # string, so only the answer is kept.
    parts = [
        block["text"] for block in blocks if isinstance(block, _OBJECT) and isinstance(block.get("text"), str)
    ]
    return parts[0] if len(parts) == 1 else "".join(parts)


def _token_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _chat_reply(
    body: Mapping[str, Any], content: list[Any], input_key: str, output_key: str, stop_key: str
) -> ModelReply:
    # Claude and Converse/Nova replies differ only in these field names.
    usage = body.get("usage")
    usage = usage if isinstance(usage, _OBJECT) else {}
    return ModelReply(
        text=_text_of(content),
        input_tokens=_token_count(usage.get(input_key)),
        output_tokens=_token_count(usage.get(output_key)),
        stop_reason=_optional_str(body.get(stop_key)),
    )


class AnthropicFamily(ModelFamily):
    """Anthropic Claude through the messages API (``anthropic_version`` bedrock-2023-05-31)."""

    name = "anthropic"
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "top_k": "top_k",
        "stop_sequences": "stop_sequences",
    }

    def build_request(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        body: dict[str, Any] = {"anthropic_version": "bedrock-2023-05-31"}
        body.update(params.body_fields(self.PARAMS))
        if system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": user}]}]
        return body

    def parse_response(self, body: Mapping[str, Any]) -> ModelReply:
        content = body.get("content") if isinstance(body, _OBJECT) else None
        if not isinstance(content, list):
            self._malformed(body, "has no 'content' list")
        return _chat_reply(body, content, "input_tokens", "output_tokens", "stop_reason")


class ConverseFamily(ModelFamily):
    """The Converse invocation type, which Bedrock translates for any model.

    ``top_k`` is ignored: Converse has no common field for it (models take it under
    ``additionalModelRequestFields`` with model-specific names).
    """

    name = "converse"
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "maxTokens",
        "temperature": "temperature",
        "top_p": "topP",
        "stop_sequences": "stopSequences",
    }

    def build_request(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if system:
            body["system"] = [{"text": system}]
        body["messages"] = [{"role": "user", "content": [{"text": user}]}]
        body["inferenceConfig"] = params.body_fields(self.PARAMS)
        return body

    def parse_response(self, body: Mapping[str, Any]) -> ModelReply:
        output = body.get("output") if isinstance(body, _OBJECT) else None
        message = output.get("message") if isinstance(output, _OBJECT) else None
        content = message.get("content") if isinstance(message, _OBJECT) else None
        if not isinstance(content, list):
            self._malformed(body, "has no 'output.message.content' list")
        # Nova 1 replies hold text blocks only; Nova 2 with reasoning (and reasoning models through
        # Converse) put {"reasoningContent": ...} blocks first. _text_of reads both generations.
        return _chat_reply(body, content, "inputTokens", "outputTokens", "stopReason")


class NovaFamily(ConverseFamily):
    """Amazon Nova through InvokeModel (``schemaVersion`` messages-v1); replies have the Converse shape.

    The token limit is sent as ``inferenceConfig.maxTokens``, the current documented name; older Nova
    documentation calls it ``max_new_tokens``.
    """

    name = "nova"
    PARAMS: ClassVar[Mapping[str, str]] = {**ConverseFamily.PARAMS, "top_k": "topK"}

    def build_request(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        return {"schemaVersion": "messages-v1", **super().build_request(system, user, params)}


class LlamaFamily(ModelFamily):
    """Meta Llama 3.x through InvokeModel: one prompt string in the Llama 3 chat template.

    Llama on Bedrock has no ``top_k`` or stop sequences; both are ignored.
    """

    name = "llama"
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_gen_len",
        "temperature": "temperature",
        "top_p": "top_p",
    }

    def build_request(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        prompt = "<|begin_of_text|>"
        if system:
            prompt += f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
        prompt += (
            f"<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
        return {"prompt": prompt, **params.body_fields(self.PARAMS)}

    def parse_response(self, body: Mapping[str, Any]) -> ModelReply:
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
    ``top_k`` is ignored.
    """

    name = "titan"
    PARAMS: ClassVar[Mapping[str, str]] = {
        "max_tokens": "maxTokenCount",
        "temperature": "temperature",
        "top_p": "topP",
        "stop_sequences": "stopSequences",
    }

    def build_request(self, system: str, user: str, params: InferenceParams) -> dict[str, Any]:
        input_text = f"{system}\n\n{user}" if system else user
        return {"inputText": input_text, "textGenerationConfig": params.body_fields(self.PARAMS)}

    def parse_response(self, body: Mapping[str, Any]) -> ModelReply:
        results = body.get("results") if isinstance(body, _OBJECT) else None
        first = results[0] if isinstance(results, list) and results else None
        text = first.get("outputText") if isinstance(first, _OBJECT) else None
        if not isinstance(first, _OBJECT) or not isinstance(text, str):
            self._malformed(body, "has no 'results[0].outputText' string")
        return ModelReply(
            text=text,
            input_tokens=_token_count(body.get("inputTextTokenCount")),
            output_tokens=_token_count(first.get("tokenCount")),
            stop_reason=_optional_str(first.get("completionReason")),
        )


FAMILIES: Mapping[str, ModelFamily] = MappingProxyType(
    {
        family.name: family
        for family in (AnthropicFamily(), NovaFamily(), LlamaFamily(), TitanFamily(), ConverseFamily())
    }
)

# (provider, start of the model name) → family, for InvokeModel. Converse covers every other model.
_FAMILY_BY_MODEL_PREFIX: tuple[tuple[str, str, str], ...] = (
    ("anthropic", "claude", "anthropic"),
    ("amazon", "nova", "nova"),
    ("amazon", "titan-text", "titan"),
    ("amazon", "titan-tg1", "titan"),
    ("meta", "llama", "llama"),
)

# Context windows in tokens, by the start of the base model id; the longest matching prefix wins.
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
    if invocation_type not in INVOCATION_TYPES:
        raise ConfigError(f"invocation_type must be one of {list(INVOCATION_TYPES)}, got {invocation_type!r}")
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
