"""Failure answers shaped exactly like a kube-apiserver's ``metav1.Status`` bodies.

Clients (kopf, the official client, kubectl) branch on ``reason``, ``code`` and
``details.causes[].field``; tests of the operator assert on messages. So every failure the
emulator produces is built here, from the same templates the apiserver uses
(``k8s.io/apimachinery/pkg/api/errors`` and ``.../util/validation/field``), instead of ad hoc
strings scattered through the handlers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# field.ErrorType -> the words it prints (field.ErrorType.String()).
_TYPE_WORDS = {
    "FieldValueNotFound": "Not found",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
    "InternalError": "Internal error",
    "FieldValueTypeInvalid": "Invalid value",
}
# Types whose body never shows the offending value (field.Error.ErrorBody).
_VALUELESS = {"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong", "InternalError"}


class _Omit:
    """field.omitValue: the error shows no value at all."""


OMIT = _Omit()


class _Nil:
    """A Go nil value: field.Error prints it as a bare ``null``."""


NIL = _Nil()


def go_float(x: float) -> str:
    """Go's ``%v`` of a float64 (``3`` not ``3.0``, ``1e+21`` for large ones)."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e21:
        return str(int(x))
    text = repr(x)
    if "e" in text:
        mantissa, exp = text.split("e")
        sign = "-" if exp.startswith("-") else "+"
        text = f"{mantissa}e{sign}{abs(int(exp)):02d}"
    return text


def go_quote(s: str) -> str:
    """Go's ``%q`` / strconv.Quote for the strings that appear in messages."""
    return json.dumps(s, ensure_ascii=False).replace("\\u007f", "\\x7f")


def go_value(value: Any) -> str:
    """How field.Error prints a bad value: simple types plainly, strings quoted, the rest %#v."""
    if value is None:
        return go_quote("null")
    if value is NIL:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{go_quote(str(k))}:{_go_sharp(v)}" for k, v in value.items())
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(_go_sharp(v) for v in value) + "}"
    return str(value)


def _go_sharp(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return go_value(value)
    if value is None:
        return "interface {}(nil)"
    return go_value(value)


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: its type (cause reason), field path, bad value and detail."""

    type: str
    field: str
    value: Any = ""
    detail: str = ""

    def body(self) -> str:
        if self.type in _VALUELESS or self.value is OMIT:
            text = _TYPE_WORDS[self.type]
        else:
            text = f"{_TYPE_WORDS[self.type]}: {go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def message(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, Any]:
        return {"reason": self.type, "message": self.body(), "field": self.field}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", field, "", detail)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", field, value, detail)


def type_invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueTypeInvalid", field, value, detail)


def not_supported(field: str, value: Any, valid: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(go_quote(v) for v in valid) if valid else ""
    return FieldError("FieldValueNotSupported", field, value, detail)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", field, "", detail)


def too_long(field: str, value: Any, max_length: int) -> FieldError:
    detail = f"may not be more than {max_length} bytes" if max_length >= 0 else "value is too long"
    return FieldError("FieldValueTooLong", field, value, detail)


def too_many(field: str, actual: int, maximum: int) -> FieldError:
    detail = f"must have at most {maximum} items" if maximum >= 0 else "has too many items"
    return FieldError("FieldValueTooMany", field, actual if actual >= 0 else OMIT, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError("FieldValueDuplicate", field, value, "")


class ApiError(Exception):
    """A failure answer: raising it anywhere in a handler sends ``status`` with ``code``."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


@dataclass(frozen=True)
class Target:
    """Who an error is about: the group/resource/kind triple the apiserver puts in messages."""

    group: str
    resource: str
    kind: str

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def details(self, name: str, **extra: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"name": name} if name else {}  # StatusDetails.Name is omitempty
        if self.group:
            d["group"] = self.group
        d["kind"] = self.resource
        d.update(extra)
        return d


def not_found(t: Target, name: str) -> ApiError:
    return ApiError(404, "NotFound", f"{t.qualified_resource} {go_quote(name)} not found", t.details(name))


def already_exists(t: Target, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f"{t.qualified_resource} {go_quote(name)} already exists", t.details(name))


def conflict(t: Target, name: str, why: str) -> ApiError:
    return ApiError(
        409, "Conflict", f"Operation cannot be fulfilled on {t.qualified_resource} {go_quote(name)}: {why}", t.details(name)
    )


MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


def invalid_object(t: Target, name: str, errors: list[FieldError]) -> ApiError:
    """errors.NewInvalid: causes in order, message aggregated with duplicates dropped."""
    seen: list[str] = []
    for e in errors:
        m = e.message()
        if m not in seen:
            seen.append(m)
    if not seen:
        message = f"{t.qualified_kind} {go_quote(name)} is invalid"
    elif len(seen) == 1:
        message = f"{t.qualified_kind} {go_quote(name)} is invalid: {seen[0]}"
    else:
        message = f"{t.qualified_kind} {go_quote(name)} is invalid: [{', '.join(seen)}]"
    details: dict[str, Any] = {"name": name} if name else {}  # StatusDetails.Name is omitempty
    if t.group:
        details["group"] = t.group
    details["kind"] = t.kind
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, "Invalid", message, details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: " + ", ".join(accepted),
        {},
    )


def forbidden_error(t: Target, name: str, why: str, causes: list[dict[str, Any]] | None = None) -> ApiError:
    subject = f"{t.qualified_resource} {go_quote(name)}" if name else t.qualified_resource
    details = t.details(name)
    if causes:
        details["causes"] = causes
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {why}", details)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]})
