"""Label and field selectors, parsed once per request into matchers.

The grammar follows ``k8s.io/apimachinery/pkg/labels`` (``a=b``, ``a==b``, ``a!=b``,
``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``, ``a>1``, ``a<1``) and
``k8s.io/apimachinery/pkg/fields`` (``f=v``, ``f==v``, ``f!=v``), so a selector the real
apiserver rejects is rejected here too (400) rather than silently matching everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request

_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TOKEN_RE = re.compile(r"\s*(!=|==|=|!|\(|\)|,|>|<|[^\s!=(),<>]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        if self.op == "notin":
            return self.key not in labels or labels[self.key] not in self.values
        if self.key not in labels:
            return False
        try:
            have, want = int(labels[self.key]), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _lex(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise bad_request(f"unable to parse requirement: found '{text[pos:]}'")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def _check_key(key: str) -> None:
    if not _KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
        raise bad_request(f"unable to parse requirement: invalid label key {key!r}")


def _check_value(value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise bad_request(f"unable to parse requirement: invalid label value: {value!r}")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``labelSelector``; an empty or absent selector matches everything."""
    if not text or not text.strip():
        return LabelSelector(())
    tokens = _lex(text)
    reqs: list[Requirement] = []
    i = 0

    def expect(cond: bool, what: str) -> None:
        if not cond:
            raise bad_request(f"unable to parse requirement: {what}")

    while i < len(tokens):
        if tokens[i] == "!":
            expect(i + 1 < len(tokens), "found '', expected: identifier")
            _check_key(tokens[i + 1])
            reqs.append(Requirement(tokens[i + 1], "!"))
            i += 2
        else:
            key = tokens[i]
            expect(key not in {"(", ")", ",", "=", "==", "!=", ">", "<"}, f"found '{key}', expected: !, identifier, or 'end of string'")
            _check_key(key)
            i += 1
            if i >= len(tokens) or tokens[i] == ",":
                reqs.append(Requirement(key, "exists"))
            elif tokens[i] in {"=", "==", "!="}:
                op = tokens[i]
                i += 1
                value = tokens[i] if i < len(tokens) and tokens[i] != "," else ""
                if value:
                    i += 1
                _check_value(value)
                reqs.append(Requirement(key, "notin" if op == "!=" else "in", (value,)))
            elif tokens[i] in {">", "<"}:
                op = "gt" if tokens[i] == ">" else "lt"
                expect(i + 1 < len(tokens), "found '', expected: integer")
                try:
                    int(tokens[i + 1])
                except ValueError:
                    raise bad_request("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer") from None
                reqs.append(Requirement(key, op, (tokens[i + 1],)))
                i += 2
            elif tokens[i] in {"in", "notin"}:
                op = tokens[i]
                i += 1
                expect(i < len(tokens) and tokens[i] == "(", f"found '{tokens[i] if i < len(tokens) else ''}', expected: '('")
                i += 1
                values: list[str] = []
                while True:
                    expect(i < len(tokens), "found '', expected: ')'")
                    if tokens[i] == ")":
                        i += 1
                        break
                    if tokens[i] == ",":
                        values.append("")
                        i += 1
                        continue
                    _check_value(tokens[i])
                    values.append(tokens[i])
                    i += 1
                    if i < len(tokens) and tokens[i] == ",":
                        i += 1
                        if i < len(tokens) and tokens[i] == ")":
                            values.append("")
                expect(bool(values) or op == "notin", "for 'in', 'notin' operators, values set can't be empty")
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise bad_request(f"unable to parse requirement: found '{tokens[i]}', expected: in, notin, =, ==, !=, gt, lt")
        if i < len(tokens):
            expect(tokens[i] == ",", f"found '{tokens[i]}', expected: ',' or 'end of string'")
            i += 1
            expect(i < len(tokens), "found '', expected: identifier after ','")
    return LabelSelector(tuple(reqs))


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for r in self.requirements:
            have = field_value(obj, r.field)
            if (have == r.value) == r.negate:
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.requirements


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, *, allowed: frozenset[str], custom: bool) -> FieldSelector:
    """Parse ``fieldSelector``; fields outside ``allowed`` get the apiserver's 400."""
    if not text or not text.strip():
        return FieldSelector(())
    reqs: list[FieldRequirement] = []
    for term in _split_unescaped(text):
        for op, negate in (("!=", True), ("==", False), ("=", False)):  # noqa: B007 - used after the break
            if op in term:
                field, value = term.split(op, 1)
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field = field.strip()
        if field not in allowed:
            if custom:
                raise bad_request(f'"{field}" is not a known field selector: only "metadata.name", "metadata.namespace"')
            raise bad_request(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, value.replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\"), negate))
    return FieldSelector(tuple(reqs))


def _split_unescaped(text: str) -> list[str]:
    parts, cur, esc = [], "", False
    for ch in text:
        if esc:
            cur += "\\" + ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


Matcher = Callable[[Mapping[str, Any]], bool]


def matcher(labels: LabelSelector, fields: FieldSelector) -> Matcher | None:
    """One predicate for both selectors, or None when nothing is filtered (the cheap path)."""
    if labels.empty and fields.empty:
        return None

    def match(obj: Mapping[str, Any]) -> bool:
        return labels.matches(obj.get("metadata", {}).get("labels")) and fields.matches(obj)

    return match


__all__ = ["ApiError", "LabelSelector", "FieldSelector", "parse_label_selector", "parse_field_selector", "matcher"]
