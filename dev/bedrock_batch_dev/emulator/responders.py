"""Model answers for the Bedrock emulator: each family's request and response bodies, and a fake "model".

The model is a deterministic extractive summarizer of call transcripts, so demo results read sensibly.
"""

from __future__ import annotations

import functools
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

# The emulator counts ~4 characters per token, close to what Claude, Llama and Nova report for English.
CHARS_PER_TOKEN = 4

# Geography prefixes of cross-region inference profiles (``us.anthropic.claude-…``).
_PROFILE_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")


class ModelInputError(ValueError):
    """The record's body is not a valid request for the model; the service answers 400 for it."""


def count_tokens(text: str) -> int:
    """Tokens the emulator bills for ``text``."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _malformed(detail: str) -> ModelInputError:
    # Mirrors the service's wording for bodies that fail the model's schema.
    return ModelInputError(f"Malformed input request: {detail}, please reformat your input and try again.")


@dataclass(frozen=True)
class Prompt:
    """What a request body asks, independent of the family that carried it."""

    system: str
    text: str
    max_tokens: int
    stop_sequences: tuple[str, ...] = ()
    prefill: str = ""


@dataclass(frozen=True)
class Reply:
    """A model answer in one family's body format, with the tokens billed for it."""

    body: dict[str, Any]
    input_tokens: int
    output_tokens: int


# --- the "model" ---------------------------------------------------------------------------------------

# Speaker labels a transcript line may start with, and the role each stands for.
_SPEAKERS: Mapping[str, str] = {
    "agent": "agent",
    "representative": "agent",
    "rep": "agent",
    "spk_0": "agent",
    "customer": "customer",
    "caller": "customer",
    "spk_1": "customer",
}
_GREETING_OPENERS = (
    "hi",
    "hello",
    "hey",
    "good morning",
    "good afternoon",
    "my name",
    "this is",
    "thanks",
    "thank",
)
_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>|\[/?INST\]|</?s>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_QUOTED_KEY = re.compile(r"[\"'`]([A-Za-z_][A-Za-z0-9_ ]{1,40})[\"'`]")

TOPIC_KEYWORDS: Mapping[str, tuple[str, ...]] = {
    "billing": ("bill", "charge", "invoice", "refund", "payment", "overcharg", "fee", "statement", "credit"),
    "technical_support": (
        "error",
        "restart",
        "reboot",
        "router",
        "crash",
        "install",
        "not working",
        "connection",
        "firmware",
        "reset",
        "app ",
    ),
    "cancellation": ("cancel", "close my account", "terminate", "switch to another", "retention", "contract"),
    "complaint": (
        "complain",
        "unacceptable",
        "supervisor",
        "manager",
        "rude",
        "ridiculous",
        "never showed",
        "three times",
        "nobody",
    ),
    "order_status": (
        "order",
        "tracking",
        "shipment",
        "shipping",
        "deliver",
        "package",
        "courier",
        "warehouse",
    ),
}
# How a topic may be spelled in a prompt that enumerates the allowed labels; the first one found wins.
TOPIC_SPELLINGS: Mapping[str, tuple[str, ...]] = {
    "billing": ("billing",),
    "technical_support": (
        "technical_support",
        "technical support",
        "tech_support",
        "tech support",
        "technical",
    ),
    "cancellation": ("cancellation", "cancel"),
    "complaint": ("complaint",),
    "order_status": ("order_status", "order status", "shipping", "delivery"),
}
_POSITIVE = (
    "thank",
    "great",
    "appreciate",
    "perfect",
    "helpful",
    "awesome",
    "wonderful",
    "excellent",
    "glad",
)
_NEGATIVE = (
    "frustrat",
    "angry",
    "unacceptable",
    "ridiculous",
    "terrible",
    "disappoint",
    "upset",
    "worst",
    "annoy",
    "waste",
    "furious",
)
_ESCALATED = (
    "escalat",
    "supervisor",
    "specialist",
    "tier 2",
    "open a ticket",
    "transfer",
    "investigation",
    "call you back",
    "will contact you",
)
_UNRESOLVED = ("not able to", "unable to", "can't", "cannot", "unfortunately", "afraid")
_RESOLVED = (
    "resolved",
    "all set",
    "fixed",
    "is working now",
    "working again",
    "processed",
    "has been issued",
    "has been cancelled",
    "confirmed",
    "on its way",
)
_ACTION_CUES = (
    "i will",
    "i'll",
    "we will",
    "we'll",
    "you will receive",
    "you'll receive",
    "you should receive",
)


