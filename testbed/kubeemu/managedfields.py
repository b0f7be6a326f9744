"""``metadata.managedFields`` as kube-apiserver maintains them: who set which field, and when.

A real apiserver records, on every write, which fields each client ("field manager") last set.
The records are part of every object a client reads (often the bigger half of a small object), so
an emulator without them shows the operator objects smaller than a cluster does. This module is
the pure core: field sets, the comparison of two objects, the ``FieldsV1`` encoding, and the steps
kube-apiserver runs for Update operations (create, PUT, merge/JSON patch, status writes) and a
minimal Apply. Sources, all read for this (Kubernetes v1.36, structured-merge-diff v6):

- ``k8s.io/apimachinery/pkg/util/managedfields/internal/``: ``fieldmanager.go`` (which
  managedFields a request brings: a reset, its own, or the live ones), ``skipnonapplied.go``,
  ``capmanagers.go`` (at most 10 Update entries; the oldest merge into ``ancient-changes``),
  ``buildmanagerinfo.go`` (identity = manager, operation, apiVersion for updates, subresource;
  empty manager -> ``unknown``), ``managedfieldsupdater.go`` (compute as ``current-operation``,
  merge into the manager's entry, stamp the time only if it took fields), ``stripmeta.go``,
  ``managedfields.go`` (decoding rules, entry order);
- ``sigs.k8s.io/structured-merge-diff``: ``typed/compare.go`` (added / modified / removed paths;
  a map or list node absent on one side is itself added/removed; empty on both sides is a leaf),
  ``merge/update.go`` (other managers lose what the writer modified, added or removed),
  ``fieldpath/serialize*.go`` (``f:``, ``k:``, ``v:``, ``i:`` and ``.``), ``typed/tofieldset.go``.

Sets are plain Python sets of paths, a path being a tuple of serialized path elements
(``'f:spec'``, ``'k:{"type":"Ready"}'``, ``'v:"a"'``): SMD's Set is exactly a set of such paths,
and its union/intersection/difference are the set operations on them.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

Path = tuple[str, ...]
PathSet = frozenset[Path]

MAX_UPDATE_MANAGERS = 10  # internal.DefaultMaxUpdateManagers
ANCIENT = "ancient-changes"
BEFORE_FIRST_APPLY = "before-first-apply"
MAX_MANAGER_LENGTH = 128  # validation.FieldManagerMaxLength

# stripmeta.go: never part of anyone's fields.
STRIP: PathSet = frozenset({
    ("f:apiVersion",), ("f:kind",), ("f:metadata",), *(("f:metadata", f"f:{k}") for k in (
        "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation", "managedFields",
        "resourceVersion"))})

_MISSING: Any = object()


class FieldsError(ValueError):
    """A value the typed comparison cannot handle (e.g. a list-map item without its key)."""


# ------------------------------------------------------------------ schemas
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "ownerReferences": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"],
            "items": {"type": "object", "properties": {k: {"type": "string"} for k in (
                "apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")}},
        },
        "managedFields": {"type": "array", "items": {"type": "object"}},  # atomic
    },
}


def _map_list(*keys: str, items: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys),
            "items": items or {"type": "object"}}


_CONDITIONS = _map_list("type")
_CONTAINER = {"type": "object", "properties": {
    "ports": _map_list("containerPort", "protocol"), "env": _map_list("name"),
    "volumeMounts": _map_list("mountPath"), "resources": {"type": "object"}}}
_CONTAINERS = _map_list("name", items=_CONTAINER)

# What the emulator's built-in kinds need beyond "maps granular, lists atomic" (the deduced
# typing SMD uses for unknown fields): their associative lists, from the types' +listType tags.
BUILTIN_SCHEMAS: dict[str, dict[str, Any]] = {
    "/pods": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "containers": _CONTAINERS, "initContainers": _CONTAINERS, "volumes": _map_list("name"),
            "imagePullSecrets": _map_list("name"), "tolerations": {"type": "array"}}},
        "status": {"type": "object", "properties": {
            "conditions": _CONDITIONS, "podIPs": _map_list("ip"), "hostIPs": _map_list("ip")}}}},
    "/namespaces": {"type": "object", "properties": {
        "status": {"type": "object", "properties": {"conditions": _CONDITIONS}}}},
    "/serviceaccounts": {"type": "object", "properties": {"secrets": _map_list("name"),
                                                          "imagePullSecrets": _map_list("name")}},
}


def _child(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if schema is None:
        return None
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    addl = schema.get("additionalProperties")
    return addl if isinstance(addl, dict) else None


def _shape(schema: dict[str, Any] | None, value: Any) -> str:
    """'scalar', 'atomic', 'map', 'listmap' or 'set': how SMD treats the node (None = deduced)."""
    if schema is not None and schema.get("x-kubernetes-int-or-string"):
        return "scalar"
    kind = (schema or {}).get("type")
    if kind is None and schema is not None and (schema.get("properties") or isinstance(schema.get("additionalProperties"), dict)):
        kind = "object"
    if kind is None:  # deduced from the value: maps granular, lists atomic
        return "map" if isinstance(value, dict) else ("atomic" if isinstance(value, list) else "scalar")
    if kind == "object":
        return "atomic" if (schema or {}).get("x-kubernetes-map-type") == "atomic" else "map"
    if kind == "array":
        list_type = (schema or {}).get("x-kubernetes-list-type")
        if list_type == "map":
            return "listmap"
        return "set" if list_type == "set" else "atomic"
    return "scalar"


def _encode_value(value: Any) -> str:
    """JSON as jsoniter's standard-library-compatible config writes it (compact, HTML escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _item_element(schema: dict[str, Any] | None, shape: str, item: Any) -> str:
    if shape == "set":
        if isinstance(item, (dict, list)):
            raise FieldsError("set items must be scalars")
        return "v:" + _encode_value(item)
    keys = (schema or {}).get("x-kubernetes-list-map-keys") or []
    if not isinstance(item, dict):
        raise FieldsError("associative list items must be objects")
    fields = {}
    for k in sorted(keys):
        if k in item:
            fields[k] = item[k]
        else:
            default = (_child((schema or {}).get("items"), k) or {}).get("default", _MISSING)
            if default is _MISSING:
                raise FieldsError(f'associative list with keys has an element that omits key field "{k}"')
            fields[k] = default
    return "k:{" + ",".join(f"{_encode_value(k)}:{_encode_value(v)}" for k, v in fields.items()) + "}"


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return a == b


