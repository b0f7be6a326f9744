"""Client-side ``kubectl apply``, reduced to the requests it sends for custom resources.

Users and GitOps tools create GpuVms with ``kubectl apply``, so a real object carries what that
leaves behind: the ``kubectl.kubernetes.io/last-applied-configuration`` annotation and the
``kubectl-client-side-apply`` field manager's managedFields entry. The test bed and the benchmark
create their objects the same way, so the operator sees objects of the size a cluster hands it.

What kubectl v1.36 does (``staging/src/k8s.io/kubectl/pkg/cmd/apply/apply.go`` and
``patcher.go``, ``staging/src/k8s.io/kubectl/pkg/util/apply.go``): it sets the namespace, embeds the
object, serialised without that annotation (keys sorted, compact, a trailing newline; an empty
``annotations`` map when there was none), as the annotation, and creates the object with
``fieldManager=kubectl-client-side-apply``. When the object exists it sends a three-way JSON
merge patch (``CreateThreeWayJSONMergePatch``: additions and changes from live to new, deletions
from last-applied to new), with the same field manager, and nothing when the patch is empty.
``tests/testbed/test_kubeemu_managedfields.py`` checks these functions against the real kubectl.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
FIELD_MANAGER = "kubectl-client-side-apply"


def _go_json(value: Any) -> str:
    """encoding/json of an unstructured object: sorted keys, compact, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def manifest(*, api_version: str, kind: str, name: str, spec: Mapping[str, Any], labels: Mapping[str, str] | None = None,
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A manifest as a user writes it in a YAML file (no namespace: ``kubectl apply -n`` fills it in)."""
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": dict(spec)}


def modified_configuration(obj: Mapping[str, Any], *, namespace: str | None) -> dict[str, Any]:
    """The object kubectl sends (GetModifiedConfiguration with annotate=true), namespace filled in."""
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    if namespace is not None:
        meta.setdefault("namespace", namespace)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    meta["annotations"] = annotations
    text = _go_json(out) + "\n"
    meta["annotations"] = {**annotations, LAST_APPLIED: text}
    return out


def _merge_diff(current: Mapping[str, Any], modified: Mapping[str, Any]) -> dict[str, Any]:
    """jsonpatch.CreateMergePatch between two objects."""
    out: dict[str, Any] = {}
    for key, value in modified.items():
        if key not in current:
            out[key] = value
        elif isinstance(value, dict) and isinstance(current[key], dict):
            sub = _merge_diff(current[key], value)
            if sub:
                out[key] = sub
        elif value != current[key] or type(value) is not type(current[key]):
            out[key] = value
    for key in current:
        if key not in modified:
            out[key] = None
    return out


def _keep_nulls(patch: Mapping[str, Any], *, keep: bool) -> dict[str, Any]:
    """keepOrDeleteNullInObj: only the deletions (keep=True) or only additions and changes."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if value is None:
            if keep:
                out[key] = None
        elif isinstance(value, dict):
            if not value:
                if not keep:
                    out[key] = value
                continue
            sub = _keep_nulls(value, keep=keep)
            if sub:
                out[key] = sub
        elif not keep:
            out[key] = value
    return out


def _merge(doc: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def three_way_patch(*, modified: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """CreateThreeWayJSONMergePatch(original=current's last-applied, modified, current)."""
    original_text = ((current.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED) or "{}"
    try:
        original = json.loads(original_text)
    except ValueError:
        original = {}
    add_and_change = _keep_nulls(_merge_diff(current, modified), keep=False)
    deletions = _keep_nulls(_merge_diff(original if isinstance(original, dict) else {}, modified), keep=True)
    return _merge(deletions, add_and_change)
