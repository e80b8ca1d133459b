"""The foundation models the emulated service knows: what GetFoundationModel and ListFoundationModels answer,
and which model ids CreateModelInvocationJob and the runtime accept.

Written from the Bedrock user guide's model-id and model-lifecycle tables (2026-02), not from the library: an
id this table lacks is refused like the service refuses an unknown id, so a typo fails in tests as in AWS.
Lifecycle states and modalities follow the guide where it says; inference types are ``ON_DEMAND`` for every
model (the only value botocore's ``InferenceType`` enum and the emulator's runtime need).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

LIFECYCLE_STATUSES = ("ACTIVE", "LEGACY")
MODALITIES = ("TEXT", "IMAGE", "EMBEDDING")
INFERENCE_TYPES = ("ON_DEMAND", "PROVISIONED")
CUSTOMIZATIONS = ("FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION")

# Prefixes of the system (cross-region) inference profiles: "us.anthropic.claude-…" runs the base model.
PROFILE_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")


@dataclass(frozen=True)
class FoundationModel:
    """One row of the catalogue, in the terms of botocore's ``FoundationModelDetails`` shape."""

    model_id: str
    name: str
    provider: str
    input_modalities: tuple[str, ...] = ("TEXT",)
    output_modalities: tuple[str, ...] = ("TEXT",)
    lifecycle: str = "ACTIVE"
    streaming: bool = True
    customizations: tuple[str, ...] = ()
    inference_types: tuple[str, ...] = ("ON_DEMAND",)

    def details(self, region: str) -> dict[str, Any]:
        """The ``FoundationModelDetails`` (and ``FoundationModelSummary``) of this model in ``region``."""
        return {
            "modelArn": f"arn:aws:bedrock:{region}::foundation-model/{self.model_id}",
            "modelId": self.model_id,
            "modelName": self.name,
            "providerName": self.provider,
            "inputModalities": list(self.input_modalities),
            "outputModalities": list(self.output_modalities),
            "responseStreamingSupported": self.streaming,
            "customizationsSupported": list(self.customizations),
            "inferenceTypesSupported": list(self.inference_types),
            "modelLifecycle": {"status": self.lifecycle},
        }


_VISION = ("TEXT", "IMAGE")