_OUTCOME_CUES = (*_ESCALATED, *_UNRESOLVED, *_RESOLVED)
_ANY_CUE = (*_OUTCOME_CUES, *_ACTION_CUES)
_TOPICS = tuple(TOPIC_KEYWORDS.items())


@dataclass(frozen=True)
class CallAnalysis:
    """What the summarizer extracts from one transcript; every field is drawn from its text."""

    summary: str
    sentiment: str
    topic: str
    resolution: str
    action_items: tuple[str, ...]


def _score(text: str, words: tuple[str, ...]) -> int:
    """How often ``words`` occur in ``text``; ``map`` keeps the loop in C, which matters at 50k records."""
    return sum(map(text.count, words))


# The analysis reads a call's first and last TURNS_READ turns only (the problem is stated at the start, the
# outcome at the end); a 20 KB transcript then costs about what a 2 KB one does.
TURNS_READ = 8
EDGE = 1_600  # characters at each end of a long transcript that hold those turns
_TURN_START = re.compile(
    r"^[ \t]*(?:agent|customer|caller|rep|representative|spk_0|spk_1)[ \t]*:", re.I | re.M
)


def _turn(line: str) -> tuple[str, str] | None:
    head, colon, rest = line.partition(":")
    if not colon or len(head) > 24:
        return None
    role = _SPEAKERS.get(head.strip().lower())
    rest = rest.strip()
    return (role, rest) if role and rest else None


