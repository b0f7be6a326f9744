"""What the emulator serves: resource types (built-in and from CRDs) and discovery documents.

A ``ResourceInfo`` is one (group, version, plural) as discovery shows it. Storage is keyed by
(group, plural) only, so every served version of a CRD sees the same objects (conversion
strategy ``None``: only ``apiVersion`` differs), as on a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import FieldError, Target, invalid, not_supported, required
from .pods import FIELD_SELECTORS as POD_FIELDS
from .schema import StructuralSchema

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
BASE_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status_subresource: bool = False
    custom: bool = False
    tracks_generation: bool = False
    name_rule: str = "subdomain"  # "subdomain" | "label"
    field_selectors: frozenset[str] = BASE_FIELDS
    schema: StructuralSchema | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """Storage key shared by all versions of the resource."""
        return f"{self.group}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def target(self) -> Target:
        return Target(self.group, self.plural, self.kind)

    def discovery(self) -> list[dict[str, Any]]:
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        out = [main]
        if self.status_subresource:
            out.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return out


_EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
        "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
        "reason", "reportingComponent", "source", "type",
    }
)

CRD_GROUP = "apiextensions.k8s.io"

BUILTINS: tuple[ResourceInfo, ...] = (
    ResourceInfo("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",),
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch"), status_subresource=True,
                 name_rule="label", field_selectors=BASE_FIELDS | {"status.phase"}),
    ResourceInfo("", "v1", "events", "event", "Event", True, ("ev",), field_selectors=BASE_FIELDS | _EVENT_FIELDS),
    ResourceInfo("", "v1", "pods", "pod", "Pod", True, ("po",), ("all",), status_subresource=True, tracks_generation=True,
                 field_selectors=BASE_FIELDS | POD_FIELDS),
    ResourceInfo("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    ResourceInfo("", "v1", "secrets", "secret", "Secret", True, field_selectors=BASE_FIELDS | {"type"}),
    ResourceInfo("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    ResourceInfo("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
    ResourceInfo("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
                 "SelfSubjectAccessReview", False, verbs=("create",)),
    ResourceInfo("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview", False,
                 verbs=("create",)),
    ResourceInfo(CRD_GROUP, "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition",
                 False, ("crd", "crds"), ("api-extensions",), status_subresource=True, tracks_generation=True),
)


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (0, 0, 0, version)
    major = int(m.group(1))
    stage = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, major, minor, "")


def sort_versions(versions: Iterable[str]) -> list[str]:
    def order(v: str) -> tuple[Any, ...]:
        p = version_priority(v)
        if p[0] == 0:
            return (1, v)
        return (0, -p[0], -p[1], -p[2])

    return sorted(set(versions), key=order)


def crd_problems(crd: dict[str, Any]) -> list[FieldError]:
    """The apiextensions validation a CRD most often fails; not every rule the real one has."""
    errs: list[FieldError] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    plural = names.get("plural", "")
    name = (crd.get("metadata") or {}).get("name", "")
    if not group:
        errs.append(required("spec.group"))
    if not plural:
        errs.append(required("spec.names.plural"))
    if not names.get("kind"):
        errs.append(required("spec.names.kind"))
    if name != f"{plural}.{group}":
        errs.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.append(not_supported("spec.scope", spec.get("scope", ""), ["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions:
        errs.append(invalid("spec.versions", versions, "must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        errs.append(invalid("spec.versions", versions, "must have exactly one version marked as storage version"))
    for i, v in enumerate(versions):
        if not (v.get("schema") or {}).get("openAPIV3Schema"):
            errs.append(required(f"spec.versions[{i}].schema.openAPIV3Schema", "schemas are required"))
    return errs


def resources_from_crd(crd: dict[str, Any]) -> list[ResourceInfo]:
    """One ResourceInfo per served version. Raises cel.CelCompileError for rules celpy rejects."""
    spec = crd["spec"]
    names = spec["names"]
    out = []
    for v in spec["versions"]:
        if not v.get("served", True):
            continue
        raw_schema = (v.get("schema") or {}).get("openAPIV3Schema") or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        selectable = {s["jsonPath"].lstrip(".") for s in v.get("selectableFields") or [] if "jsonPath" in s}
        out.append(
            ResourceInfo(
                group=spec["group"],
                version=v["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec["scope"] == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in ((v.get("subresources") or {})),
                custom=True,
                tracks_generation=True,
                field_selectors=BASE_FIELDS | frozenset(selectable),
                schema=StructuralSchema.build(raw_schema),
            )
        )
    return out


def crd_status(crd: dict[str, Any], now: str) -> dict[str, Any]:
    """The status the apiextensions controllers would have written once the CRD is served."""
    spec = crd["spec"]
    names = dict(spec["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    conditions = [
        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
         "message": "no conflicts found"},
        {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
         "message": "the initial names have been accepted"},
    ]
    storage = [v["name"] for v in spec["versions"] if v.get("storage")]
    return {"conditions": conditions, "acceptedNames": names, "storedVersions": storage}


def default_crd(crd: dict[str, Any]) -> None:
    """Defaults the apiserver applies to a CRD (conversion strategy, listKind, singular)."""
    spec = crd.setdefault("spec", {})
    spec.setdefault("conversion", {"strategy": "None"})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("listKind", names["kind"] + "List")
        names.setdefault("singular", names["kind"].lower())
