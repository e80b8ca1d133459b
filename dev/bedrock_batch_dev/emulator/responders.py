"""Model answers for the Bedrock emulator: each family's request and response bodies, and a fake "model".

The model summarizes call transcripts extractively, so demo results read sensibly, and answers any declared
reply schema (structured outputs, a strict or forced tool, a JSON Schema written in the prompt) with a value
valid against it, drawn from the input (``answers``). What the service accepts: ``schemas``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from bedrock_batch_dev.emulator import answers, schemas
from bedrock_batch_dev.emulator.catalogue import base_model_id, is_opaque_model_arn
from bedrock_batch_dev.emulator.catalogue import resolve as resolve_model

# The emulator counts ~4 characters per token, close to what Claude, Llama and Nova report for English.
CHARS_PER_TOKEN = 4

# The emulator's wording (the user guide says only that such records "fail with a 400 error").
BATCH_CONVERSE_TOOLS_MESSAGE = (
    "Batch inference jobs of the Converse invocation type don't support tool use: remove toolConfig, or use "
    "the InvokeModel invocation type with the model's native request format."
)


INVALID_MODEL_MESSAGE = "The provided model identifier is invalid."


class ModelInputError(ValueError):
    """The record's body is not a valid request for the model; the service answers 400 for it."""


def count_tokens(text: str) -> int:
    """Tokens the emulator bills for ``text``."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def _malformed(detail: str) -> ModelInputError:
    # Mirrors the service's wording for bodies that fail the model's schema.
    return ModelInputError(f"Malformed input request: {detail}, please reformat your input and try again.")


@dataclass(frozen=True)
class Tool:
    """A tool the request declares: its name and input schema (strict: the service constrains the input)."""

    name: str
    schema: Mapping[str, Any]
    strict: bool = False


@dataclass(frozen=True)
class Prompt:
    """What a request body asks, independent of the family that carried it.

    :param schema: the reply schema of a structured-output request (the reply text is JSON valid against it).
    :param tool: the tool the model calls instead of answering in text.
    """

    system: str
    text: str
    max_tokens: int
    stop_sequences: tuple[str, ...] = ()
    prefill: str = ""
    schema: Mapping[str, Any] | None = None
    tool: Tool | None = None


@dataclass(frozen=True)
class Invocation:
    """How a body reached the model.

    :param model_id: the model id or ARN it was sent to, which decides the model's capabilities (``None``: not
        known, every capability is granted).
    :param batch: the body is a record of a batch job (jobs of the Converse type refuse tool use).
    :param invalid_draw: the invalid-reply fault's draw in [0, 1) for this request (``None``: answer right).
    """

    model_id: str | None = None
    batch: bool = False
    invalid_draw: float | None = None

    @property
    def capabilities(self) -> schemas.ModelCapabilities:
        if self.model_id is None or is_opaque_model_arn(self.model_id):
            return schemas.capabilities(None)
        return schemas.capabilities(base_model_id(self.model_id))


@dataclass(frozen=True)
class Answer:
    """What the model produced: reply text (cut at ``max_tokens``), or a call of ``tool`` with ``tool_input``
    (then ``text`` is that input as JSON, which is what is billed)."""

    text: str
    truncated: bool
    tool: Tool | None = None
    tool_input: Any = None


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


@functools.lru_cache(maxsize=256)  # every record of a job shares its prompt template
def _requested_keys(instructions: str) -> tuple[tuple[str, str], ...]:
    """JSON key → analysis field, for the keys a prompt asks for (quoted keys first, then bare words)."""
    keys: dict[str, str] = {}
    for match in _QUOTED_KEY.finditer(instructions):
        key = match.group(1)
        field = answers.fact_field(key)
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


def compose_reply(system: str, text: str, invalid_draw: float | None = None) -> str:
    """The fake model's answer to a prompt without a reply schema: a JSON object when the prompt asks for one,
    else a summary. ``invalid_draw`` (the invalid-reply fault) breaks the JSON answer."""
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
    if invalid_draw is not None:
        broken = _break_keyed_answer(answer, invalid_draw, analysis.summary)
        if broken is not None:
            return broken
    return orjson.dumps(answer).decode()


def _break_keyed_answer(answer: dict[str, Any], draw: float, summary: str) -> str | None:
    """The invalid-reply fault on a schema-less JSON answer: a label outside the ones the prompt allows, a
    missing key, or prose instead of JSON (returned as text; ``None`` when ``answer`` was broken in place)."""
    kinds = ("enum", "missing", "not_json")
    start = min(int(draw * len(kinds)), len(kinds) - 1)
    for kind in (*kinds[start:], *kinds[:start]):
        labelled = [
            k
            for k, v in answer.items()
            if isinstance(v, str)
            and answers.fact_field(k)
            in (
                "sentiment",
                "resolution",
            )
        ]
        if kind == "enum" and labelled:
            answer[labelled[0]] = "unclear"
            return None
        if kind == "missing" and answer:
            del answer[next(iter(answer))]
            return None
        if kind == "not_json":
            return f"Sure! Here is a summary of the call: {summary}"
    return None


def _data_text(text: str) -> str:
    """The part of a prompt that holds the data: the largest ``<tag>…</tag>`` block, else all of it."""
    blocks = [m.group(2) for m in _TAGGED.finditer(text) if len(m.group(2).strip()) > 40]
    return max(blocks, key=len) if blocks else text


_TAGGED = re.compile(r"<([A-Za-z_][\w-]{0,40})>(.*?)</\1>", re.S)


def _grounding(text: str) -> answers.Grounding:
    """What a schema answer is drawn from: a call's turns and analysis, or the prompt's data text."""
    if "<" in text or "[INST" in text:
        text = _SPECIAL_TOKENS.sub(" ", text)
    turns, _ = split_turns(text)
    if not turns:
        return answers.Grounding.of(_data_text(text))
    analysis = analyze_turns(turns)
    facts: dict[str, Any] = {
        "sentiment": analysis.sentiment,
        "topic": analysis.topic,
        "resolution": analysis.resolution,
        "action_items": list(analysis.action_items),
    }
    if analysis.summary:
        facts["summary"] = analysis.summary
    return answers.Grounding.of("\n".join(turn for _, turn in turns), facts)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _schema_reply(
    system: str, text: str, schema: Mapping[str, Any] | None, invalid_draw: float | None
) -> str:
    """The reply text: JSON valid against the request's schema, or against one written in the prompt (then the
    invalid-reply fault may also answer with prose), or the call summarizer's answer when there is none."""
    prompted = schema is None
    if schema is None:
        found = schemas.find_schema(system) if system else None
        if found is None:
            found = schemas.find_schema(text, cache=False)
            if found is not None:
                text = text[: found.start] + text[found.end :]
        if found is None:
            return compose_reply(system, text, invalid_draw)
        schema = found.schema
    grounding = _grounding(text)
    value = answers.answer(schema, grounding)
    if invalid_draw is not None:
        broken = answers.break_answer(
            value, schema, invalid_draw, allow_not_json=prompted, grounding=grounding
        )
        if broken.text is not None:
            return broken.text
        value = broken.value
    return _dumps(value)


