"""What no JSON body may carry, whatever the endpoint: checked before any view runs.

- JSON nested deeper than ``MAX_DEPTH`` (a parser's recursion is not a resource to
  hand out) or that is not JSON at all: 400.
- Text with control characters (other than tab and line breaks), NUL, or lone
  surrogates, which no name, address or note needs and which some databases refuse
  (PostgreSQL has no NUL in text): 422.
- Markup (``<script>``, ``<img onerror=...>``, ``<!-- -->``): no field of this API
  holds HTML, so it is refused rather than stored for some page to render: 422.

The answer is a problem naming each offending field by its path (``lines.0.note``),
and nothing is written. Quotes, semicolons and other characters SQL or shell
injections use are ordinary text in names ("St. Mary's; Wuchang branch"): they are
accepted and stored as text, and every query binds its parameters.

Password and token fields are exempt: a password may be any text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask, request

from shared.problems import Problem

MAX_DEPTH = 32
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MARKUP = re.compile(r"<[a-zA-Z!/?]")  # how a browser starts a tag or comment
_EXEMPT_KEYS = ("password", "token", "secret")


def _exempt(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _EXEMPT_KEYS)


def _depth_ok(text: str) -> bool:
    """Is the nesting of ``text`` (JSON) at most MAX_DEPTH, counting outside strings?"""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def problems_in(value: Any, path: str = "") -> dict[str, list[str]]:
    """The refused text in a parsed JSON document, by field path."""
    found: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if _exempt(str(key)):
                continue
            found.update(problems_in(item, name))
            if isinstance(key, str) and (_CONTROL.search(key) or _SURROGATE.search(key)):
                found.setdefault(name or "_schema", []).append(
                    "A field name holds control characters."
                )
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(problems_in(item, f"{path}.{index}" if path else str(index)))
    elif isinstance(value, str):
        field = path or "_schema"
        if _SURROGATE.search(value):
            found.setdefault(field, []).append(
                "Text must be valid Unicode; this has an unpaired surrogate."
            )
        if _CONTROL.search(value):
            found.setdefault(field, []).append(
                "Text may not hold control characters (other than tabs and line breaks)."
            )
        if _MARKUP.search(value):
            found.setdefault(field, []).append(
                "Text may not hold HTML or other markup; write it as plain text."
            )
    return found


def install_input_guard(app: Flask) -> None:
    @app.before_request
    def _guard_json_body() -> None:
        if request.method not in ("POST", "PUT", "PATCH") or not request.is_json:
            return
        raw = request.get_data(cache=True)
        if not raw:
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(
                400, "The body is not UTF-8; send JSON in UTF-8.", slug="bad-encoding"
            ) from None
        if not _depth_ok(text):
            raise Problem(
                400,
                f"The JSON is nested deeper than {MAX_DEPTH} levels.",
                slug="json-too-deep",
            )
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            raise Problem(400, "The body is not valid JSON.", slug="bad-json") from None
        found = problems_in(document)
        if found:
            raise Problem(
                422,
                "Some text was refused: " + ", ".join(sorted(found)) + ".",
                slug="refused-text",
                errors=found,
            )
