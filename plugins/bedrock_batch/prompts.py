"""Prompt templates: a system part and a user part per name and version, as files under ``include/prompts/``.

``include/`` is the project's folder found by :func:`bedrock_batch.resources.include_path`.

Placeholders are ``{name}``; a row the template cannot render is quarantined by prepare, never fatal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bedrock_batch.errors import TemplateError, TemplateRenderError
from bedrock_batch.resources import include_path

TEMPLATE_PARTS = ("system", "user")

# Only {identifier} is a placeholder, so JSON examples such as {"summary": "..."} need no escaping;
# {{identifier}} writes a literal {identifier}.
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_]\w*)\}\}|\{([A-Za-z_]\w*)\}")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A placeholder that is the only content between <tag> and </tag> (whitespace aside) is delimited data.
_DELIMITED = re.compile(r"<([A-Za-z][\w-]*)>\s*\{([A-Za-z_]\w*)\}\s*</\1>")


@dataclass(frozen=True)
class Placeholder:
    """A ``{name}`` slot in a template part."""

    name: str


TemplatePiece = str | Placeholder


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed prompt template.

    :param name: template name, e.g. ``call_center_summary``.
    :param version: template version, e.g. ``v1``.
    :param system: the system part as literal text and placeholders.
    :param user: the user part as literal text and placeholders.
    :param delimiters: placeholder name → the tag around it (``transcript`` → ``transcript`` for
        ``<transcript>{transcript}</transcript>``); a value containing the closing tag gets it defused.
    """

    name: str
    version: str
    system: tuple[TemplatePiece, ...]
    user: tuple[TemplatePiece, ...]
    delimiters: Mapping[str, str]

    @property
    def label(self) -> str:
        """``name/version``, for messages."""
        return f"{self.name}/{self.version}"

    @property
    def fields(self) -> frozenset[str]:
        """Every placeholder name used by either part."""
        return frozenset(piece.name for piece in (*self.system, *self.user) if isinstance(piece, Placeholder))

    def field_value(self, name: str, value: Any) -> str:
        """The text a row value becomes inside the prompt.

        A value placed between ``<tag>`` and ``</tag>`` cannot close the tag early: ``</tag>`` inside it
        becomes ``&lt;/tag>``, so a transcript cannot pretend its data has ended and instructions begin.

        :param name: the placeholder name.
        :param value: the row's value; non-strings are rendered with ``str()``.
        """
        text = value if type(value) is str else str(value)
        # A one-character search is a memchr; most transcripts have no "<" and skip the regex entirely.
        if "<" in text and name in self.delimiters:
            tag = re.escape(self.delimiters[name])
            text = re.sub(rf"</(\s*{tag}\s*)>", r"&lt;/\1>", text, flags=re.IGNORECASE)
        return text

    def render(self, values: Mapping[str, Any]) -> tuple[str, str]:
        """The ``(system, user)`` prompt for one row.

        :param values: placeholder name → value; ``None`` counts as missing.
        :raises TemplateRenderError: when a placeholder has no value.
        """
        missing = sorted(name for name in self.fields if values.get(name) is None)
        if missing:
            raise TemplateRenderError(self.label, missing)
        prepared = {name: self.field_value(name, values[name]) for name in self.fields}
        return _join(self.system, prepared), _join(self.user, prepared)


def _join(pieces: tuple[TemplatePiece, ...], values: Mapping[str, str]) -> str:
    return "".join(values[piece.name] if isinstance(piece, Placeholder) else piece for piece in pieces)


def parse_template_text(text: str) -> tuple[TemplatePiece, ...]:
    """Split template text into literal text and :class:`Placeholder` pieces.

    :param text: the content of a template part file.
    """
    pieces: list[TemplatePiece] = []
    literal: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal.append(text[position : match.start()])
        escaped, name = match.groups()
        if escaped is not None:
            literal.append("{" + escaped + "}")
        else:
            if "".join(literal):
                pieces.append("".join(literal))
            literal = []
            pieces.append(Placeholder(name))
        position = match.end()
    literal.append(text[position:])
    if "".join(literal):
        pieces.append("".join(literal))
    return tuple(pieces)


def load_template(name: str, version: str, *, root: str | Path | None = None) -> PromptTemplate:
    """Load ``<root>/<name>/<version>/system.txt`` and ``user.txt`` (trailing newlines dropped).

    :param name: template name (a directory under ``root``).
    :param version: template version (a directory under the name), e.g. ``v1``.
    :param root: directory holding the templates; default ``include/prompts`` (see
        :func:`bedrock_batch.resources.include_search_path`).
    :raises TemplateError: when the name or version is malformed, or a part file is missing or unreadable.
    :raises ConfigError: without ``root``, when no ``include/prompts`` folder is found.
    """
    for what, value in (("name", name), ("version", version)):
        if not _SAFE_NAME.match(value):
            raise TemplateError(
                f"prompt template {what} {value!r} must be letters, digits, '_', '-' or '.', not a path"
            )
    directory = Path(root) if root is not None else include_path("prompts")
    folder = directory / name / version
    texts: dict[str, str] = {}
    for part in TEMPLATE_PARTS:
        path = folder / f"{part}.txt"
        try:
            # Editors end files with a newline; it is not part of the prompt.
            texts[part] = path.read_text(encoding="utf-8").rstrip("\n")
        except FileNotFoundError:
            raise TemplateError(
                f"prompt template {name}/{version} has no {part}.txt (looked for {path}); "
                f"{_available(directory, name)}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"prompt template file {path} cannot be read: {exc}") from exc
    user = parse_template_text(texts["user"])
    if not any(isinstance(piece, Placeholder) for piece in user):
        raise TemplateError(
            f"prompt template {name}/{version}: user.txt has no {{placeholder}} for the row's text"
        )
    delimiters = {field: tag for tag, field in _DELIMITED.findall(texts["system"] + texts["user"])}
    return PromptTemplate(
        name=name,
        version=version,
        system=parse_template_text(texts["system"]),
        user=user,
        delimiters=delimiters,
    )


def _available(root: Path, name: str) -> str:
    if (root / name).is_dir():
        versions = sorted(p.name for p in (root / name).iterdir() if p.is_dir())
        return f"versions of {name!r}: {versions}"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return f"templates in {root}: {names}"