def _generate(prompt: Prompt, invalid_draw: float | None = None) -> Answer:
    """The model's answer: a tool call, or text (after any assistant prefill) cut at ``max_tokens``."""
    if prompt.tool is not None:
        grounding = _grounding(prompt.text)
        value = answers.answer(prompt.tool.schema, grounding)
        if invalid_draw is not None:
            broken = answers.break_answer(
                value, prompt.tool.schema, invalid_draw, allow_not_json=False, grounding=grounding
            )
            value = broken.value if isinstance(broken.value, dict) else value  # a tool input stays an object
        return Answer(_dumps(value), False, prompt.tool, value)
    reply = _schema_reply(prompt.system, prompt.text, prompt.schema, invalid_draw)
    if prompt.prefill and reply.startswith(prompt.prefill.strip()):
        reply = reply[len(prompt.prefill.strip()) :]
    for stop in prompt.stop_sequences:
        at = reply.find(stop) if stop else -1
        if at >= 0:
            reply = reply[:at]
    limit = prompt.max_tokens * CHARS_PER_TOKEN
    return Answer(reply[:limit], True) if len(reply) > limit else Answer(reply, False)


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


def _messages(
    body: Mapping[str, Any], roles: tuple[str, ...] = ("user", "assistant")
) -> tuple[str, str, str]:
    """System-role text, all other message text joined, and a trailing assistant message (a prefill the reply
    continues)."""
    messages = body.get("messages")
    if messages is None:
        raise _malformed("#: required key [messages] not found")
    if not isinstance(messages, list) or not messages:
        raise _malformed("#/messages: expected minimum item count: 1")
    system: list[str] = []
    texts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in roles:
            raise _malformed(f"#/messages/{i}/role: must be one of [{', '.join(roles)}]")
        text = _text_of(message.get("content", ""), f"messages/{i}/content")
        (system if message["role"] == "system" else texts).append(text)
    prefill = texts[-1] if messages[-1].get("role") == "assistant" and texts else ""
    return "\n".join(system), "\n".join(texts if not prefill else texts[:-1]), prefill


