"""JSON a request may carry: UTF-8, finite numbers, strings without NUL or lone surrogates, bounded depth.

Python's `json` accepts NaN, Infinity, 1e400 (as inf) and "\\ud800"; neither PostgreSQL's jsonb nor
UTF-8 can hold them, so they are refused where the body enters, with the path of the bad value.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_JSON_DEPTH = 100


class JSONValueError(ValueError):
    """A body or value that cannot be stored; `field` is its dotted path ("" for the whole body)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class _Constant:
    """NaN / Infinity / -Infinity as parsed: kept so the walk can name where they were."""

    def __init__(self, text: str) -> None:
        self.text = text


def string_problem(text: str) -> str | None:
    """Why this string cannot be stored (NUL, lone surrogate), or None."""
    if "\x00" in text:
        return "must not contain NUL (\\u0000) characters"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain lone surrogates (not valid Unicode)"
    return None


def _path(parts: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in parts)


def check_json_value(value: Any, at: tuple[Any, ...] = ()) -> None:
    """`JSONValueError` naming the first value that cannot be stored, walking iteratively (no recursion)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, at)]
    while stack:
        item, path = stack.pop()
        if len(path) - len(at) > MAX_JSON_DEPTH:
            raise JSONValueError(f"{_path(path) or 'body'}: nested deeper than {MAX_JSON_DEPTH} levels",
                                 _path(path))
        if isinstance(item, str):
            problem = string_problem(item)
            if problem:
                raise JSONValueError(f"{_path(path) or 'body'}: strings {problem}", _path(path))
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JSONValueError(f"{_path(path) or 'body'}: numbers must be finite (JSON has no NaN or "
                                     "Infinity; 1e400 overflows)", _path(path))
        elif isinstance(item, _Constant):
            raise JSONValueError(f"{_path(path) or 'body'}: {item.text} is not JSON (numbers must be finite)",
                                 _path(path))
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = string_problem(key)
                if problem:
                    raise JSONValueError(f"{_path((*path, key))}: keys {problem}", _path(path))
                stack.append((child, (*path, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, (*path, index)) for index, child in enumerate(item))


def loads_checked(raw: bytes) -> Any:
    """The JSON document in `raw` once it passed `check_json_value`; `JSONValueError` otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONValueError(f"request body is not UTF-8: invalid byte at position {exc.start}") from None
    try:
        value = json.loads(text, parse_constant=_Constant)
    except RecursionError:
        raise JSONValueError(f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise JSONValueError(f"request body is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise JSONValueError(f"request body is not valid JSON: {exc}") from None
    check_json_value(value)
    return value
