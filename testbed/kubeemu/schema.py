"""Structural-schema behaviour of a CRD version: pruning, defaulting, validation, CEL rules.

The order is the apiserver's: unknown fields are pruned (and reported, for ``fieldValidation``),
non-nullable nulls are dropped or defaulted, defaults are applied top-down, then the OpenAPI
value validations run with kube-openapi's messages, then ``x-kubernetes-validations``.
Messages and field paths (``spec.items[0].name``, ``spec.labels.key``) follow
``apiextensions-apiserver/pkg/apiserver/validation`` so a test written against the emulator
reads the same as one written against a cluster.
"""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from controller.gpuvm import json_type

from . import cel
from .errors import (
    NIL,
    OMIT,
    FieldError,
    duplicate,
    forbidden,
    go_float,
    invalid,
    not_supported,
    required,
    too_long,
    too_many,
    type_invalid,
)

OBJECT_META_FIELDS = frozenset(
    {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
        "annotations", "ownerReferences", "finalizers", "managedFields",
    }
)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@dataclass
class StructuralSchema:
    """One served version's ``openAPIV3Schema`` with its CEL rules compiled up front."""

    raw: dict[str, Any]
    _rules: dict[int, tuple[cel.Rule, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, raw: dict[str, Any]) -> "StructuralSchema":
        """Compile every rule; raises cel.CelCompileError naming the schema path."""
        s = cls(raw=raw)

        def walk(node: Any, path: str) -> None:
            if not isinstance(node, dict):
                return
            if node.get("x-kubernetes-validations"):
                try:
                    s._rules[id(node)] = cel.compile_rules(node["x-kubernetes-validations"])
                except cel.CelCompileError as e:
                    raise cel.CelCompileError(f"{path}.x-kubernetes-validations: {e}") from None
            for k, sub in (node.get("properties") or {}).items():
                walk(sub, f"{path}.properties[{k}]")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}.additionalProperties")
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{path}.items")
            for comb in ("allOf", "anyOf", "oneOf"):
                for i, sub in enumerate(node.get(comb) or []):
                    walk(sub, f"{path}.{comb}[{i}]")

        walk(raw, "openAPIV3Schema")
        return s

    # ---------------------------------------------------------------- pruning
    def prune(self, obj: dict[str, Any]) -> list[str]:
        """Drop fields the schema does not declare, in place; return their paths."""
        pruned: list[str] = []
        for key in list(obj):
            if key in ("apiVersion", "kind"):
                continue
            if key == "metadata":
                meta = obj["metadata"]
                if isinstance(meta, dict):
                    for mk in list(meta):
                        if mk not in OBJECT_META_FIELDS:
                            del meta[mk]
                            pruned.append(f"metadata.{mk}")
                continue
            props = self.raw.get("properties") or {}
            if key in props:
                _prune(obj[key], props[key], key, pruned)
            elif not self.raw.get("x-kubernetes-preserve-unknown-fields"):
                del obj[key]
                pruned.append(key)
        return pruned

    # -------------------------------------------------------------- defaulting
    def default(self, obj: dict[str, Any]) -> None:
        """Structural defaulting in place (also drops non-nullable nulls without default)."""
        props = self.raw.get("properties") or {}
        for key in list(obj):
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if key in props:
                if obj[key] is None and not props[key].get("nullable"):
                    if "default" in props[key]:
                        obj[key] = copy.deepcopy(props[key]["default"])
                    else:
                        del obj[key]
                        continue
                _default(obj[key], props[key])
        for key, sub in props.items():
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
                _default(obj[key], sub)

    # -------------------------------------------------------------- validation
    def validate(self, obj: dict[str, Any], *, only: str | None = None) -> list[FieldError]:
        """OpenAPI value validation of everything but apiVersion/kind/metadata.

        ``only`` restricts validation to one top-level property (``status`` on /status writes
        still validates the whole object in the apiserver; callers pass None for that).
        """
        errors: list[FieldError] = []
        props = self.raw.get("properties") or {}
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        for key in sorted(props):
            if key in ("apiVersion", "kind", "metadata") or (only and key != only):
                continue
            if key in body:
                _validate(body[key], props[key], key, errors)
        for key in self.raw.get("required") or []:
            if key not in ("apiVersion", "kind", "metadata") and key not in obj:
                errors.append(required(key))
        for key in sorted(body):
            if key not in props and isinstance(self.raw.get("additionalProperties"), dict):
                _validate(body[key], self.raw["additionalProperties"], key, errors)
        return errors

    @property
    def has_rules(self) -> bool:
        """Whether any node carries x-kubernetes-validations (the apiserver builds a CEL validator only then)."""
        return bool(self._rules)

    def validate_rules(self, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
        """Evaluate x-kubernetes-validations everywhere, with oldSelf correlated by field."""
        errors: list[FieldError] = []
        root = {k: v for k, v in obj.items() if k != "metadata"}
        root["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k in ("name", "generateName")}
        old_root = None
        if old is not None:
            old_root = {k: v for k, v in old.items() if k != "metadata"}
            old_root["metadata"] = {k: v for k, v in (old.get("metadata") or {}).items() if k in ("name", "generateName")}
        self._rules_at(root, old_root, old is not None, self.raw, "", errors)
        return errors

    def _rules_at(self, value: Any, old: Any, has_old: bool, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
        if value is None or not isinstance(schema, dict):
            return
        rules = self._rules.get(id(schema))
        if rules:
            self_v = cel.to_cel(value, schema)
            old_v = cel.to_cel(old, schema) if has_old else None
            for rule in rules:
                outcome = cel.evaluate(rule, self_v, old_v, has_old=has_old)
                if outcome is None or outcome.ok:
                    continue
                _cel_failure(rule, outcome, schema, path, errors, value)
        if isinstance(value, dict):
            props = schema.get("properties") or {}
            addl = schema.get("additionalProperties")
            for k, v in value.items():
                sub = props.get(k) if k in props else (addl if isinstance(addl, dict) else None)
                if sub is None or (not path and k == "metadata"):
                    continue
                o_has = has_old and isinstance(old, dict) and k in old
                self._rules_at(v, old.get(k) if o_has else None, o_has, sub, _join(path, k), errors)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            items = schema["items"]
            list_type = schema.get("x-kubernetes-list-type")
            keys = schema.get("x-kubernetes-list-map-keys") or []
            old_by_key: dict[str, Any] = {}
            if has_old and isinstance(old, list) and list_type in ("map", "set"):
                for o in old:
                    old_by_key[_list_key(o, list_type, keys)] = o
            for i, v in enumerate(value):
                k = _list_key(v, list_type, keys) if list_type in ("map", "set") else None
                o_has = k is not None and k in old_by_key
                self._rules_at(v, old_by_key.get(k) if o_has else None, o_has, items, f"{path}[{i}]", errors)


def _list_key(item: Any, list_type: str | None, keys: list[str]) -> str:
    if list_type == "map" and isinstance(item, dict):
        return json.dumps([item.get(k) for k in keys], sort_keys=True)
    return json.dumps(item, sort_keys=True)


def _cel_failure(rule: cel.Rule, outcome: cel.Outcome, schema: dict[str, Any], path: str, errors: list[FieldError],
                 value: Any) -> None:
    type_name = schema.get("type", "")
    if outcome.error:
        errors.append(invalid(path, type_name, outcome.message))
        return
    # v1.36 (fieldErrorForReason): the value of self, except for objects and lists, and except when
    # the message came from messageExpression (expected to embed the value if it wants it).
    shown = OMIT if isinstance(value, (dict, list)) or outcome.from_expression else value
    where = path
    if rule.field_path:
        where = _join(path, rule.field_path.lstrip("."))
    if rule.reason == "FieldValueForbidden":
        errors.append(forbidden(where, outcome.message))
    elif rule.reason == "FieldValueRequired":
        errors.append(required(where, outcome.message))
    elif rule.reason == "FieldValueDuplicate":
        errors.append(duplicate(where, shown))
    else:
        errors.append(invalid(where, shown, outcome.message))


def _prune(value: Any, schema: dict[str, Any], path: str, pruned: list[str]) -> None:
    if isinstance(value, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        for key in list(value):
            if props is not None and key in props:
                _prune(value[key], props[key], _join(path, key), pruned)
            elif isinstance(addl, dict):
                _prune(value[key], addl, _join(path, key), pruned)
            elif addl is True or preserve:
                continue
            elif embedded and key in ("apiVersion", "kind", "metadata"):
                continue
            else:
                del value[key]
                pruned.append(_join(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _prune(item, schema["items"], f"{path}[{i}]", pruned)


def _default(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key) if key in props else (addl if isinstance(addl, dict) else None)
            if sub is None:
                continue
            if value[key] is None and not sub.get("nullable"):
                if "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                elif key in props:
                    del value[key]
                    continue
                else:
                    continue
            _default(value[key], sub)
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
                _default(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(item, schema["items"])


def _type_ok(value: Any, schema: dict[str, Any], path: str, errors: list[FieldError]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        types = ["integer", "string"]
    elif schema.get("type"):
        types = [schema["type"]]
    else:
        return True
    actual = json_type(value)
    if value is None:
        if schema.get("nullable"):
            return True
        errors.append(type_invalid(path, "null", f"{path} in body must be of type {','.join(types)}: \"null\""))
        return False
    if actual in types:
        return True
    if actual == "number" and "integer" in types and float(value).is_integer():
        return True
    if actual == "integer" and "number" in types:
        return True
    errors.append(type_invalid(path, actual, f"{path} in body must be of type {','.join(types)}: {json.dumps(actual)}"))
    return False


def _validate(value: Any, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    if not _type_ok(value, schema, path, errors) or value is None:
        return
    for sub in schema.get("allOf") or []:
        _validate(value, sub, path, errors)
    if schema.get("anyOf") and not any(_valid(value, s, path) for s in schema["anyOf"]):
        errors.append(invalid(path, "", f"{path} in body must validate at least one schema (anyOf)"))
    if schema.get("oneOf") and sum(_valid(value, s, path) for s in schema["oneOf"]) != 1:
        errors.append(invalid(path, "", f"{path} in body must validate one and only one schema (oneOf)"))
    if isinstance(schema.get("not"), dict) and _valid(value, schema["not"], path):
        errors.append(invalid(path, "", f"{path} in body must not validate the schema (not)"))
    if isinstance(value, str):
        _validate_string(value, schema, path, errors)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _validate_number(value, schema, path, errors)
    if "enum" in schema and not any(_json_eq(value, e) for e in schema["enum"]):
        allowed = [e if isinstance(e, str) else json.dumps(e, separators=(",", ":")) for e in schema["enum"]]
        errors.append(not_supported(path, value, allowed))
    if isinstance(value, list):
        _validate_array(value, schema, path, errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, errors)


def _valid(value: Any, schema: dict[str, Any], path: str) -> bool:
    errs: list[FieldError] = []
    _validate(value, schema, path, errs)
    return not errs


def _json_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _validate_string(value: str, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    # kube-openapi's string validator stops at its first failure (maxLength, minLength, pattern);
    # format is a validator of its own and is checked as well.
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(too_long(path, value, int(schema["maxLength"])))
    elif "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(invalid(path, value, f"{path} in body should be at least {schema['minLength']} chars long"))
    elif "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(invalid(path, value, f"{path} in body should match '{schema['pattern']}'"))
    fmt = schema.get("format")
    if fmt and schema.get("type") == "string" and not _format_ok(fmt, value):
        errors.append(type_invalid(path, value, f"{path} in body must be of type {fmt}: {json.dumps(value)}"))


def _validate_number(value: float, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    def num(x: Any) -> str:
        return go_float(float(x))

    if "maximum" in schema:
        mx = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= mx:
            errors.append(invalid(path, value, f"{path} in body should be less than {num(mx)}"))
        elif value > mx:
            errors.append(invalid(path, value, f"{path} in body should be less than or equal to {num(mx)}"))
    if "minimum" in schema:
        mn = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= mn:
            errors.append(invalid(path, value, f"{path} in body should be greater than {num(mn)}"))
        elif value < mn:
            errors.append(invalid(path, value, f"{path} in body should be greater than or equal to {num(mn)}"))
    if schema.get("multipleOf"):
        q = value / schema["multipleOf"]
        if abs(q - round(q)) > 1e-9:
            errors.append(invalid(path, value, f"{path} in body should be a multiple of {num(schema['multipleOf'])}"))


def _validate_array(value: list[Any], schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", errors)
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(invalid(path, len(value), f"{path} in body should have at least {schema['minItems']} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(too_many(path, len(value), int(schema["maxItems"])))
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: set[str] = set()
        for i, item in enumerate(value):
            k = json.dumps(item, sort_keys=True)
            if k in seen:
                errors.append(duplicate(f"{path}[{i}]", item))
            seen.add(k)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            k = json.dumps([item.get(x) for x in keys])
            if k in seen:
                errors.append(duplicate(f"{path}[{i}]", {x: item.get(x) for x in keys if x in item}))
            seen.add(k)


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    n = len(value)
    if "minProperties" in schema and n < schema["minProperties"]:
        errors.append(invalid(path, n, f"{path} in body should have at least {schema['minProperties']} properties"))
        return
    if "maxProperties" in schema and n > schema["maxProperties"]:
        errors.append(too_many(path, n, int(schema["maxProperties"])))
        return
    props = schema.get("properties") or {}
    addl = schema.get("additionalProperties")
    for key in sorted(value):
        if key in props:
            _validate(value[key], props[key], _join(path, key), errors)
        elif isinstance(addl, dict):
            _validate(value[key], addl, _join(path, key), errors)
        elif addl is False and not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(invalid(path, key, f"{path}.{key} in body is a forbidden property"))
    for key in schema.get("required") or []:
        if key not in value:
            errors.append(required(_join(path, key)))
    if schema.get("x-kubernetes-embedded-resource"):
        for key in ("apiVersion", "kind"):
            if not value.get(key):
                errors.append(required(_join(path, key), "must not be empty"))
        if "metadata" in value and not isinstance(value["metadata"], dict):
            errors.append(type_invalid(_join(path, "metadata"), json_type(value["metadata"]), "must be an object"))


_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DATETIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")
_HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,62})?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,62})?)*\.?$")
_MAC_RE = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
_DURATION_RE = re.compile(r"^(\s*[-+]?\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|h|d|w)\s*)+$")
_UUID_RE = {
    "uuid": re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.I),
    "uuid3": re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.I),
    "uuid4": re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$", re.I),
    "uuid5": re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$", re.I),
}


def _format_ok(fmt: str, value: str) -> bool:
    """The formats the apiextensions apiserver checks; unknown formats are not checked."""
    try:
        if fmt in ("date-time", "datetime"):
            m = _DATETIME_RE.match(value)
            if not m:
                return False
            datetime.date(int(m[1]), int(m[2]), int(m[3]))
            return int(m[4]) < 24 and int(m[5]) < 60 and int(m[6]) < 61
        if fmt == "date":
            m = _DATE_RE.match(value)
            return bool(m) and bool(datetime.date(int(m[1]), int(m[2]), int(m[3])))
        if fmt in _UUID_RE:
            return bool(_UUID_RE[fmt].match(value))
        if fmt == "ipv4":
            ipaddress.IPv4Address(value)
            return True
        if fmt == "ipv6":
            ipaddress.IPv6Address(value)
            return True
        if fmt == "cidr":
            ipaddress.ip_network(value, strict=False)
            return "/" in value
        if fmt == "byte":
            base64.b64decode(value, validate=True)
            return True
        if fmt == "hostname":
            return len(value) <= 255 and bool(_HOSTNAME_RE.match(value))
        if fmt == "mac":
            return bool(_MAC_RE.match(value))
        if fmt == "email":
            return bool(_EMAIL_RE.match(value))
        if fmt == "duration":
            return bool(_DURATION_RE.match(value))
    except ValueError:
        return False
    return True


__all__ = ["StructuralSchema", "OBJECT_META_FIELDS"]


# Errors after which the apiserver does not evaluate CEL rules (hasBlockingErr in
# apiextensions-apiserver's customresource strategy): the rules could see a value of the wrong
# type or shape. Other errors (pattern, minimum, minLength, ...) do not keep the rules from running.
BLOCKING = frozenset({"FieldValueNotSupported", "FieldValueRequired", "FieldValueTooLong", "FieldValueTooMany",
                      "FieldValueTypeInvalid"})
RULES_NOT_CHECKED = ("some validation rules were not checked because the object was invalid; "
                     "correct the existing errors to complete validation")


def rules_after(errors: list[FieldError]) -> FieldError | None:
    """The apiserver's note that CEL rules were skipped (field ``<nil>``, value null), or None
    when ``errors`` hold no blocking error and the rules are to be evaluated."""
    if any(e.type in BLOCKING for e in errors):
        return FieldError("FieldValueInvalid", "<nil>", NIL, RULES_NOT_CHECKED)
    return None