def _required_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise _malformed(f"#: required key [{key}] not found")
    return value


def _raw_prefill(prompt: str) -> str:
    """A raw prompt that ends inside the assistant's turn with ``{`` has started the JSON reply itself."""
    return "{" if prompt.rstrip().endswith("{") else ""


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


# --- structured outputs and tools, as each body spells them -----------------------------------------------


def _checked(schema: Any, where: str) -> Mapping[str, Any]:
    """``schema`` if the service accepts it for constrained decoding, else the 400 it answers."""
    problem = schemas.check_schema(schema, where)
    if problem:
        raise ModelInputError(problem)
    return schema  # check_schema proved it a mapping


def _json_schema_format(fmt: Any, where: str) -> Mapping[str, Any]:
    """The schema of an Anthropic-style ``{"type": "json_schema", "schema": {…}}`` format."""
    if not isinstance(fmt, Mapping):
        raise ModelInputError(f"{where}: Input should be a valid dictionary")
    if fmt.get("type") != "json_schema":
        raise ModelInputError(f"{where}.type: Input should be 'json_schema'")
    if "schema" not in fmt:
        raise ModelInputError(f"{where}.schema: Field required")
    return _checked(fmt["schema"], f"{where}.schema")


def _refuse_unless_structured(body: Mapping[str, Any], keys: tuple[str, ...], invocation: Invocation) -> None:
    # A model without the feature validates its body against a schema that has no such key.
    for key in keys:
        if key in body and not invocation.capabilities.structured_output:
            raise _malformed(f"#: extraneous key [{key}] is not permitted")


def _response_format(body: Mapping[str, Any], invocation: Invocation) -> Mapping[str, Any] | None:
    """The schema of an open-weight body's ``response_format`` (``{"type": "json_schema", "json_schema":
    {"name", "schema", "strict"}}``); ``text`` and ``json_object`` leave the reply to the prompt."""
    _refuse_unless_structured(body, ("response_format",), invocation)
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping):
        raise ModelInputError("response_format: Input should be a valid dictionary")
    if fmt.get("type") in ("text", "json_object"):
        return None
    if fmt.get("type") != "json_schema":
        raise ModelInputError("response_format.type: Input should be 'text', 'json_object' or 'json_schema'")
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping) or "schema" not in spec:
        raise ModelInputError("response_format.json_schema.schema: Field required")
    return _checked(spec["schema"], "response_format.json_schema.schema")


def _chosen_tool(declared: Sequence[Tool], mode: Any, name: Any, where: str) -> Tool | None:
    """The tool the model calls: the named one, else (``any``/``auto``) the first strict one or the first."""
    if mode == "none" or not declared:
        return None
    if mode == "tool":
        for tool in declared:
            if tool.name == name:
                return tool
        raise ModelInputError(f"{where}: tool {name!r} is not one of the tools in the request")
    return next((t for t in declared if t.strict), declared[0])