def _models() -> tuple[FoundationModel, ...]:
    anthropic = [
        ("claude-3-haiku-20240307-v1:0", "Claude 3 Haiku", _VISION, "ACTIVE"),
        ("claude-3-sonnet-20240229-v1:0", "Claude 3 Sonnet", _VISION, "LEGACY"),
        ("claude-3-opus-20240229-v1:0", "Claude 3 Opus", _VISION, "LEGACY"),
        ("claude-3-5-haiku-20241022-v1:0", "Claude 3.5 Haiku", ("TEXT",), "ACTIVE"),
        ("claude-3-5-sonnet-20240620-v1:0", "Claude 3.5 Sonnet", _VISION, "LEGACY"),
        ("claude-3-5-sonnet-20241022-v2:0", "Claude 3.5 Sonnet v2", _VISION, "LEGACY"),
        ("claude-3-7-sonnet-20250219-v1:0", "Claude 3.7 Sonnet", _VISION, "ACTIVE"),
        ("claude-sonnet-4-20250514-v1:0", "Claude Sonnet 4", _VISION, "ACTIVE"),
        ("claude-opus-4-20250514-v1:0", "Claude Opus 4", _VISION, "ACTIVE"),
        ("claude-opus-4-1-20250805-v1:0", "Claude Opus 4.1", _VISION, "ACTIVE"),
        ("claude-sonnet-4-5-20250929-v1:0", "Claude Sonnet 4.5", _VISION, "ACTIVE"),
        ("claude-haiku-4-5-20251001-v1:0", "Claude Haiku 4.5", _VISION, "ACTIVE"),
        ("claude-opus-4-5-20251101-v1:0", "Claude Opus 4.5", _VISION, "ACTIVE"),
        ("claude-opus-4-6-v1", "Claude Opus 4.6", _VISION, "ACTIVE"),
        ("claude-sonnet-4-6", "Claude Sonnet 4.6", _VISION, "ACTIVE"),
    ]
    amazon = [
        ("nova-micro-v1:0", "Nova Micro", ("TEXT",), ("TEXT",), "ACTIVE"),
        ("nova-lite-v1:0", "Nova Lite", _VISION, ("TEXT",), "ACTIVE"),
        ("nova-pro-v1:0", "Nova Pro", _VISION, ("TEXT",), "ACTIVE"),
        ("nova-premier-v1:0", "Nova Premier", _VISION, ("TEXT",), "ACTIVE"),
        ("nova-2-lite-v1:0", "Nova 2 Lite", _VISION, ("TEXT",), "ACTIVE"),
        ("titan-text-express-v1", "Titan Text G1 - Express", ("TEXT",), ("TEXT",), "ACTIVE"),
        ("titan-text-lite-v1", "Titan Text G1 - Lite", ("TEXT",), ("TEXT",), "ACTIVE"),
        ("titan-text-premier-v1:0", "Titan Text G1 - Premier", ("TEXT",), ("TEXT",), "ACTIVE"),
        ("titan-tg1-large", "Titan Text Large", ("TEXT",), ("TEXT",), "LEGACY"),
        ("titan-embed-text-v2:0", "Titan Text Embeddings V2", ("TEXT",), ("EMBEDDING",), "ACTIVE"),
    ]
    meta = [
        ("llama3-8b-instruct-v1:0", "Llama 3 8B Instruct", ("TEXT",), "LEGACY"),
        ("llama3-70b-instruct-v1:0", "Llama 3 70B Instruct", ("TEXT",), "LEGACY"),
        ("llama3-1-8b-instruct-v1:0", "Llama 3.1 8B Instruct", ("TEXT",), "ACTIVE"),
        ("llama3-1-70b-instruct-v1:0", "Llama 3.1 70B Instruct", ("TEXT",), "ACTIVE"),
        ("llama3-1-405b-instruct-v1:0", "Llama 3.1 405B Instruct", ("TEXT",), "ACTIVE"),
        ("llama3-2-1b-instruct-v1:0", "Llama 3.2 1B Instruct", ("TEXT",), "ACTIVE"),
        ("llama3-2-3b-instruct-v1:0", "Llama 3.2 3B Instruct", ("TEXT",), "ACTIVE"),
        ("llama3-2-11b-instruct-v1:0", "Llama 3.2 11B Instruct", _VISION, "ACTIVE"),
        ("llama3-2-90b-instruct-v1:0", "Llama 3.2 90B Instruct", _VISION, "ACTIVE"),
        ("llama3-3-70b-instruct-v1:0", "Llama 3.3 70B Instruct", ("TEXT",), "ACTIVE"),
        ("llama4-scout-17b-instruct-v1:0", "Llama 4 Scout 17B Instruct", _VISION, "ACTIVE"),
        ("llama4-maverick-17b-instruct-v1:0", "Llama 4 Maverick 17B Instruct", _VISION, "ACTIVE"),
    ]
    mistral = [
        ("mistral-7b-instruct-v0:2", "Mistral 7B Instruct", ("TEXT",), "ACTIVE"),
        ("mixtral-8x7b-instruct-v0:1", "Mixtral 8x7B Instruct", ("TEXT",), "ACTIVE"),
        ("mistral-large-2402-v1:0", "Mistral Large (24.02)", ("TEXT",), "ACTIVE"),
        ("mistral-small-2402-v1:0", "Mistral Small (24.02)", ("TEXT",), "ACTIVE"),
        ("mistral-large-2407-v1:0", "Mistral Large (24.07)", ("TEXT",), "ACTIVE"),
        ("pixtral-large-2502-v1:0", "Pixtral Large (25.02)", _VISION, "ACTIVE"),
        ("mistral-large-3-675b-instruct", "Mistral Large 3", _VISION, "ACTIVE"),
        ("magistral-small-2509", "Magistral Small 1.2", _VISION, "ACTIVE"),
    ]
    others = [
        FoundationModel("openai.gpt-oss-120b-1:0", "gpt-oss-120b", "OpenAI", streaming=False),
        FoundationModel("openai.gpt-oss-20b-1:0", "gpt-oss-20b", "OpenAI", streaming=False),
        FoundationModel("deepseek.v3-v1:0", "DeepSeek-V3.1", "DeepSeek"),
        FoundationModel("qwen.qwen3-32b-v1:0", "Qwen3 32B (dense)", "Qwen"),
    ]
    return (
        *(
            FoundationModel(f"anthropic.{mid}", name, "Anthropic", inputs, lifecycle=status)
            for mid, name, inputs, status in anthropic
        ),
        *(
            FoundationModel(f"amazon.{mid}", name, "Amazon", inputs, outputs, lifecycle=status)
            for mid, name, inputs, outputs, status in amazon
        ),
        *(
            FoundationModel(f"meta.{mid}", name, "Meta", inputs, lifecycle=status)
            for mid, name, inputs, status in meta
        ),
        *(
            FoundationModel(f"mistral.{mid}", name, "Mistral AI", inputs, lifecycle=status)
            for mid, name, inputs, status in mistral
        ),
        *others,
    )


