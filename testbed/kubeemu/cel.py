"""``x-kubernetes-validations`` rules compiled and evaluated with celpy.

Kubernetes evaluates each rule with ``self`` bound to the value at the schema node that holds
it, typed by the schema (``number`` is a double even when the JSON has ``3``; a ``date-time``
string is a timestamp), and ``oldSelf`` bound to the same node of the stored object on updates
(transition rules are skipped when there is no old value). Rules are compiled once per CRD so
a request pays only for evaluation.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy import celtypes

_ENV = celpy.Environment()
_OLDSELF_RE = re.compile(r"\boldSelf\b")


def _s(x: Any) -> celtypes.StringType:
    return celtypes.StringType(x)


# A few functions of the Kubernetes CEL string/list libraries that celpy lacks.
_FUNCTIONS: dict[str, Any] = {
    "lowerAscii": lambda s: _s(str(s).lower()),
    "upperAscii": lambda s: _s(str(s).upper()),
    "trim": lambda s: _s(str(s).strip()),
    "replace": lambda s, a, b, *n: _s(str(s).replace(str(a), str(b), *(int(x) for x in n))),
    "split": lambda s, sep, *n: celtypes.ListType([_s(p) for p in str(s).split(str(sep), *((int(n[0]) - 1,) if n and int(n[0]) >= 0 else ()))]),
    "join": lambda items, *sep: _s((str(sep[0]) if sep else "").join(str(i) for i in items)),
    "indexOf": lambda s, sub: celtypes.IntType(s.index(sub) if isinstance(s, celtypes.ListType) and sub in s else (str(s).find(str(sub)) if not isinstance(s, celtypes.ListType) else -1)),
    "lastIndexOf": lambda s, sub: celtypes.IntType(str(s).rfind(str(sub))),
    "substring": lambda s, a, *b: _s(str(s)[int(a) : (int(b[0]) if b else None)]),
    "isSorted": lambda items: celtypes.BoolType(list(items) == sorted(items)),
    "sum": lambda items: sum(items[1:], items[0]) if items else celtypes.IntType(0),
}


class CelCompileError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    """One compiled rule with what the error needs (message, reason, fieldPath)."""

    rule: str
    message: str
    message_expression: str
    reason: str
    field_path: str
    optional_old_self: bool
    uses_old_self: bool
    program: Any = field(compare=False, repr=False)
    message_program: Any = field(compare=False, repr=False, default=None)


def compile_rules(raw: list[dict[str, Any]]) -> tuple[Rule, ...]:
    rules = []
    for spec in raw:
        text = spec.get("rule", "")
        try:
            program = _ENV.program(_ENV.compile(text), functions=_FUNCTIONS)
            mexpr = spec.get("messageExpression", "")
            mprog = _ENV.program(_ENV.compile(mexpr), functions=_FUNCTIONS) if mexpr else None
        except Exception as e:  # celpy raises its parser's own error types
            raise CelCompileError(f"compilation failed: {text!r}: {str(e).strip()}") from None
        rules.append(
            Rule(
                rule=text,
                message=spec.get("message", ""),
                message_expression=spec.get("messageExpression", ""),
                reason=spec.get("reason", "FieldValueInvalid"),
                field_path=spec.get("fieldPath", ""),
                optional_old_self=bool(spec.get("optionalOldSelf", False)),
                uses_old_self=bool(_OLDSELF_RE.search(text)),
                program=program,
                message_program=mprog,
            )
        )
    return tuple(rules)


def to_cel(value: Any, schema: dict[str, Any] | None) -> Any:
    """Convert a JSON value to celpy types the way the schema types it."""
    schema = schema or {}
    if value is None:
        return None
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields") and not t:
        return celpy.json_to_cel(value)
    if t == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.IntType(int(value))
    if t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.DoubleType(float(value))
    if t == "string" and isinstance(value, str):
        fmt = schema.get("format")
        try:
            if fmt == "date-time":
                return celtypes.TimestampType(value)
            if fmt == "duration":
                return celtypes.DurationType(value)
            if fmt == "byte":
                return celtypes.BytesType(base64.b64decode(value))
        except Exception:
            pass
        return celtypes.StringType(value)
    if t == "boolean" and isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        out = {}
        for k, v in value.items():
            sub = props.get(k) if k in props else (addl if isinstance(addl, dict) else None)
            out[celtypes.StringType(k)] = to_cel(v, sub) if sub is not None else celpy.json_to_cel(v)
        return celtypes.MapType(out)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        return celtypes.ListType([to_cel(v, items) for v in value])
    return celpy.json_to_cel(value)


@dataclass(frozen=True)
class Outcome:
    """Result of one rule: passed, or failed with a message, or failed to evaluate."""

    ok: bool
    message: str = ""
    error: bool = False
    from_expression: bool = False  # the message is messageExpression's


def evaluate(rule: Rule, self_value: Any, old_value: Any, *, has_old: bool) -> Outcome | None:
    """Evaluate ``rule``; None when it does not apply (transition rule without old value)."""
    activation: dict[str, Any] = {"self": self_value}
    if rule.uses_old_self:
        if not has_old and not rule.optional_old_self:
            return None
        activation["oldSelf"] = old_value if has_old else None
    try:
        result = rule.program.evaluate(activation)
    except Exception as e:
        return Outcome(False, f"{_eval_error_text(e)} evaluating rule: {rule.rule.strip()}", error=True)
    if isinstance(result, Exception):
        return Outcome(False, f"{_eval_error_text(result)} evaluating rule: {rule.rule.strip()}", error=True)
    if result is True or (isinstance(result, celtypes.BoolType) and bool(result)):
        return Outcome(True)
    if rule.message_program is not None:
        try:
            msg = rule.message_program.evaluate(activation)
            if isinstance(msg, (str, celtypes.StringType)) and str(msg).strip() and "\n" not in str(msg):
                return Outcome(False, str(msg), from_expression=True)
        except Exception:
            pass
    if rule.message:
        return Outcome(False, rule.message)
    return Outcome(False, f"failed rule: {rule.rule.strip()}")


def _eval_error_text(e: BaseException) -> str:
    args = getattr(e, "args", ())
    text = str(args[0]) if args else str(e)
    m = re.match(r"no such member in mapping: '(.*)'", text)
    if m:
        text = f"no such key: {m.group(1)}"
    return text
