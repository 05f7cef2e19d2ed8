"""Checking what a caller passes before anything is sent: pydantic errors become `InvalidRequestError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from ._errors import InvalidRequestError

__all__ = ["clean_options", "invalid_request", "require_id", "validate"]

M = TypeVar("M", bound=BaseModel)


def invalid_request(exc: ValidationError) -> InvalidRequestError:
    """The first error of `exc` as the runtime would word it, `.field` naming the input."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "no such option"
    message = f"invalid {field}: {reason}" if field else reason
    details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    body = {"error": "invalid_request", "message": message, "field": field, "details": details}
    return InvalidRequestError(message, field=field, body=body)


def validate(model: type[M], data: Any) -> M:
    """`model.model_validate`, raising `InvalidRequestError` (with `.field`) instead of pydantic's error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def clean_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword options without those left as None ("not set"); a single tag becomes a list."""
    cleaned = {name: value for name, value in options.items() if value is not None}
    if isinstance(cleaned.get("tags"), str):
        cleaned["tags"] = [cleaned["tags"]]
    return cleaned


def require_id(value: str, name: str) -> str:
    """`value` quoted as one path segment; `InvalidRequestError` naming `name` when it is empty."""
    # An empty id would silently address another endpoint (`/runs/` lists runs).
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{name} must be a non-empty string, got {value!r}", field=name)
    return quote(value, safe="")