# ------------------------------------------------------------------ comparison
@dataclass(frozen=True)
class Comparison:
    added: PathSet
    modified: PathSet
    removed: PathSet

    def exclude(self, reset: PathSet) -> Comparison:
        """ExcludeFields: drop the reset fields and everything under them."""
        if not reset:
            return self
        return Comparison(under_removed(self.added, reset), under_removed(self.modified, reset),
                          under_removed(self.removed, reset))


def under_removed(paths: Iterable[Path], prefixes: PathSet) -> PathSet:
    """Set.RecursiveDifference: ``paths`` minus every path at or below one of ``prefixes``."""
    return frozenset(p for p in paths if not any(p[:i] in prefixes for i in range(1, len(p) + 1)))


def compare(lhs: Any, rhs: Any, schema: dict[str, Any] | None) -> Comparison:
    """typed.Compare of two whole objects (``metadata`` typed as ObjectMeta)."""
    added: set[Path] = set()
    modified: set[Path] = set()
    removed: set[Path] = set()

    def leaf(l: Any, r: Any, path: Path) -> None:
        if l is _MISSING:
            added.add(path)
        elif r is _MISSING:
            removed.add(path)
        elif not _json_equal(l, r):
            modified.add(path)

    def walk(l: Any, r: Any, node: dict[str, Any] | None, path: Path) -> None:
        shape = _shape(node, r if r is not _MISSING else l)
        if shape in ("scalar", "atomic"):
            leaf(l, r, path)
            return
        if shape == "map":
            lm = l if isinstance(l, dict) else None
            rm = r if isinstance(r, dict) else None
            if not lm and not rm:
                leaf(l, r, path)
                return
            lm, rm = lm or {}, rm or {}
            for key in {**lm, **rm}:
                sub = OBJECT_META if (not path and key == "metadata") else _child(node, key)
                walk(lm.get(key, _MISSING), rm.get(key, _MISSING), sub, (*path, f"f:{key}"))
        else:
            ll = l if isinstance(l, list) else None
            rl = r if isinstance(r, list) else None
            if not ll and not rl:
                leaf(l, r, path)
                return
            items = (node or {}).get("items") if isinstance((node or {}).get("items"), dict) else None
            lv, rv = _index(node, shape, ll or []), _index(node, shape, rl or [])
            for pe in {**lv, **rv}:
                lx, rx = lv.get(pe, []), rv.get(pe, [])
                here = (*path, pe)
                if len(lx) <= 1 and len(rx) <= 1:
                    walk(lx[0] if lx else _MISSING, rx[0] if rx else _MISSING, items, here)
                elif len(lx) >= 2 and len(rx) >= 2:
                    if not _json_equal(lx, rx):
                        modified.add(here)
                elif len(lx) >= 2:
                    if rx:
                        walk(_MISSING, rx[0], items, here)
                    removed.add(here)
                else:
                    if lx:
                        walk(lx[0], _MISSING, items, here)
                    added.add(here)
        if l is _MISSING:
            added.add(path)
        elif r is _MISSING:
            removed.add(path)

    walk(lhs, rhs, schema, ())
    return Comparison(frozenset(added), frozenset(modified), frozenset(removed))