def split_turns(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The call's first and last ``TURNS_READ`` (role, text) turns, and the prompt's instruction lines.

    Instructions are the non-blank lines before the first ``Agent:``/``Customer:`` line and after the
    last one; a prompt without such lines is all instructions.
    """
    first = _TURN_START.search(text)
    if first is None:
        return [], [line for line in text.splitlines() if line.strip()]
    instructions = [line for line in text[: first.start()].splitlines() if line.strip()]
    transcript = text[first.start() :]
    if len(transcript) > 2 * EDGE:
        # Two windows that cannot overlap; the line cut by each window's inner edge is dropped.
        head_lines, tail_lines = transcript[:EDGE].splitlines()[:-1], transcript[-EDGE:].splitlines()[1:]
    else:
        head_lines = tail_lines = transcript.splitlines()
    head: list[tuple[str, str]] = []
    head_end = -1  # index of the last line read for the head, when both scans share one list
    for index, line in enumerate(head_lines):
        turn = _turn(line)
        if turn:
            head.append(turn)
            head_end = index
            if len(head) == TURNS_READ:
                break
    stop = head_end if tail_lines is head_lines else -1
    tail: list[tuple[str, str]] = []
    trailing: list[str] = []
    for index in range(len(tail_lines) - 1, stop, -1):
        turn = _turn(tail_lines[index])
        if turn:
            tail.append(turn)
            if len(tail) == TURNS_READ:
                break
        elif not tail and tail_lines[index].strip():
            trailing.append(tail_lines[index])
    return head + tail[::-1], instructions + trailing[::-1]


def analyze_transcript(text: str) -> CallAnalysis:
    """Summary, sentiment, topic, resolution and action items of a call, by keyword heuristics."""
    turns, other = split_turns(text)
    return analyze_turns(turns or [("customer", line.strip()) for line in other])


def analyze_turns(turns: Sequence[tuple[str, str]]) -> CallAnalysis:
    """:func:`analyze_transcript` for already split turns.

    Callers state their problem in the first turns and calls end with the outcome, so only those turns are
    read: that keeps the emulator at thousands of records a second even for 20 KB transcripts.
    """
    head, tail = turns[:8], turns[-8:]
    issue = _problem_statement([t for role, t in head if role == "customer"])
    opening = " ".join(t for role, t in head if role == "customer").lower()
    # The problem statement counts three times: it is part of the opening and is repeated twice more.
    weighted = f"{opening} {issue} {issue}".lower()
    scores = {topic: _score(weighted, words) for topic, words in _TOPICS}
    topic = max(scores, key=lambda t: scores[t]) if any(scores.values()) else "general"

    voiced = " ".join(t for role, t in (*head, *tail) if role == "customer").lower()
    mood = _score(voiced, _POSITIVE) - 2 * _score(voiced, _NEGATIVE)
    sentiment = "positive" if mood >= 2 else "negative" if mood <= -2 else "neutral"

    closing = " ".join(t for role, t in turns[-6:] if role == "agent").lower()
    if _score(closing, _ESCALATED):
        resolution = "escalated"
    elif _score(closing, _UNRESOLVED) or not _score(closing, _RESOLVED):
        resolution = "unresolved"
    else:
        resolution = "resolved"

    actions: list[str] = []
    outcome = ""
    for role, turn in tail:
        if role != "agent" or not any(map(turn.lower().__contains__, _ANY_CUE)):
            continue
        for sentence in _SENTENCE_END.split(turn):
            lowered = sentence.lower()
            if not outcome and any(map(lowered.__contains__, _OUTCOME_CUES)):
                outcome = sentence.strip()
            if any(map(lowered.__contains__, _ACTION_CUES)) and sentence.strip() not in actions:
                actions.append(sentence.strip())
    summary = " ".join(part for part in (issue, outcome or (actions[-1] if actions else "")) if part)
    return CallAnalysis(summary[:600], sentiment, topic, resolution, tuple(actions[-3:]))


def _problem_statement(customer_turns: Sequence[str]) -> str:
    """The customer's first sentences that are not a greeting: usually why they called."""
    for turn in customer_turns:
        sentences = [s for s in _SENTENCE_END.split(turn) if not s.lower().startswith(_GREETING_OPENERS)]
        statement = " ".join(sentences[:2]).strip()
        if len(statement) > 40:
            return statement
    return customer_turns[0] if customer_turns else ""


def _label(canonical: str, instructions: str, spellings: Sequence[str]) -> str:
    """The label as the prompt spells it (``"Technical Support"``, ``"NEGATIVE"``), else in plain words."""
    lowered = instructions.lower()
    for spelling in spellings:
        at = lowered.find(spelling)
        if at >= 0:
            found = instructions[at : at + len(spelling)]
            return found if found.isupper() or found.istitle() else spelling
    return canonical.replace("_", " ")


_FIELD_OF_KEY = (
    ("summar", "summary"),
    ("sentiment", "sentiment"),
    ("topic", "topic"),
    ("category", "topic"),
    ("reason", "topic"),
    ("resolution", "resolution"),
    ("resolved", "resolution"),
    ("outcome", "resolution"),
    ("action", "action_items"),
    ("next_step", "action_items"),
    ("follow", "action_items"),
)


@functools.lru_cache(maxsize=256)  # every record of a job shares its prompt template
def _requested_keys(instructions: str) -> tuple[tuple[str, str], ...]:
    """JSON key → analysis field, for the keys a prompt asks for (quoted keys first, then bare words)."""
    keys: dict[str, str] = {}
    for match in _QUOTED_KEY.finditer(instructions):
        key = match.group(1)
        field = next((f for stem, f in _FIELD_OF_KEY if stem in key.lower()), None)
        if field and field not in keys.values() and " " not in key:
            keys[key] = field
    if keys:
        return tuple(keys.items())
    lowered = instructions.lower()
    for word, field in (
        ("summary", "summary"),
        ("sentiment", "sentiment"),
        ("topic", "topic"),
        ("resolution", "resolution"),
        ("action item", "action_items"),
    ):
        if word in lowered:
            keys[field] = field
    return tuple(keys.items()) or (("summary", "summary"),)


def compose_reply(system: str, text: str) -> str:
    """The fake model's answer to a prompt: a JSON object when the prompt asks for one, else a summary."""
    if "<" in text or "[INST" in text:
        text = _SPECIAL_TOKENS.sub(" ", text)
    turns, other = split_turns(text)
    instructions = system + "\n" + "\n".join(other)
    analysis = analyze_turns(turns or [("customer", line.strip()) for line in other])
    if "json" not in instructions.lower():
        return analysis.summary
    answer: dict[str, Any] = {}
    for key, field in _requested_keys(instructions):
        if field == "topic":
            answer[key] = _label(analysis.topic, instructions, TOPIC_SPELLINGS.get(analysis.topic, ()))
        elif field == "sentiment":
            answer[key] = _label(analysis.sentiment, instructions, (analysis.sentiment,))
        elif field == "resolution" and key.lower().startswith(("resolved", "is_")):
            answer[key] = analysis.resolution == "resolved"
        elif field == "resolution":
            answer[key] = _label(analysis.resolution, instructions, (analysis.resolution,))
        elif field == "action_items":
            answer[key] = list(analysis.action_items)
        else:
            answer[key] = analysis.summary
    return orjson.dumps(answer).decode()


def _generate(prompt: Prompt) -> tuple[str, bool]:
    """The reply text (after any assistant prefill) and whether it was cut at ``max_tokens``."""
    reply = compose_reply(prompt.system, prompt.text)
    if prompt.prefill and reply.startswith(prompt.prefill.strip()):
        reply = reply[len(prompt.prefill.strip()) :]
    for stop in prompt.stop_sequences:
        at = reply.find(stop) if stop else -1
        if at >= 0:
            reply = reply[:at]
    limit = prompt.max_tokens * CHARS_PER_TOKEN
    return (reply[:limit], True) if len(reply) > limit else (reply, False)


# --- families --------------------------------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    """Text of a message's content: a string or a list of blocks with ``text``; other blocks are ignored."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _malformed(f"#/{where}: expected type: JSONArray, found: {type(content).__name__}")
    parts = []
    for block in content:
        if not isinstance(block, Mapping):
            raise _malformed(f"#/{where}: expected type: JSONObject")
        if isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "\n".join(parts)


def _messages(body: Mapping[str, Any]) -> tuple[str, str]:
    """All message text joined, and a trailing assistant message (a prefill the reply continues)."""
    messages = body.get("messages")
    if messages is None:
        raise _malformed("#: required key [messages] not found")
    if not isinstance(messages, list) or not messages:
        raise _malformed("#/messages: expected minimum item count: 1")
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise _malformed(f"#/messages/{i}/role: must be one of [user, assistant]")
        texts.append(_text_of(message.get("content"), f"messages/{i}/content"))
    prefill = texts[-1] if messages[-1].get("role") == "assistant" else ""
    return "\n".join(texts if not prefill else texts[:-1]), prefill


def _required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise _malformed(f"#: required key [{key}] not found")
    return value


def _positive_int(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _malformed(f"#/{where}: {value!r} is not a positive integer")
    return value


def _stops(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _malformed(f"#/{where}: expected an array of strings")
    return tuple(value)


class Family(ABC):
    """One model family's request parsing and response rendering."""

    name: ClassVar[str]

    @abstractmethod
    def parse(self, body: Mapping[str, Any]) -> Prompt: ...

    @abstractmethod
    def render(self, text: str, truncated: bool, input_tokens: int, output_tokens: int) -> dict[str, Any]: ...

    def respond(self, body: Any) -> Reply:
        if not isinstance(body, Mapping):
            raise _malformed("#: expected type: JSONObject")
        prompt = self.parse(body)
        text, truncated = _generate(prompt)
        input_tokens = count_tokens(prompt.system) + count_tokens(prompt.text) + count_tokens(prompt.prefill)
        output_tokens = count_tokens(text)
        return Reply(self.render(text, truncated, input_tokens, output_tokens), input_tokens, output_tokens)


class AnthropicMessages(Family):
    name = "anthropic"

    def parse(self, body: Mapping[str, Any]) -> Prompt:
        if "anthropic_version" not in body:
            raise _malformed("#: required key [anthropic_version] not found")
        if "max_tokens" not in body:
            raise _malformed("#: required key [max_tokens] not found")
        text, prefill = _messages(body)
        system = body.get("system", "")
        return Prompt(
            system=system if isinstance(system, str) else _text_of(system, "system"),
            text=text,
            max_tokens=_positive_int(body["max_tokens"], "max_tokens", 1),
            stop_sequences=_stops(body.get("stop_sequences"), "stop_sequences"),
            prefill=prefill,
        )

    def render(self, text: str, truncated: bool, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "id": "msg_bdrk_" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest(),
            "type": "message",
            "role": "assistant",
            "model": "claude-emulated",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if truncated else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }


class NovaMessages(Family):
    name = "nova"

    def parse(self, body: Mapping[str, Any]) -> Prompt:
        text, prefill = _messages(body)
        config = body.get("inferenceConfig") or {}
        if not isinstance(config, Mapping):
            raise _malformed("#/inferenceConfig: expected type: JSONObject")
        max_tokens = config.get("maxTokens", config.get("max_new_tokens"))
        return Prompt(
            system=_text_of(body.get("system", []), "system"),
            text=text,
            max_tokens=_positive_int(max_tokens, "inferenceConfig/maxTokens", 5000),
            stop_sequences=_stops(config.get("stopSequences"), "inferenceConfig/stopSequences"),
            prefill=prefill,
        )

    def render(self, text: str, truncated: bool, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "max_tokens" if truncated else "end_turn",
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
        }


class ConverseMessages(NovaMessages):
    """The Converse API body: Nova's message shape, without ``schemaVersion`` and with ``maxTokens`` only."""

    name = "converse"

    def parse(self, body: Mapping[str, Any]) -> Prompt:
        config = body.get("inferenceConfig") or {}
        if isinstance(config, Mapping) and "max_new_tokens" in config:
            raise _malformed("#/inferenceConfig: extraneous key [max_new_tokens] is not permitted")
        return super().parse(body)


class LlamaText(Family):
    name = "llama"

    def parse(self, body: Mapping[str, Any]) -> Prompt:
        prompt = _required_text(body, "prompt")
        return Prompt(
            system="", text=prompt, max_tokens=_positive_int(body.get("max_gen_len"), "max_gen_len", 512)
        )

    def render(self, text: str, truncated: bool, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "generation": text,
            "prompt_token_count": input_tokens,
            "generation_token_count": output_tokens,
            "stop_reason": "length" if truncated else "stop",
        }


class TitanText(Family):
    name = "titan"

    def parse(self, body: Mapping[str, Any]) -> Prompt:
        prompt = _required_text(body, "inputText")
        config = body.get("textGenerationConfig") or {}
        if not isinstance(config, Mapping):
            raise _malformed("#/textGenerationConfig: expected type: JSONObject")
        return Prompt(
            system="",
            text=prompt,
            max_tokens=_positive_int(config.get("maxTokenCount"), "textGenerationConfig/maxTokenCount", 512),
            stop_sequences=_stops(config.get("stopSequences"), "textGenerationConfig/stopSequences"),
        )

    def render(self, text: str, truncated: bool, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "inputTextTokenCount": input_tokens,
            "results": [
                {
                    "tokenCount": output_tokens,
                    "outputText": text,
                    "completionReason": "LENGTH" if truncated else "FINISH",
                }
            ],
        }


FAMILIES: Mapping[str, Family] = {
    f.name: f for f in (AnthropicMessages(), NovaMessages(), ConverseMessages(), LlamaText(), TitanText())
}


def base_model_id(model_id: str) -> str:
    """``anthropic.claude-…`` from a foundation-model ARN, a cross-region profile id or a plain model id."""
    tail = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
    for prefix in _PROFILE_PREFIXES:
        if tail.startswith(prefix):
            return tail[len(prefix) :]
    return tail


def family_for_model(model_id: str, invocation_type: str | None = None) -> str | None:
    """The family the service would answer in, or ``None`` when the id alone does not tell (custom ARNs)."""
    if invocation_type == "Converse":
        return "converse"
    base = base_model_id(model_id)
    if base.startswith("anthropic."):
        return "anthropic"
    if base.startswith("amazon.nova"):
        return "nova"
    if base.startswith(("amazon.titan-text", "amazon.titan-tg1")):
        return "titan"
    if base.startswith("meta.llama"):
        return "llama"
    return None


def is_opaque_model_arn(model_id: str) -> bool:
    """Custom models and application inference profiles: the family is only known from the body."""
    return model_id.startswith("arn:") and (
        ":custom-model/" in model_id or "application-inference-profile/" in model_id
    )


def family_from_body(body: Any) -> str | None:
    """Guess the family from a request body's shape (used for ARNs that do not name the base model)."""
    if not isinstance(body, Mapping):
        return None
    if "anthropic_version" in body:
        return "anthropic"
    if "inputText" in body:
        return "titan"
    if "prompt" in body:
        return "llama"
    if "messages" in body:
        return "nova"
    return None


def respond(family: str | None, body: Any) -> Reply:
    """Answer ``body`` in ``family``'s format (guessing it from the body when ``None``)."""
    name = family or family_from_body(body)
    if name is None:
        raise _malformed("#: the request body does not match any supported model family")
    return FAMILIES[name].respond(body)


def respond_converse(request: Mapping[str, Any], latency_ms: int = 1) -> Reply:
    """The runtime Converse answer: the Converse body plus the ``metrics`` block the runtime API adds."""
    reply = FAMILIES["converse"].respond(request)
    return Reply(
        {**reply.body, "metrics": {"latencyMs": latency_ms}}, reply.input_tokens, reply.output_tokens
    )