def _declare(name: Any, schema: Any, strict: Any, where: str, invocation: Invocation, refusal: str) -> Tool:
    """One declared tool; a strict one needs the structured-output feature and a schema in its subset."""
    if not isinstance(name, str) or not isinstance(schema, Mapping):
        raise _malformed(f"#/{where.replace('.', '/')}: a tool needs a name and an input schema object")
    if strict:
        if not invocation.capabilities.structured_output:
            raise ModelInputError(refusal)
        _checked(schema, where)
    return Tool(name, schema, bool(strict))


def _tools_list(body: Mapping[str, Any], invocation: Invocation) -> list[Any] | None:
    """A native body's ``tools`` array (Anthropic, Mistral chat), refused by a model without tool use."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not invocation.capabilities.tool_use:
        raise _malformed("#: extraneous key [tools] is not permitted")
    if not isinstance(tools, list):
        raise _malformed("#/tools: expected type: JSONArray")
    return tools


def _converse_field_refusal(field: str) -> str:
    # The Converse API's wording for a field the model does not support.
    return f"This model doesn't support the {field} field. Remove {field} and try again."


def _tool_config(config: Any, invocation: Invocation, *, converse: bool) -> Tool | None:
    """The tool called for a Converse-style ``toolConfig`` (Converse, and Nova's native body)."""
    if config is None:
        return None
    if not isinstance(config, Mapping) or not isinstance(config.get("tools"), list):
        raise _malformed("#/toolConfig: required key [tools] not found")
    if not invocation.capabilities.tool_use:
        raise ModelInputError("This model doesn't support tool use.")
    declared = []
    for i, entry in enumerate(config["tools"]):
        spec = entry.get("toolSpec") if isinstance(entry, Mapping) else None
        if not isinstance(spec, Mapping):
            continue  # cache points and other non-tool entries
        strict_field = f"toolConfig.tools.{i}.toolSpec.strict"
        refusal = (
            _converse_field_refusal(strict_field)
            if converse
            else str(_malformed(f"#/toolConfig/tools/{i}/toolSpec: extraneous key [strict] is not permitted"))
        )
        schema = (
            (spec.get("inputSchema") or {}).get("json")
            if isinstance(spec.get("inputSchema"), Mapping)
            else None
        )
        where = f"toolConfig.tools.{i}.toolSpec.inputSchema.json"
        declared.append(_declare(spec.get("name"), schema, spec.get("strict"), where, invocation, refusal))
    choice = config.get("toolChoice") or {"auto": {}}
    mode = next(iter(choice), "auto") if isinstance(choice, Mapping) else "auto"
    tool_name = (
        choice.get("tool", {}).get("name")
        if mode == "tool" and isinstance(choice.get("tool"), Mapping)
        else None
    )
    return _chosen_tool(declared, mode, tool_name, "toolConfig.toolChoice.tool.name")


def _converse_output_schema(config: Any, invocation: Invocation) -> Mapping[str, Any] | None:
    """The schema of Converse's ``outputConfig.textFormat`` (the schema travels as a JSON string)."""
    if not isinstance(config, Mapping) or config.get("textFormat") is None:
        return None
    field = "outputConfig.textFormat"
    if not invocation.capabilities.structured_output:
        raise ModelInputError(_converse_field_refusal(field))
    text_format = config["textFormat"]
    if not isinstance(text_format, Mapping) or text_format.get("type") != "json_schema":
        raise ModelInputError(f"{field}.type: Member must satisfy enum value set: [json_schema]")
    structure = text_format.get("structure")
    definition = structure.get("jsonSchema") if isinstance(structure, Mapping) else None
    where = f"{field}.structure.jsonSchema.schema"
    if not isinstance(definition, Mapping) or not isinstance(definition.get("schema"), str):
        raise ModelInputError(f"{where}: Member must not be null: a JSON Schema, as a string")
    try:
        schema = json.loads(definition["schema"])
    except ValueError as exc:
        raise ModelInputError(f"{where}: the schema is not valid JSON ({exc})") from exc
    return _checked(schema, where)


def _short_id(prefix: str, text: str, size: int) -> str:
    return prefix + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:size]