def _index(node: dict[str, Any] | None, shape: str, items: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in items:
        out.setdefault(_item_element(node, shape, item), []).append(item)
    return out


def field_set(obj: Any, schema: dict[str, Any] | None) -> PathSet:
    """typed.ToFieldSet: the fields an applied configuration sets (leaves, list items, map keys)."""
    out: set[Path] = set()

    def walk(value: Any, node: dict[str, Any] | None, path: Path) -> None:
        shape = _shape(node, value)
        if shape in ("scalar", "atomic"):
            out.add(path)
        elif shape == "map":
            if not isinstance(value, dict):
                return
            props = (node or {}).get("properties") or {}
            for key, sub in value.items():
                child = OBJECT_META if (not path and key == "metadata") else _child(node, key)
                here = (*path, f"f:{key}")
                walk(sub, child, here)
                if sub is None or sub == {} or key not in props:
                    out.add(here)
        elif isinstance(value, list):
            items = (node or {}).get("items") if isinstance((node or {}).get("items"), dict) else None
            seen: dict[str, int] = {}
            for item in value:
                pe = _item_element(node, shape, item)
                seen[pe] = seen.get(pe, 0) + 1
            for item in value:
                pe = _item_element(node, shape, item)
                out.add((*path, pe))
                if seen[pe] == 1:
                    walk(item, items, (*path, pe))

    walk(obj, schema, ())
    return frozenset(out)


# ------------------------------------------------------------------ FieldsV1
def _element_rank(pe: str) -> tuple[int, str]:
    return ({"f": 0, "k": 1, "v": 2, "i": 3}.get(pe[0], 4), pe)


def encode(paths: Iterable[Path]) -> dict[str, Any]:
    """Set.ToJSON: a tree of path elements; ``"."`` marks a node that is itself a member."""
    members = set(paths)
    tree: dict[str, Any] = {}
    for path in members:
        node = tree
        for pe in path:
            node = node.setdefault(pe, {})

    def emit(node: dict[str, Any], prefix: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if node and prefix in members:
            out["."] = {}
        for pe in sorted(node, key=_element_rank):
            out[pe] = emit(node[pe], (*prefix, pe))
        return out

    return emit(tree, ())


def _normal_element(key: str) -> str | None:
    """DeserializePathElement + re-serialization; None for unknown types (dropped, as SMD does)."""
    if len(key) < 2 or key[1] != ":":
        raise FieldsError(f"invalid path element {key!r}")
    kind, body = key[0], key[2:]
    if kind == "f":
        return key
    try:
        if kind == "v":
            return "v:" + _encode_value(json.loads(body))
        if kind == "k":
            fields = json.loads(body)
            if not isinstance(fields, dict):
                raise FieldsError(f"invalid key {key!r}")
            return "k:{" + ",".join(f"{_encode_value(k)}:{_encode_value(fields[k])}" for k in sorted(fields)) + "}"
        if kind == "i":
            return f"i:{int(body)}"
    except ValueError as e:
        raise FieldsError(f"invalid path element {key!r}: {e}") from None
    return None


def decode(fields: Any) -> PathSet:
    """FieldsToSet; raises FieldsError on what the apiserver cannot parse."""
    out: set[Path] = set()

    def walk(node: Any, prefix: Path) -> bool:
        """Adds the members below ``prefix``; returns whether ``prefix`` itself is a member."""
        if not isinstance(node, dict):
            raise FieldsError("fieldsV1 must be a tree of objects")
        member, children = False, False
        for key, child in node.items():
            if key == ".":
                member = True
                continue
            pe = _normal_element(key)
            if pe is None:
                continue
            children = True
            if walk(child, (*prefix, pe)):
                out.add((*prefix, pe))
        return member or not children

    walk(fields, ())
    return frozenset(out)


# ------------------------------------------------------------------ entries
@dataclass(frozen=True)
class Entry:
    """One managedFields entry, decoded."""

    manager: str
    operation: str  # "Update" | "Apply"
    api_version: str
    subresource: str
    time: str | None
    fields: PathSet
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # the stored entry it came from

    def changed(self, **changes: Any) -> Entry:
        """A modified copy, no longer backed by the stored entry."""
        return replace(self, raw=None, **changes)

    @property
    def identity(self) -> str:
        """BuildManagerIdentifier: the JSON the apiserver keys entries by (no apiVersion for Apply)."""
        ident: dict[str, str] = {}
        if self.manager:
            ident["manager"] = self.manager
        ident["operation"] = self.operation
        if self.operation != "Apply" and self.api_version:
            ident["apiVersion"] = self.api_version
        if self.subresource:
            ident["subresource"] = self.subresource
        return json.dumps(ident, separators=(",", ":"))

    def as_json(self) -> dict[str, Any]:
        """The API form; an unchanged entry is the stored dict itself (objects share it, no copy is made)."""
        if self.raw is not None:
            return self.raw
        out: dict[str, Any] = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version}
        if not self.manager:
            del out["manager"]
        if self.time is not None:
            out["time"] = self.time
        out["fieldsType"] = "FieldsV1"
        out["fieldsV1"] = encode(self.fields)
        if self.subresource:
            out["subresource"] = self.subresource
        return out


Managed = dict[str, Entry]  # identity -> entry


def _time(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldsError("time must be a string")
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FieldsError(f"invalid time {value!r}") from None
    if parsed.tzinfo is None:
        raise FieldsError(f"invalid time {value!r}")
    return parsed.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_entries(entries: Any, *, stored: bool = False) -> Managed:
    """DecodeManagedFields; raises FieldsError where the apiserver's decoding fails.

    ``stored``: the entries are a stored object's (canonical), so an unchanged one can be kept as it is.
    """
    if not isinstance(entries, list):
        raise FieldsError("managedFields must be a list")
    out: Managed = {}
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise FieldsError(f"managed fields entry {i} is not an object")
        operation = raw.get("operation")
        if operation not in ("Apply", "Update"):
            raise FieldsError("operation must be `Apply` or `Update`")
        if not raw.get("apiVersion") or not isinstance(raw.get("apiVersion"), str):
            raise FieldsError("apiVersion must not be empty")
        if raw.get("fieldsType") != "FieldsV1":
            raise FieldsError(f"missing or invalid fieldsType in managed fields entry {i}")
        for key in ("manager", "subresource"):
            if not isinstance(raw.get(key, ""), str):
                raise FieldsError(f"{key} must be a string")
        entry = Entry(manager=raw.get("manager", ""), operation=operation, api_version=raw["apiVersion"],
                      subresource=raw.get("subresource", ""), time=_time(raw.get("time")),
                      fields=decode(raw.get("fieldsV1") or {}), raw=raw if stored else None)
        out[entry.identity] = entry
    return out


def encode_entries(managed: Managed, previous: Any = None) -> list[dict[str, Any]] | None:
    """encodeManagedFields: None when empty; ordered by operation, time, manager, apiVersion, subresource.

    When nothing changed, ``previous`` (the stored list) itself: snapshots share it, as they share
    every unchanged entry, so a write that leaves managedFields alone allocates nothing for them.
    """
    if not managed:
        return None
    ordered = sorted(managed.values(), key=lambda e: (e.operation, e.time or "", e.manager, e.api_version, e.subresource))
    out = [e.as_json() for e in ordered]
    if isinstance(previous, list) and len(previous) == len(out) and all(a is b for a, b in zip(previous, out)):
        return previous
    return out


def _is_reset(entries: Any) -> bool:
    """isResetManagedFields: an empty list, or a list of one empty entry."""
    return isinstance(entries, list) and (not entries or (len(entries) == 1 and entries[0] == {}))


def manager_from_user_agent(user_agent: str) -> str:
    """prefixFromUserAgent (apiserver handlers/create.go): up to the first '/', printable, <= 128 bytes."""
    out, size = [], 0
    for ch in user_agent.split("/")[0]:
        if not ch.isprintable():
            continue
        n = len(ch.encode())
        if size + n > MAX_MANAGER_LENGTH:
            break
        out.append(ch)
        size += n
    return "".join(out)


def field_manager_problems(manager: str) -> list[str]:
    """ValidateFieldManager for the fieldManager query parameter: length and printable characters."""
    problems = []
    if len(manager.encode()) > MAX_MANAGER_LENGTH:
        problems.append("too-long")
    problems += [f"invalid character {_go_rune(ch)} (at position {i})" for i, ch in enumerate(manager) if not ch.isprintable()]
    return problems


def _go_rune(ch: str) -> str:
    """Go's %#U: U+0009 or U+0041 'A'."""
    return f"U+{ord(ch):04X}" + (f" '{ch}'" if ch.isprintable() else "")


# ------------------------------------------------------------------ operations
@dataclass(frozen=True)
class Write:
    """What the field manager needs to know about one write."""

    manager: str  # already derived (fieldManager, else from the User-Agent)
    api_version: str
    subresource: str = ""
    reset: PathSet = frozenset()  # the strategy's reset fields for this endpoint
    now: str = ""


def _live_managed(live: Mapping[str, Any] | None) -> Managed:
    if live is None:
        return {}
    try:
        return decode_entries((live.get("metadata") or {}).get("managedFields") or [], stored=True)
    except FieldsError:
        return {}


def _take(managed: Managed, comparison: Comparison, *, skip: str = "") -> Managed:
    """Every manager but ``skip`` loses what the write modified, added or removed; empty ones go."""
    lost = comparison.modified | comparison.added | comparison.removed
    out: Managed = {}
    for ident, entry in managed.items():
        fields = entry.fields if ident == skip else entry.fields - lost
        if fields:
            out[ident] = entry if fields is entry.fields else entry.changed(fields=fields)
    return out


def _cap(managed: Managed) -> Managed:
    """capManagersManager: merge the oldest Update entries into ``ancient-changes`` buckets."""
    updaters = [i for i, e in managed.items() if e.operation == "Update"]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return managed
    out = dict(managed)
    updaters.sort(key=lambda i: (out[i].time or "", i))
    first: dict[str, str] = {}
    length = len(updaters)
    for ident in updaters:
        if length <= MAX_UPDATE_MANAGERS:
            break
        entry = out[ident]
        bucket = Entry(ANCIENT, "Update", entry.api_version, "", None, frozenset()).identity
        if entry.api_version in first:
            if bucket not in out:
                moved = out.pop(first[entry.api_version])
                out[bucket] = moved.changed(manager=ANCIENT, subresource="")
            out[bucket] = out[bucket].changed(fields=entry.fields | out[bucket].fields, time=entry.time)
            del out[ident]
            length -= 1
        else:
            first[entry.api_version] = ident
    return out


def update(live: Mapping[str, Any] | None, new: Mapping[str, Any], write: Write,
           schema: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """managedFields for ``new`` after an Update operation (``live`` is None for a create).

    ``new`` is the object as the request made it (decoded, pruned, defaulted; for a patch the
    patched object), before the strategy restores what the endpoint may not change: the
    comparison is made there and the endpoint's reset fields are left out of it, as the
    apiserver does. Returns None when the object carries no managedFields afterwards.
    """
    stored = (live or {}).get("metadata", {}).get("managedFields")
    request = (new.get("metadata") or {}).get("managedFields", _MISSING)
    if write.subresource or request is _MISSING or request == stored:  # the usual case: the live ones
        managed = _live_managed(live)
    else:
        if _is_reset(request):
            managed = {}
        else:
            try:
                managed = decode_entries(request) if isinstance(request, list) else {}
            except FieldsError:
                managed = {}
            if not managed:
                managed = _live_managed(live)
    if not managed and live is not None:
        return None  # skipNonAppliedManager: an update never starts tracking an untracked object
    try:
        managed = _updated(managed, live, new, write, schema)
    except FieldsError:
        return stored  # UpdateNoErrors keeps the live ones
    return encode_entries(_cap(managed), stored)


def _without_managed(obj: Mapping[str, Any] | None, api_version: str, kind: str) -> dict[str, Any]:
    if obj is None:
        return {"apiVersion": api_version, "kind": kind}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def _updated(managed: Managed, live: Mapping[str, Any] | None, new: Mapping[str, Any], write: Write,
             schema: dict[str, Any] | None) -> Managed:
    me = Entry(write.manager or "unknown", "Update", write.api_version, write.subresource, None, frozenset())
    before = _without_managed(live, str(new.get("apiVersion", "")), str(new.get("kind", "")))
    comparison = compare(before, _without_managed(new, "", ""), schema).exclude(write.reset)
    managed = _take(managed, comparison)
    taken = under_removed(comparison.modified | comparison.added, write.reset) - STRIP
    if taken:
        previous = managed.get(me.identity)
        fields = taken | (previous.fields if previous else frozenset())
        managed[me.identity] = me.changed(fields=fields, time=write.now)
    return managed


class ApplyConflict(Exception):
    """Server-side apply would take fields other managers own (and force was not given)."""

    def __init__(self, conflicts: list[tuple[Entry, Path]]) -> None:
        self.conflicts = conflicts
        super().__init__(conflict_message(conflicts))


def path_string(path: Path) -> str:
    """fieldpath.Path.String(): .spec.x, [type="Ready"], [=value], [0]."""
    out = []
    for pe in path:
        kind, body = pe[0], pe[2:]
        if kind == "f":
            out.append("." + body)
        elif kind == "k":
            fields = json.loads(body)
            out.append("[" + ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in fields.items()) + "]")
        elif kind == "v":
            out.append(f"[={body}]")
        else:
            out.append(f"[{body}]")
    return "".join(out)


def print_manager(entry: Entry) -> str:
    """printManager in managedfields/internal/conflict.go."""
    text = json.dumps(entry.manager)
    if entry.subresource:
        text += f" with subresource {json.dumps(entry.subresource)}"
    if entry.operation == "Update":
        text += f" using {entry.api_version}" + (f" at {entry.time}" if entry.time else "")
    return text


def conflict_message(conflicts: list[tuple[Entry, Path]]) -> str:
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {print_manager(entry)}: {path_string(path)}"
    lines: list[str] = []
    by_manager: dict[str, list[tuple[Entry, Path]]] = {}
    for entry, path in conflicts:
        by_manager.setdefault(entry.identity, []).append((entry, path))
    for ident in sorted(by_manager):
        lines.append(f"conflicts with {print_manager(by_manager[ident][0][0])}:")
        lines += [f"- {path_string(p)}" for _, p in by_manager[ident]]
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


def _ordered(paths: PathSet) -> list[Path]:
    return sorted(paths, key=lambda p: [_element_rank(pe) for pe in p])


def apply(live: Mapping[str, Any] | None, new: Mapping[str, Any], applied: Mapping[str, Any], write: Write,
          schema: dict[str, Any] | None, *, force: bool) -> list[dict[str, Any]] | None:
    """managedFields after a server-side apply whose merged result is ``new``.

    Ownership as merge.Updater.Apply computes it (the applier owns exactly the applied
    configuration's fields; others lose what it changes; conflicts unless ``force``); the object
    itself is merged by the caller, see the README for how that differs.
    """
    managed = _live_managed(live)
    if not managed and live is not None:
        empty = {"apiVersion": live.get("apiVersion"), "kind": live.get("kind")}
        managed = _updated({}, empty, live, replace(write, manager=BEFORE_FIRST_APPLY, subresource=""), schema)
    me = Entry(write.manager, "Apply", write.api_version, write.subresource, write.now, frozenset())
    mine = under_removed(field_set(applied, schema), write.reset) - STRIP
    before = _without_managed(live, str(new.get("apiVersion", "")), str(new.get("kind", "")))
    comparison = compare(before, _without_managed(new, "", ""), schema).exclude(write.reset)
    changed = comparison.modified | comparison.added
    conflicts = [(e, p) for ident, e in sorted(managed.items()) if ident != me.identity
                 for p in _ordered(e.fields & changed)]
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    managed = _take(managed, comparison, skip=me.identity)
    previous = managed.get(me.identity)
    unchanged = previous is not None and not (comparison.added or comparison.modified or comparison.removed)
    managed[me.identity] = me.changed(fields=mine, time=previous.time if unchanged else write.now)
    if not managed[me.identity].fields:
        del managed[me.identity]
    return encode_entries(_cap(managed), (live or {}).get("metadata", {}).get("managedFields"))
