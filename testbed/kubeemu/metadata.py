"""ObjectMeta validation with the apiserver's messages (names, labels, annotations, finalizers)."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import FieldError, forbidden, invalid, required, too_long

_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QNAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LVALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
QNAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LVALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
TOTAL_ANNOTATION_SIZE = 256 * 1024


def name_problems(name: str, rule: str, *, prefix: bool = False) -> list[str]:
    if prefix:
        name = name[:-1] if name.endswith("-") else name
        if not name:
            return []
    msgs = []
    if rule == "label":
        if len(name) > 63:
            msgs.append("must be no more than 63 characters")
        if not _LABEL_RE.match(name):
            msgs.append(LABEL_MSG)
    else:
        if len(name) > 253:
            msgs.append("must be no more than 253 characters")
        if not _SUBDOMAIN_RE.match(name):
            msgs.append(SUBDOMAIN_MSG)
    return msgs


def qualified_name_problems(value: str) -> list[str]:
    msgs = []
    parts = value.split("/")
    if len(parts) == 2:
        prefix, name = parts
        if not prefix:
            msgs.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                msgs.append("prefix part must be no more than 253 characters")
            if not _SUBDOMAIN_RE.match(prefix):
                msgs.append("prefix part " + SUBDOMAIN_MSG)
    elif len(parts) == 1:
        name = parts[0]
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
            "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. "
            "'example.com/MyName')"
        ]
    if not name:
        msgs.append("name part must be non-empty")
    elif len(name) > 63:
        msgs.append("name part must be no more than 63 characters")
    if name and not _QNAME_RE.match(name):
        msgs.append(QNAME_MSG)
    return msgs


def meta_problems(meta: dict[str, Any], *, rule: str) -> list[FieldError]:
    errs: list[FieldError] = []
    name = meta.get("name") or ""
    gen = meta.get("generateName") or ""
    if gen:
        errs += [invalid("metadata.generateName", gen, m) for m in name_problems(gen, rule, prefix=True)]
    if not name:
        errs.append(required("metadata.name", "name or generateName is required"))
    else:
        errs += [invalid("metadata.name", name, m) for m in name_problems(name, rule)]
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            errs.append(invalid("metadata.labels", labels, "must be a map of strings"))
        else:
            for k, v in labels.items():
                errs += [invalid("metadata.labels", k, m) for m in qualified_name_problems(k)]
                if not isinstance(v, str):
                    errs.append(invalid("metadata.labels", v, "must be a string"))
                    continue
                if len(v) > 63:
                    errs.append(invalid("metadata.labels", v, "must be no more than 63 characters"))
                if not _LVALUE_RE.match(v):
                    errs.append(invalid("metadata.labels", v, LVALUE_MSG))
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            errs.append(invalid("metadata.annotations", annotations, "must be a map of strings"))
        else:
            total = 0
            for k, v in annotations.items():
                errs += [invalid("metadata.annotations", k.lower(), m) for m in qualified_name_problems(k.lower())]
                total += len(k) + len(v if isinstance(v, str) else json.dumps(v))
            if total > TOTAL_ANNOTATION_SIZE:
                errs.append(too_long("metadata.annotations", "", TOTAL_ANNOTATION_SIZE))
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list):
            errs.append(invalid("metadata.finalizers", finalizers, "must be a list"))
        else:
            for i, f in enumerate(finalizers):
                if not isinstance(f, str):
                    errs.append(invalid(f"metadata.finalizers[{i}]", f, "must be a string"))
                    continue
                errs += [invalid(f"metadata.finalizers[{i}]", f, m) for m in qualified_name_problems(f)]
    return errs


def finalizers_added_while_deleting(old: dict[str, Any], new: dict[str, Any]) -> FieldError | None:
    old_f = set((old.get("metadata") or {}).get("finalizers") or [])
    new_f = (new.get("metadata") or {}).get("finalizers") or []
    added = sorted(f for f in set(new_f) if f not in old_f)
    if not added:
        return None
    go_list = "[]string{" + ", ".join(json.dumps(f) for f in added) + "}"
    return forbidden(
        "metadata.finalizers",
        f"no new finalizers can be added if the object is being deleted, found new finalizers {go_list}",
    )