class Family(ABC):
    """One model family's request parsing and response rendering."""

    name: ClassVar[str]

    @abstractmethod
    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt: ...

    @abstractmethod
    def render(self, answer: Answer, input_tokens: int, output_tokens: int) -> dict[str, Any]: ...

    def respond(self, body: Any, invocation: Invocation) -> Reply:
        if not isinstance(body, Mapping):
            raise _malformed("#: expected type: JSONObject")
        prompt = self.parse(body, invocation)
        answer = _generate(prompt, invocation.invalid_draw)
        input_tokens = count_tokens(prompt.system) + count_tokens(prompt.text) + count_tokens(prompt.prefill)
        output_tokens = count_tokens(answer.text)
        return Reply(self.render(answer, input_tokens, output_tokens), input_tokens, output_tokens)


class AnthropicMessages(Family):
    name = "anthropic"

    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt:
        if "anthropic_version" not in body:
            raise _malformed("#: required key [anthropic_version] not found")
        if "max_tokens" not in body:
            raise _malformed("#: required key [max_tokens] not found")
        _, text, prefill = _messages(body)
        system = body.get("system", "")
        _refuse_unless_structured(body, ("output_config", "output_format"), invocation)
        schema = None
        config = body.get("output_config")
        if config is not None:
            if not isinstance(config, Mapping):
                raise ModelInputError("output_config: Input should be a valid dictionary")
            if config.get("format") is not None:
                schema = _json_schema_format(config["format"], "output_config.format")
        elif body.get("output_format") is not None:  # the deprecated spelling of output_config.format
            schema = _json_schema_format(body["output_format"], "output_format")
        return Prompt(
            system=system if isinstance(system, str) else _text_of(system, "system"),
            text=text,
            max_tokens=_positive_int(body["max_tokens"], "max_tokens", 1),
            stop_sequences=_stops(body.get("stop_sequences"), "stop_sequences"),
            prefill=prefill,
            schema=schema,
            tool=self._tool(body, invocation),
        )

    @staticmethod
    def _tool(body: Mapping[str, Any], invocation: Invocation) -> Tool | None:
        tools = _tools_list(body, invocation)
        if tools is None:
            return None
        declared = []
        for i, spec in enumerate(tools):
            if not isinstance(spec, Mapping):
                raise _malformed(f"#/tools/{i}: expected type: JSONObject")
            if "input_schema" not in spec:
                continue  # server tools (web search, …) take no input the emulator answers
            refusal = str(_malformed(f"#/tools/{i}: extraneous key [strict] is not permitted"))
            where = f"tools.{i}.input_schema"
            declared.append(
                _declare(
                    spec.get("name"), spec["input_schema"], spec.get("strict"), where, invocation, refusal
                )
            )
        choice = body.get("tool_choice") or {"type": "auto"}
        if not isinstance(choice, Mapping):
            raise _malformed("#/tool_choice: expected type: JSONObject")
        return _chosen_tool(declared, choice.get("type"), choice.get("name"), "tool_choice.name")

    def render(self, answer: Answer, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        if answer.tool is not None:
            content: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": _short_id("toolu_bdrk_", answer.text, 24),
                    "name": answer.tool.name,
                    "input": answer.tool_input,
                }
            ]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": answer.text}]
            stop_reason = "max_tokens" if answer.truncated else "end_turn"
        return {
            "id": "msg_bdrk_" + hashlib.blake2b(answer.text.encode(), digest_size=12).hexdigest(),
            "type": "message",
            "role": "assistant",
            "model": "claude-emulated",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }


