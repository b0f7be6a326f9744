"""Patch documents applied to plain JSON objects: RFC 7386 merge patch and RFC 6902 JSON patch.

Pure functions over dicts, no I/O. Error texts follow evanphx/json-patch v4, the library the
apiserver applies JSON patches with, because clients (and the operator's logs) show them.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchDecodeError(ValueError):
    """The patch document itself is malformed: the apiserver answers 400."""


class PatchApplyError(ValueError):
    """The patch is well formed but does not apply (failed ``test``, missing path): 422."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch reduced to a merge patch (lists replace; ``$patch`` and
    ``$retainKeys``/``$setElementOrder`` directives are dropped). Good enough for the
    built-in kinds the emulator serves (no list with a patch merge key is used by kopf).
    """
    if isinstance(patch, dict):
        patch = {k: v for k, v in patch.items() if not k.startswith("$")}
        if not isinstance(target, dict):
            target = {}
        result = dict(target)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value)
        return result
    return copy.deepcopy(patch)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchApplyError(f"JSON pointer must be empty or start with a \"/\": {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _container(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for token in parts:
        if isinstance(cur, dict):
            if token not in cur:
                return None
            cur = cur[token]
        elif isinstance(cur, list):
            try:
                idx = int(token)
            except ValueError:
                return None
            if idx < 0 or idx >= len(cur):
                return None
            cur = cur[idx]
        else:
            return None
    return cur


def _index(token: str, size: int, *, allow_end: bool, op: str, path: str) -> int:
    if allow_end and token == "-":
        return size
    try:
        idx = int(token)
    except ValueError:
        raise PatchApplyError(f"{op} operation does not apply: doc is missing path: {path!r}: missing value") from None
    limit = size if allow_end else size - 1
    if idx < 0 or idx > limit:
        raise PatchApplyError(f"Unable to access invalid index: {idx}: invalid index referenced")
    return idx


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _split(path)
    if not parts:
        return doc
    con = _container(doc, parts[:-1])
    key = parts[-1]
    if isinstance(con, dict) and key in con:
        return con[key]
    if isinstance(con, list):
        return con[_index(key, len(con), allow_end=False, op=op, path=path)]
    raise PatchApplyError(f"{op} operation does not apply: doc is missing path: {path!r}: missing value")


def _add(doc: Any, path: str, value: Any, op: str = "add") -> Any:
    parts = _split(path)
    if not parts:
        return value
    con = _container(doc, parts[:-1])
    key = parts[-1]
    if isinstance(con, dict):
        con[key] = value
    elif isinstance(con, list):
        con.insert(_index(key, len(con), allow_end=True, op=op, path=path), value)
    else:
        raise PatchApplyError(f"{op} operation does not apply: doc is missing path: {path!r}: missing value")
    return doc


def _remove(doc: Any, path: str, op: str = "remove") -> Any:
    parts = _split(path)
    con = _container(doc, parts[:-1]) if parts else None
    key = parts[-1] if parts else ""
    if isinstance(con, dict) and key in con:
        del con[key]
    elif isinstance(con, list):
        del con[_index(key, len(con), allow_end=False, op=op, path=path)]
    else:
        raise PatchApplyError(f"{op} operation does not apply: doc is missing path: {path!r}: missing value")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 over a deep copy of ``doc``; raises PatchDecodeError / PatchApplyError."""
    if not isinstance(ops, list):
        raise PatchDecodeError(f"json: cannot unmarshal {_json_kind(ops)} into Go value of type jsonpatch.Patch")
    result = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchDecodeError(f"json: cannot unmarshal {_json_kind(op)} into Go value of type jsonpatch.Operation")
        kind = op.get("op")
        path = op.get("path")
        if not isinstance(path, str):
            raise PatchApplyError(f"{kind} operation does not apply: doc is missing path: \"\": missing value" if kind else "Unexpected kind: ")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchApplyError(f"{kind} operation does not apply: doc is missing value")
        if kind == "add":
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            result = _remove(result, path)
        elif kind == "replace":
            parts = _split(path)
            if parts:
                con = _container(result, parts[:-1])
                if isinstance(con, dict) and parts[-1] not in con or con is None or not isinstance(con, (dict, list)):
                    raise PatchApplyError(f"replace operation does not apply: doc is missing key: {path}: missing value")
                if isinstance(con, list):
                    con[_index(parts[-1], len(con), allow_end=False, op="replace", path=path)] = copy.deepcopy(op["value"])
                else:
                    con[parts[-1]] = copy.deepcopy(op["value"])
            else:
                result = copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise PatchApplyError(f"{kind} operation does not apply: doc is missing from path: \"\": missing value")
            value = copy.deepcopy(_get(result, source, kind))
            if kind == "move":
                result = _remove(result, source, kind)
            result = _add(result, path, value, kind)
        elif kind == "test":
            try:
                have = _get(result, path, "test")
            except PatchApplyError:
                have = None
                if op["value"] is not None:
                    raise PatchApplyError(f"testing value {path} failed: test failed") from None
            if not _json_equal(have, op["value"]):
                raise PatchApplyError(f"testing value {path} failed: test failed")
        else:
            raise PatchApplyError(f"Unexpected kind: {kind}")
    return result


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null"