FOUNDATION_MODELS: tuple[FoundationModel, ...] = _models()
_BY_ID: Mapping[str, FoundationModel] = {model.model_id: model for model in FOUNDATION_MODELS}


def base_model_id(model_id: str) -> str:
    """``anthropic.claude-…`` from a foundation-model or inference-profile ARN, a cross-region profile id or a
    plain model id."""
    tail = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
    for prefix in PROFILE_PREFIXES:
        if tail.startswith(prefix):
            return tail[len(prefix) :]
    return tail


def is_opaque_model_arn(model_id: str) -> bool:
    """Custom models, provisioned throughput and application inference profiles: only the service knows which
    model lies behind the ARN, so the catalogue cannot refuse them."""
    return model_id.startswith("arn:") and any(
        kind in model_id
        for kind in (":custom-model/", ":provisioned-model/", ":application-inference-profile/")
    )


def foundation_model(model_id: str) -> FoundationModel | None:
    """The catalogue row of a plain model id or a foundation-model ARN (GetFoundationModel's identifier)."""
    if model_id.startswith("arn:"):
        if ":foundation-model/" not in model_id:
            return None
        model_id = model_id.rsplit("/", 1)[-1]
    return _BY_ID.get(model_id)


def resolve(model_id: str) -> FoundationModel | None:
    """The foundation model a job or an invocation of ``model_id`` runs: a plain id, a foundation-model ARN,
    a cross-region profile id or a system inference-profile ARN; ``None`` when the catalogue has none."""
    return _BY_ID.get(base_model_id(model_id))


def is_known(model_id: str) -> bool:
    """Whether the service would accept ``model_id`` as a model to run (see :func:`resolve`)."""
    return is_opaque_model_arn(model_id) or resolve(model_id) is not None


def list_models(
    *,
    provider: str | None = None,
    output_modality: str | None = None,
    inference_type: str | None = None,
    customization: str | None = None,
) -> Iterator[FoundationModel]:
    """The catalogue filtered like ListFoundationModels (``byProvider`` ignores case, as the service does)."""
    for model in FOUNDATION_MODELS:
        if provider is not None and model.provider.lower() != provider.lower():
            continue
        if output_modality is not None and output_modality not in model.output_modalities:
            continue
        if inference_type is not None and inference_type not in model.inference_types:
            continue
        if customization is not None and customization not in model.customizations:
            continue
        yield model