class NovaMessages(Family):
    name = "nova"
    converse: ClassVar[bool] = False

    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt:
        _, text, prefill = _messages(body)
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
            tool=_tool_config(body.get("toolConfig"), invocation, converse=self.converse),
        )

    def render(self, answer: Answer, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        if answer.tool is not None:
            block: dict[str, Any] = {
                "toolUse": {
                    "toolUseId": _short_id("tooluse_", answer.text, 22),
                    "name": answer.tool.name,
                    "input": answer.tool_input,
                }
            }
            stop_reason = "tool_use"
        else:
            block = {"text": answer.text}
            stop_reason = "max_tokens" if answer.truncated else "end_turn"
        return {
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": stop_reason,
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
        }


class ConverseMessages(NovaMessages):
    """The Converse API body: Nova's message shape, without ``schemaVersion`` and with ``maxTokens`` only."""

    name = "converse"
    converse = True

    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt:
        config = body.get("inferenceConfig") or {}
        if isinstance(config, Mapping) and "max_new_tokens" in config:
            raise _malformed("#/inferenceConfig: extraneous key [max_new_tokens] is not permitted")
        if invocation.batch and "toolConfig" in body:
            raise ModelInputError(BATCH_CONVERSE_TOOLS_MESSAGE)
        prompt = super().parse(body, invocation)
        schema = _converse_output_schema(body.get("outputConfig"), invocation)
        return dataclasses.replace(prompt, schema=schema) if schema is not None else prompt


def _prompt_string(
    body: Mapping[str, Any], invocation: Invocation, *, max_tokens: str, stop: str | None = None
) -> Prompt:
    """A body that carries one formatted prompt string (Llama, Mistral text completion)."""
    prompt = _required_text(body, "prompt")
    return Prompt(
        system="",
        text=prompt,
        max_tokens=_positive_int(body.get(max_tokens), max_tokens, 512),
        stop_sequences=_stops(body.get(stop), stop) if stop else (),
        prefill=_raw_prefill(prompt),
        schema=_response_format(body, invocation),
    )


class LlamaText(Family):
    name = "llama"

    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt:
        return _prompt_string(body, invocation, max_tokens="max_gen_len")

    def render(self, answer: Answer, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "generation": answer.text,
            "prompt_token_count": input_tokens,
            "generation_token_count": output_tokens,
            "stop_reason": "length" if answer.truncated else "stop",
        }


class TitanText(Family):
    name = "titan"

    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt:
        prompt = _required_text(body, "inputText")
        config = body.get("textGenerationConfig") or {}
        if not isinstance(config, Mapping):
            raise _malformed("#/textGenerationConfig: expected type: JSONObject")
        return Prompt(
            system="",
            text=prompt,
            max_tokens=_positive_int(config.get("maxTokenCount"), "textGenerationConfig/maxTokenCount", 512),
            stop_sequences=_stops(config.get("stopSequences"), "textGenerationConfig/stopSequences"),
            prefill=_raw_prefill(prompt),
        )

    def render(self, answer: Answer, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "inputTextTokenCount": input_tokens,
            "results": [
                {
                    "tokenCount": output_tokens,
                    "outputText": answer.text,
                    "completionReason": "LENGTH" if answer.truncated else "FINISH",
                }
            ],
        }


class MistralText(Family):
    """Mistral AI text completion (Mistral 7B, Mixtral 8x7B, Mistral Large / Small 24.02)."""

    name = "mistral-text"

    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt:
        return _prompt_string(body, invocation, max_tokens="max_tokens", stop="stop")

    def render(self, answer: Answer, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {"outputs": [{"text": answer.text, "stop_reason": "length" if answer.truncated else "stop"}]}


class MistralChat(Family):
    """Mistral AI chat completion (Mistral Large 24.07 and later; Large / Small 24.02 take it too)."""

    name = "mistral-chat"

    def parse(self, body: Mapping[str, Any], invocation: Invocation) -> Prompt:
        system, text, prefill = _messages(body, ("system", "user", "assistant", "tool"))
        return Prompt(
            system=system,
            text=text,
            max_tokens=_positive_int(body.get("max_tokens"), "max_tokens", 512),
            stop_sequences=_stops(body.get("stop"), "stop"),
            prefill=prefill,
            schema=_response_format(body, invocation),
            tool=self._tool(body, invocation),
        )

    @staticmethod
    def _tool(body: Mapping[str, Any], invocation: Invocation) -> Tool | None:
        tools = _tools_list(body, invocation)
        if tools is None:
            return None
        declared = []
        for i, entry in enumerate(tools):
            function = entry.get("function") if isinstance(entry, Mapping) else None
            if not isinstance(function, Mapping):
                raise _malformed(f"#/tools/{i}: required key [function] not found")
            strict = function.get("strict", entry.get("strict"))
            refusal = str(_malformed(f"#/tools/{i}/function: extraneous key [strict] is not permitted"))
            where = f"tools.{i}.function.parameters"
            declared.append(
                _declare(function.get("name"), function.get("parameters"), strict, where, invocation, refusal)
            )
        choice = body.get("tool_choice", "auto")
        if isinstance(choice, Mapping):  # {"type": "function", "function": {"name": …}}
            named = choice.get("function")
            return _chosen_tool(
                declared, "tool", named.get("name") if isinstance(named, Mapping) else None, "tool_choice"
            )
        return _chosen_tool(declared, choice, None, "tool_choice")

    def render(self, answer: Answer, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        stop_reason = "length" if answer.truncated else "stop"
        if answer.tool is not None:
            call_id = _short_id("", answer.text, 9)
            message = {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": call_id, "function": {"name": answer.tool.name, "arguments": answer.text}}
                ],
            }
            stop_reason = "tool_calls"
        return {"choices": [{"index": 0, "message": message, "stop_reason": stop_reason}]}


FAMILIES: Mapping[str, Family] = {
    f.name: f
    for f in (
        AnthropicMessages(),
        NovaMessages(),
        ConverseMessages(),
        LlamaText(),
        TitanText(),
        MistralText(),
        MistralChat(),
    )
}

# Mistral models by the bodies they take: text completion only, or both (the rest take chat completion only).
_MISTRAL_TEXT_ONLY = ("mistral.mistral-7b", "mistral.mixtral-8x7b")
_MISTRAL_TEXT_OR_CHAT = ("mistral.mistral-large-2402", "mistral.mistral-small-2402")


def _mistral_family(model_id: str | None, body: Any) -> str:
    """``mistral-text`` or ``mistral-chat`` for this model and body (a body of the wrong kind fails)."""
    base = base_model_id(model_id) if model_id else ""
    chat = isinstance(body, Mapping) and "messages" in body
    if base.startswith(_MISTRAL_TEXT_ONLY):
        return "mistral-text"
    if base.startswith(_MISTRAL_TEXT_OR_CHAT):
        return "mistral-chat" if chat else "mistral-text"
    return "mistral-chat"


def refuse_unknown_model(model_id: str, invocation_type: str | None = None) -> str | None:
    """The family a job or an invocation of ``model_id`` answers in (``None``: known only from the body, for
    custom-model, provisioned and application-profile ARNs); raises ModelInputError with the service's wording
    when the service would refuse the id: not in the catalogue, or not a text model (an embedding model)."""
    if is_opaque_model_arn(model_id):
        return family_for_model(model_id, invocation_type)
    model = resolve_model(model_id)
    family = family_for_model(model_id, invocation_type)
    if model is None or "TEXT" not in model.output_modalities or family is None:
        raise ModelInputError(INVALID_MODEL_MESSAGE)
    return family


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
    if base.startswith("mistral."):
        return "mistral"  # text or chat completion: see _mistral_family
    return None


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


def respond(family: str | None, body: Any, invocation: Invocation | None = None) -> Reply:
    """Answer ``body`` in ``family``'s format (guessing it from the body when ``None``)."""
    invocation = invocation or Invocation()
    name = family or family_from_body(body)
    if name is None:
        raise _malformed("#: the request body does not match any supported model family")
    if name == "mistral":
        name = _mistral_family(invocation.model_id, body)
    return FAMILIES[name].respond(body, invocation)


def respond_converse(
    request: Mapping[str, Any], latency_ms: int = 1, invocation: Invocation | None = None
) -> Reply:
    """The runtime Converse answer: the Converse body plus the ``metrics`` block the runtime API adds."""
    reply = FAMILIES["converse"].respond(request, invocation or Invocation())
    return Reply(
        {**reply.body, "metrics": {"latencyMs": latency_ms}}, reply.input_tokens, reply.output_tokens
    )
