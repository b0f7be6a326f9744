"""Objects, resourceVersions and the write semantics of the apiserver's generic registry.

Everything here is synchronous and runs on the emulator's event loop, so a write is atomic
without locks. Stored objects are snapshots: a write builds a new dict and replaces the old
one, so watch events and responses can share them without copying.

Semantics follow ``k8s.io/apiserver/pkg/registry/generic/registry.Store`` and the custom
resource strategies: one global resourceVersion counter; ``generation`` for CRs/CRDs bumped
when anything but metadata (and status, with a status subresource) changes, and when
deletionTimestamp is set; status subresource split; finalizers and graceful deletion;
no-op writes neither bump the resourceVersion nor emit events.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import errors as E
from . import managedfields as mf
from . import pods
from .cel import CelCompileError
from .collector import FOREGROUND, ORPHAN, GarbageCollector
from .metadata import finalizers_added_while_deleting, meta_problems
from .resources import (
    BUILTINS,
    CRD_GROUP,
    ResourceInfo,
    crd_problems,
    crd_status,
    default_crd,
    resources_from_crd,
)
from .schema import rules_after
from .selectors import Matcher
from .watch import Change, WatchHub

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_GENERATE_ATTEMPTS = 8
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
RETURNS_DELETED = frozenset({"/pods"})  # registries with ReturnDeletedObject: the object, not a Status


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WriteResult:
    """What a write answers: the object (or a Status dict), the HTTP code, warnings."""

    body: dict[str, Any]
    code: int = 200
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Author:
    """Who writes, for managedFields: the field manager and, for a server-side apply, what was applied."""

    manager: str
    applied: dict[str, Any] | None = None
    force: bool = False


class Store:
    def __init__(self, *, watch_history: int) -> None:
        self.rv = 1
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.hub = WatchHub(history=watch_history, current_rv=lambda: self.rv)
        self._by_gvr: dict[tuple[str, str, str], ResourceInfo] = {}
        self._ns_counts: Counter[str] = Counter()
        self.gc = GarbageCollector(self)
        for info in BUILTINS:
            self._register(info)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.info("", "v1", "namespaces"), "", {"metadata": {"name": ns}})

    # ------------------------------------------------------------------ registry
    def _register(self, info: ResourceInfo) -> None:
        self._by_gvr[(info.group, info.version, info.plural)] = info
        self.objects.setdefault(info.key, {})

    def info(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_gvr.get((group, version, plural))

    def resources(self) -> list[ResourceInfo]:
        return list(self._by_gvr.values())

    def add_crd(self, crd: dict[str, Any]) -> None:
        """Register a CRD given at construction (stored like one created through the API)."""
        result = self.create(self.info(CRD_GROUP, "v1", "customresourcedefinitions"), "", crd)
        del result

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        group = crd["spec"]["group"]
        plural = crd["spec"]["names"]["plural"]
        for key in [k for k, i in self._by_gvr.items() if i.group == group and i.plural == plural]:
            del self._by_gvr[key]
        for info in resources_from_crd(crd):
            self._register(info)
        self._redefault(f"{group}/{plural}")

    def _unserve_crd(self, crd: dict[str, Any]) -> None:
        group = crd["spec"]["group"]
        plural = crd["spec"]["names"]["plural"]
        for key in [k for k, i in self._by_gvr.items() if i.group == group and i.plural == plural]:
            del self._by_gvr[key]
        self.objects.pop(f"{group}/{plural}", None)
        self.hub.forget(f"{group}/{plural}")

    def _redefault(self, key: str) -> None:
        """Defaults of a changed schema show on read, as storage-version defaulting does."""
        info = self.storage_info(key)
        if info is None or info.schema is None:
            return
        for k, obj in list(self.objects.get(key, {}).items()):
            new = copy.deepcopy(obj)
            info.schema.default(new)
            if new != obj:
                self.objects[key][k] = new

    def storage_info(self, key: str) -> ResourceInfo | None:
        for info in self._by_gvr.values():
            if info.key == key:
                return info
        return None

    def info_for_kind(self, group: str, kind: str) -> ResourceInfo | None:
        """The resource serving ``kind`` in ``group`` (any version): how owner references are resolved."""
        for info in self._by_gvr.values():
            if info.group == group and info.kind == kind:
                return info
        return None

    # ------------------------------------------------------------------ reads
    def get(self, info: ResourceInfo, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects[info.key].get((ns, name))
        if obj is None:
            raise E.not_found(info.target, name)
        return self.present(info, obj)

    @staticmethod
    def present(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("apiVersion") != info.api_version:
            return {**obj, "apiVersion": info.api_version}
        return obj

    def list(self, info: ResourceInfo, ns: str | None, match: Matcher | None, *, limit: int, start: str,
             ) -> tuple[list[dict[str, Any]], str, int | None]:
        """Items sorted like etcd keys; returns (items, last key if truncated, remaining)."""
        pool = self.objects[info.key]
        keys = sorted(k for k in pool if ns is None or k[0] == ns)
        if start:
            keys = [k for k in keys if _key(k) > start]
        items: list[dict[str, Any]] = []
        last = ""
        remaining: int | None = None
        for idx, k in enumerate(keys):
            obj = pool[k]
            if match is not None and not match(obj):
                continue
            if limit and len(items) >= limit:
                last = _key(_prev_key(items))
                remaining = len(keys) - idx if match is None else None
                break
            items.append(obj)
        return [self.present(info, o) for o in items], last, remaining

    def count(self, key: str) -> int:
        return len(self.objects.get(key, ()))

    # ------------------------------------------------------------------ writes
    def _commit(self, info: ResourceInfo, type_: str, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        self.rv += 1
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        key = (ns, meta["name"])
        stored = {**obj, "metadata": {**meta, "resourceVersion": str(self.rv)}}
        pool = self.objects[info.key]
        if type_ == "DELETED":
            pool.pop(key, None)
            if ns:
                self._ns_counts[ns] -= 1
        else:
            if type_ == "ADDED" and ns:
                self._ns_counts[ns] += 1
            pool[key] = stored
        self.hub.publish(info.key, Change(self.rv, type_, ns, stored, old))
        self.gc.observe(info.key, type_, stored, old)
        return stored

    def _check_namespace(self, info: ResourceInfo, ns: str, name: str) -> None:
        if not info.namespaced:
            return
        nso = self.objects["/namespaces"].get(("", ns))
        if nso is None:
            raise E.not_found(E.Target("", "namespaces", "Namespace"), ns)
        if nso["metadata"].get("deletionTimestamp"):
            raise E.forbidden_error(
                info.target, name,
                f"unable to create new content in namespace {ns} because it is being terminated",
                [{"reason": "NamespaceTerminating", "message": f"namespace {ns} is being terminated",
                  "field": "metadata.namespace"}],
            )

    def _decode(self, info: ResourceInfo, ns: str, body: Any, *, url_name: str | None) -> dict[str, Any]:
        """Type and scope checks the request decoder and handler do before the registry."""
        if not isinstance(body, dict):
            raise E.bad_request(f"json: cannot unmarshal {type(body).__name__} into Go value of type map[string]interface {{}}")
        obj = copy.deepcopy(body)
        if info.custom or "kind" in obj or "apiVersion" in obj:
            if not obj.get("kind"):
                raise E.bad_request(f"Object 'Kind' is missing in '{json.dumps(body, separators=(',', ':'))}'")
            if obj.get("apiVersion") != info.api_version:
                if info.custom or obj.get("apiVersion"):
                    raise E.bad_request(
                        f"the API version in the data ({obj.get('apiVersion', '')}) does not match the expected "
                        f"API version ({info.api_version})")
            if obj["kind"] != info.kind:
                raise E.bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind ({info.kind})")
        obj["apiVersion"] = info.api_version
        obj["kind"] = info.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise E.bad_request("metadata must be an object")
        if info.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if url_name is not None and meta.get("name", "") != url_name:
            raise E.bad_request(f"the name of the object ({meta.get('name', '')}) does not match the name on the URL ({url_name})")
        return obj

    def _normalize(self, info: ResourceInfo, obj: dict[str, Any], *, field_validation: str) -> list[str]:
        """What decoding does to a custom resource: prune unknown fields, apply defaults. Returns warnings."""
        warnings: list[str] = []
        if info.custom and info.schema is not None:
            pruned = sorted(info.schema.prune(obj))  # the apiserver reports them sorted
            if pruned:
                if field_validation == "Strict":
                    unknown = ", ".join(f'unknown field "{p}"' for p in pruned)
                    raise E.bad_request(
                        f"{info.kind} in version \"{info.version}\" cannot be handled as a {info.kind}: "
                        f"strict decoding error: {unknown}")
                if field_validation != "Ignore":
                    warnings += [f'unknown field "{p}"' for p in pruned]
            info.schema.default(obj)
        if info.key == "/pods":
            pods.default(obj)
        return warnings

    def _validate(self, info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None, *, subresource: str) -> None:
        """The strategy's validation (ObjectMeta, finalizers while deleting, uid, schema, CEL, CRDs)."""
        name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "")
        errs: list[E.FieldError] = []
        if old is None or subresource == "":
            errs += meta_problems(obj["metadata"], rule=info.name_rule)
        if old is not None and old["metadata"].get("deletionTimestamp"):
            problem = finalizers_added_while_deleting(old, obj)
            if problem is not None:
                errs.append(problem)
        if old is not None and obj["metadata"].get("uid") and obj["metadata"]["uid"] != old["metadata"].get("uid"):
            errs.append(E.invalid("metadata.uid", obj["metadata"]["uid"], "field is immutable"))
        if info.custom and info.schema is not None:
            schema_errs = info.schema.validate(obj)
            errs += schema_errs
            if info.schema.has_rules:
                note = rules_after(errs)
                errs += [note] if note is not None else info.schema.validate_rules(obj, old)
        if info.key == "/pods":
            errs += pods.problems(obj, old, subresource=subresource)
        if info.key == f"{CRD_GROUP}/customresourcedefinitions":
            errs += crd_problems(obj)
            if not errs:
                try:
                    resources_from_crd(obj)
                except CelCompileError as e:
                    errs.append(E.invalid("spec.validation.openAPIV3Schema", "", str(e)))
        if errs:
            raise E.invalid_object(info.target, name, errs)

    def _track(self, info: ResourceInfo, old: dict[str, Any] | None, new: dict[str, Any], *, author: Author | None,
               subresource: str) -> list[dict[str, Any]] | None:
        """The managedFields ``new`` gets (see managedfields.py); internal writes keep what ``old`` had."""
        if author is None:
            return (old or {}).get("metadata", {}).get("managedFields")
        reset: mf.PathSet = frozenset()
        if info.status_subresource:
            reset = frozenset({("f:spec",)}) if subresource else frozenset({("f:status",)})
        write = mf.Write(manager=author.manager, api_version=info.api_version, subresource=subresource, reset=reset,
                         now=now_rfc3339())
        schema = info.schema.raw if info.schema is not None else mf.BUILTIN_SCHEMAS.get(info.key)
        if author.applied is None:
            return mf.update(old, new, write, schema)
        try:
            return mf.apply(old, new, author.applied, write, schema, force=author.force)
        except mf.ApplyConflict as e:
            raise E.ApiError(409, "Conflict", str(e), {"causes": [
                {"reason": "FieldManagerConflict", "message": f"conflict with {mf.print_manager(entry)}",
                 "field": mf.path_string(path)} for entry, path in e.conflicts]}) from None
        except mf.FieldsError as e:
            raise E.internal(f"failed to update managed fields: {e}") from None

    def create(self, info: ResourceInfo, ns: str, body: Any, *, dry_run: bool = False,
               field_validation: str = "Warn", author: Author | None = None) -> WriteResult:
        obj = self._decode(info, ns, body, url_name=None)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise E.bad_request("resourceVersion should not be set on objects to be created")
        self._check_namespace(info, ns, meta.get("name") or "")
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                  "selfLink"):
            meta.pop(k, None)
        if info.key == f"{CRD_GROUP}/customresourcedefinitions":
            default_crd(obj)
        warnings = self._normalize(info, obj, field_validation=field_validation)
        managed = self._track(info, None, obj, author=author, subresource="")
        meta.pop("managedFields", None)
        if info.status_subresource and info.custom:
            obj.pop("status", None)
        if info.key == "/pods":
            obj["status"] = pods.initial_status(obj)
        if info.key == "/namespaces":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        generated = not meta.get("name") and bool(meta.get("generateName"))
        if generated:
            meta["name"] = _generate(meta["generateName"])
        self._validate(info, obj, None, subresource="")
        pool = self.objects[info.key]
        attempts = 1
        while (ns if info.namespaced else "", meta["name"]) in pool:
            if not generated or attempts >= _GENERATE_ATTEMPTS:
                raise E.already_exists(info.target, meta["name"])
            meta["name"] = _generate(meta["generateName"])
            attempts += 1
        now = now_rfc3339()
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now
        if info.tracks_generation:
            meta["generation"] = 1
        if managed:
            meta["managedFields"] = managed
        if info.key == f"{CRD_GROUP}/customresourcedefinitions":
            obj["status"] = crd_status(obj, now)
        obj = {k: obj[k] for k in ("apiVersion", "kind", "metadata", *[k for k in obj if k not in ("apiVersion", "kind", "metadata")])}
        if dry_run:
            return WriteResult({**obj, "metadata": {**meta, "resourceVersion": str(self.rv)}}, 201, tuple(warnings))
        stored = self._commit(info, "ADDED", obj, None)
        if info.key == f"{CRD_GROUP}/customresourcedefinitions":
            self._serve_crd(stored)
        return WriteResult(self.present(info, stored), 201, tuple(warnings))

    def update(self, info: ResourceInfo, ns: str, name: str, body: Any, *, subresource: str = "",
               dry_run: bool = False, field_validation: str = "Warn", is_patch: bool = False,
               author: Author | None = None) -> WriteResult:
        key = (ns if info.namespaced else "", name)
        old = self.objects[info.key].get(key)
        if old is None:
            raise E.not_found(info.target, name)
        obj = self._decode(info, ns, body, url_name=name)
        meta = obj["metadata"]
        rv = meta.get("resourceVersion")
        if rv:
            if rv != old["metadata"]["resourceVersion"]:
                raise E.conflict(info.target, name, E.MODIFIED)
        elif not is_patch and info.custom:
            raise E.invalid_object(info.target, name, [E.invalid("metadata.resourceVersion", _Hex0(), "must be specified for an update")])
        warnings = self._normalize(info, obj, field_validation=field_validation)
        managed = self._track(info, old, obj, author=author, subresource=subresource)
        obj = self._merge_subresource(info, old, obj, subresource)
        meta = obj["metadata"]
        om = old["metadata"]
        for k in ("creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if k in om:
                meta[k] = om[k]
            else:
                meta.pop(k, None)
        meta.setdefault("uid", om["uid"])
        meta.pop("selfLink", None)
        meta.pop("managedFields", None)
        if managed:
            meta["managedFields"] = managed
        meta["resourceVersion"] = om["resourceVersion"]
        self._validate(info, obj, old, subresource=subresource)
        if info.key == f"{CRD_GROUP}/customresourcedefinitions" and subresource == "":
            obj["status"] = crd_status(obj, now_rfc3339()) if obj.get("spec") != old.get("spec") else old.get("status")
        if info.tracks_generation and _content(info, obj) != _content(info, old):
            meta["generation"] = om.get("generation", 1) + 1
        obj = {k: obj[k] for k in ("apiVersion", "kind", "metadata", *[k for k in obj if k not in ("apiVersion", "kind", "metadata")])}
        if obj == {**old, "apiVersion": info.api_version} or obj == old:
            return WriteResult(self.present(info, old), 200, tuple(warnings))
        if om.get("deletionTimestamp") and not meta.get("finalizers"):
            if dry_run:
                return WriteResult(self.present(info, old), 200, tuple(warnings))
            stored = self._commit(info, "DELETED", old, None)
            self._after_delete(info, stored)
            return WriteResult(self.present(info, stored), 200, tuple(warnings))
        if dry_run:
            return WriteResult(obj, 200, tuple(warnings))
        stored = self._commit(info, "MODIFIED", obj, old)
        if info.key == f"{CRD_GROUP}/customresourcedefinitions" and not stored["metadata"].get("deletionTimestamp"):
            self._serve_crd(stored)
        return WriteResult(self.present(info, stored), 200, tuple(warnings))

    def _merge_subresource(self, info: ResourceInfo, old: dict[str, Any], obj: dict[str, Any], sub: str) -> dict[str, Any]:
        if not info.status_subresource:
            return obj
        if sub == "status":
            merged = copy.deepcopy(old)
            merged["apiVersion"] = info.api_version
            if "status" in obj:
                merged["status"] = obj["status"]
            else:
                merged.pop("status", None)
            merged["metadata"]["resourceVersion"] = obj["metadata"].get("resourceVersion") or old["metadata"]["resourceVersion"]
            return merged
        if "status" in old:
            obj["status"] = copy.deepcopy(old["status"])
        else:
            obj.pop("status", None)
        return obj

    def delete(self, info: ResourceInfo, ns: str, name: str, options: dict[str, Any] | None, *,
               dry_run: bool = False) -> WriteResult:
        key = (ns if info.namespaced else "", name)
        old = self.objects[info.key].get(key)
        if old is None:
            raise E.not_found(info.target, name)
        pre = (options or {}).get("preconditions") or {}
        om = old["metadata"]
        if pre.get("uid") and pre["uid"] != om["uid"]:
            raise E.conflict(info.target, name,
                             f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {om['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != om["resourceVersion"]:
            raise E.conflict(info.target, name,
                             f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                             f"ResourceVersion in object meta: {om['resourceVersion']}")
        if name in IMMORTAL_NAMESPACES and info.key == "/namespaces":
            raise E.forbidden_error(info.target, name, "this namespace may not be deleted")
        finalizers = _finalizers_for_deletion(om.get("finalizers") or [], options or {})
        pending = bool(finalizers) or (info.key == "/namespaces") or \
            (info.key == f"{CRD_GROUP}/customresourcedefinitions" and self._crd_has_objects(old))
        if pending:
            if om.get("deletionTimestamp") and set(finalizers) == set(om.get("finalizers") or []):
                return WriteResult(self.present(info, old))
            obj = copy.deepcopy(old)
            m = obj["metadata"]
            if finalizers or m.get("finalizers"):
                m["finalizers"] = finalizers
            if not m.get("deletionTimestamp"):
                m["deletionTimestamp"] = now_rfc3339()
                m["deletionGracePeriodSeconds"] = 0
                if m.get("generation", 0) > 0:
                    m["generation"] += 1
            if info.key == "/namespaces":
                obj["status"] = {"phase": "Terminating"}
            if dry_run:
                return WriteResult(obj)
            stored = self._commit(info, "MODIFIED", obj, old)
            if info.key == "/namespaces":
                self._terminate_namespace(name)
            elif info.key == f"{CRD_GROUP}/customresourcedefinitions":
                self._terminate_crd(stored)
            current = self.objects[info.key].get(key)
            return WriteResult(self.present(info, current) if current is not None else self.present(info, stored))
        if dry_run:
            return WriteResult(self.present(info, old) if info.key in RETURNS_DELETED else _success(info, old))
        stored = self._commit(info, "DELETED", old, None)
        self._after_delete(info, stored)
        return WriteResult(self.present(info, stored) if info.key in RETURNS_DELETED else _success(info, stored))

    # ------------------------------------------------------- cascading cleanup
    def _after_delete(self, info: ResourceInfo, stored: dict[str, Any]) -> None:
        if info.key == f"{CRD_GROUP}/customresourcedefinitions":
            self._unserve_crd(stored)
            return
        ns = stored["metadata"].get("namespace")
        if ns:
            nso = self.objects["/namespaces"].get(("", ns))
            if nso is not None and nso["metadata"].get("deletionTimestamp") and self._ns_counts[ns] <= 0:
                self._finalize_namespace(nso)
        if info.custom:
            crd = self.objects[f"{CRD_GROUP}/customresourcedefinitions"].get(("", f"{info.plural}.{info.group}"))
            if crd is not None and crd["metadata"].get("deletionTimestamp") and not self.count(info.key):
                self._finalize_crd(crd)

    def _terminate_namespace(self, ns: str) -> None:
        """What the namespace controller does, done at once: delete every object inside."""
        seen: set[str] = set()
        for info in list(self._by_gvr.values()):
            if not info.namespaced or info.key in seen:
                continue
            seen.add(info.key)
            for (ons, name) in [k for k in self.objects.get(info.key, {}) if k[0] == ns]:
                if (ons, name) in self.objects[info.key]:
                    self.delete(info, ns, name, None)
        nso = self.objects["/namespaces"].get(("", ns))
        if nso is not None and self._ns_counts[ns] <= 0:
            self._finalize_namespace(nso)

    def _finalize_namespace(self, nso: dict[str, Any]) -> None:
        info = self.info("", "v1", "namespaces")
        assert info is not None
        if nso["metadata"].get("finalizers"):
            if (nso.get("spec") or {}).get("finalizers"):
                obj = copy.deepcopy(nso)
                obj["spec"]["finalizers"] = []
                self._commit(info, "MODIFIED", obj, nso)
            return
        self._commit(info, "DELETED", nso, None)

    def _crd_has_objects(self, crd: dict[str, Any]) -> bool:
        return bool(self.count(f"{crd['spec']['group']}/{crd['spec']['names']['plural']}"))

    def _terminate_crd(self, crd: dict[str, Any]) -> None:
        key = f"{crd['spec']['group']}/{crd['spec']['names']['plural']}"
        info = self.storage_info(key)
        if info is not None:
            for (ns, name) in list(self.objects.get(key, {})):
                if (ns, name) in self.objects.get(key, {}):
                    self.delete(info, ns, name, None)
        current = self.objects[f"{CRD_GROUP}/customresourcedefinitions"].get(("", crd["metadata"]["name"]))
        if current is not None and not self.count(key):
            self._finalize_crd(current)

    def _finalize_crd(self, crd: dict[str, Any]) -> None:
        info = self.info(CRD_GROUP, "v1", "customresourcedefinitions")
        assert info is not None
        if crd["metadata"].get("finalizers"):
            return
        stored = self._commit(info, "DELETED", crd, None)
        self._unserve_crd(stored)

    def is_terminating_crd(self, info: ResourceInfo) -> bool:
        if not info.custom:
            return False
        crd = self.objects[f"{CRD_GROUP}/customresourcedefinitions"].get(("", f"{info.plural}.{info.group}"))
        return crd is not None and bool(crd["metadata"].get("deletionTimestamp"))


class _Hex0:
    """Prints as Go's ``0x0`` (a nil uint64 pointer shown by %#v) in the rv-required message."""

    def __str__(self) -> str:
        return "0x0"


_POLICIES = ["Foreground", "Background", "Orphan"]


def delete_options_problems(options: dict[str, Any]) -> list[E.FieldError]:
    """ValidateDeleteOptions (apimachinery/pkg/apis/meta/v1/validation)."""
    errs: list[E.FieldError] = []
    policy = options.get("propagationPolicy")
    if options.get("orphanDependents") is not None and policy is not None:
        errs.append(E.invalid("propagationPolicy", policy, "orphanDependents and deletionPropagation cannot be both set"))
    if policy is not None and policy not in _POLICIES:
        errs.append(E.not_supported("propagationPolicy", policy, [*_POLICIES, "nil"]))
    return errs


def _finalizers_for_deletion(finalizers: list[str], options: dict[str, Any]) -> list[str]:
    """deletionFinalizersForGarbageCollection: the object's finalizers with orphan/foregroundDeletion as asked.

    An explicit orphanDependents or propagationPolicy decides; else a GC finalizer already there
    does; else the default, background (nothing to add).
    """
    orphan_flag, policy = options.get("orphanDependents"), options.get("propagationPolicy")
    present = next((f for f in finalizers if f in (ORPHAN, FOREGROUND)), None)
    if orphan_flag is not None:
        orphan, foreground = bool(orphan_flag), False
    elif policy is not None:
        orphan, foreground = policy == "Orphan", policy == "Foreground"
    else:
        orphan, foreground = present == ORPHAN, present == FOREGROUND
    out = [f for f in finalizers if f not in (ORPHAN, FOREGROUND)]
    if orphan:
        out.append(ORPHAN)
    if foreground:
        out.append(FOREGROUND)
    return out


def _key(k: tuple[str, str]) -> str:
    return f"{k[0]}/{k[1]}" if k[0] else k[1]


def _prev_key(items: list[dict[str, Any]]) -> tuple[str, str]:
    m = items[-1]["metadata"]
    return (m.get("namespace", ""), m["name"])


def _content(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    skip = {"metadata", "apiVersion", "kind"}
    if info.status_subresource:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}


def _generate(prefix: str) -> str:
    base = prefix[:58]
    return base + "".join(random.choice(_NAME_CHARS) for _ in range(5))


def _success(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if info.group:
        details["group"] = info.group
    details["kind"] = info.plural
    details["uid"] = obj["metadata"]["uid"]
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start + "\x00"}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError
        return int(data["rv"]), str(data["start"]).rstrip("\x00")
    except Exception:
        raise E.bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)") from None
