"""The HTTP face of the emulator: routing, discovery, list/watch streaming, request stats.

Paths are parsed by hand (``/api/v1/...``, ``/apis/{group}/{version}/...``, optional
``namespaces/{ns}/`` and ``/status``) because resources appear and disappear at run time when
CRDs are created or deleted through the API; a static route table could not follow that.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from multidict import CIMultiDict

from . import errors as E
from . import managedfields as mf
from .access import Access, AccessLog, request_attributes
from .authz import UNCHECKED, Authorizer, Identity, Subject, forbidden, self_subject_access_review, self_subject_review
from .faults import Fault, FaultSet, FaultSpecError
from .patches import (
    PatchApplyError,
    PatchDecodeError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from .resources import CRD_GROUP, ResourceInfo, sort_versions
from .selectors import matcher, parse_field_selector, parse_label_selector
from .store import Author, Store, decode_continue, delete_options_problems, encode_continue, now_rfc3339
from .watch import Watcher

KUBE_VERSION = {"major": "1", "minor": "36", "gitVersion": "v1.36.0-kubeemu", "gitCommit": "kubeemu",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                "compiler": "gc", "platform": "linux/amd64"}
NOT_FOUND = E.ApiError(404, "NotFound", "the server could not find the requested resource", {})
MERGE, JSONPATCH, STRATEGIC, APPLY = (
    "application/merge-patch+json", "application/json-patch+json",
    "application/strategic-merge-patch+json", "application/apply-patch+yaml",
)


_VERBS = {
    ("GET", False): "LIST", ("POST", False): "CREATE", ("DELETE", False): "DELETECOLLECTION",
    ("GET", True): "GET", ("PUT", True): "UPDATE", ("PATCH", True): "PATCH", ("DELETE", True): "DELETE",
}


SSAR = "authorization.k8s.io/selfsubjectaccessreviews"
SSR = "authentication.k8s.io/selfsubjectreviews"
_SUBJECT = web.RequestKey("kubeemu_subject", Subject)  # who made the request
_KUSTOMIZATIONS = frozenset({"kustomization.yaml", "kustomization.yml"})


class CrdLoadError(ValueError):
    """A CRD file given to the emulator cannot be read or is not a CRD."""


def load_crds(sources: Iterable[Path | str | dict[str, Any]]) -> list[dict[str, Any]]:
    """Read CRDs from dicts, files or directories (``*.yaml``, ``*.yml``, ``*.json``, not kustomization.yaml)."""
    out: list[dict[str, Any]] = []
    for src in sources:
        if isinstance(src, dict):
            out.append(src)
            continue
        path = Path(src)
        if path.is_dir():  # a kustomize directory (deploy/crds) also holds its kustomization.yaml
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.name not in _KUSTOMIZATIONS)
        elif path.exists():
            files = [path]
        else:
            raise CrdLoadError(f"CRD file not found: {path}")
        for f in files:
            try:
                docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise CrdLoadError(f"{f}: invalid YAML: {str(e).splitlines()[0]}") from None
            for d in docs:
                if not isinstance(d, dict) or d.get("kind") != "CustomResourceDefinition":
                    raise CrdLoadError(f"{f}: not a CustomResourceDefinition (kind={d.get('kind') if isinstance(d, dict) else None!r})")
                out.append(d)
    return out


def _author(request: web.Request, options_kind: str) -> Author:
    """The field manager of a write: ``fieldManager`` (validated like the apiserver), else from the User-Agent."""
    manager = request.query.get("fieldManager", "")
    errors: list[E.FieldError] = []
    for problem in mf.field_manager_problems(manager):
        if problem == "too-long":
            errors.append(E.too_long("fieldManager", "", mf.MAX_MANAGER_LENGTH))
        else:
            errors.append(E.invalid("fieldManager", manager, problem))
    if errors:
        raise E.invalid_object(E.Target("meta.k8s.io", "", options_kind), "", errors)
    return Author(manager or mf.manager_from_user_agent(request.headers.get("User-Agent", "")))


async def _delete_options(request: web.Request) -> dict[str, Any]:
    """DeleteOptions from the body when there is one, else from the query (as the apiserver decodes them)."""
    raw = await request.read()
    if raw.strip():
        try:
            options = json.loads(raw)
        except ValueError as e:
            raise E.bad_request(str(e)) from None
        options = options if isinstance(options, dict) else {}
    else:
        q = request.query
        options = {k: q[k] for k in ("propagationPolicy",) if k in q}
        if "orphanDependents" in q:
            options["orphanDependents"] = q["orphanDependents"] in ("true", "1")
    errors = delete_options_problems(options)
    if errors:
        raise E.invalid_object(E.Target("meta.k8s.io", "", "DeleteOptions"), "", errors)
    return options


def _json(body: Any, status: int = 200, warnings: Sequence[str] = (), *, headers: dict[str, str] | None = None) -> web.Response:
    headers = CIMultiDict(headers or {})
    for w in warnings:
        headers.add("Warning", f"299 - {json.dumps(w)}")
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type="application/json", headers=headers)


class KubeEmulator:
    """An in-process Kubernetes API server for kopf and the official client (see package doc)."""

    def __init__(self, crds: Iterable[Path | str | dict[str, Any]] = (), *, host: str = "127.0.0.1", port: int = 0,
                 watch_history: int = 1000, bookmark_interval: float = 30.0,
                 identities: Iterable[Identity] | None = None, faults: Iterable[Fault | str] = ()) -> None:
        self._crds = load_crds(crds)
        self.host = host
        self.port = port
        self.watch_history = watch_history
        self.bookmark_interval = bookmark_interval
        self.store: Store | None = None
        self._runner: web.AppRunner | None = None
        self._bookmarker: asyncio.Task[None] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._stats: Counter[tuple[str, str, int]] = Counter()
        self._access = AccessLog()
        self._authorizer: Authorizer | None = None
        self.set_identities(identities)
        self.faults = FaultSet()
        for fault in faults:
            self.add_fault(fault)
        self.url = ""

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.store = Store(watch_history=self.watch_history)
        for crd in self._crds:
            try:
                self.store.add_crd(crd)
            except E.ApiError as e:
                raise CrdLoadError(f"CRD {crd.get('metadata', {}).get('name')!r} rejected: {e.message}") from None
        app = web.Application(client_max_size=3 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._bookmarker = asyncio.get_running_loop().create_task(self._bookmarks())
        self._collector = asyncio.get_running_loop().create_task(self.store.gc.run(), name="kubeemu garbage collector")

    async def stop(self) -> None:
        for task in (self._bookmarker, self._collector):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._bookmarker = self._collector = None
        if self.store is not None:
            self.store.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _bookmarks(self) -> None:
        while True:
            await asyncio.sleep(self.bookmark_interval)
            if self.store is not None:
                self.store.hub.bookmark_all()

    def stats(self) -> dict[str, Any]:
        """Request counts by (verb, resource, code), plus a few gauges. O(distinct keys)."""
        store = self.store
        return {
            "requests": dict(self._stats),
            "total": sum(self._stats.values()),
            "watchers": store.hub.watcher_count() if store else 0,
            "resourceVersion": store.rv if store else 0,
            "accessLogDropped": self._access.dropped,
            "faults": self.faults.counts(),
            "collector": {"deleted": store.gc.deleted if store else 0, "orphaned": store.gc.orphaned if store else 0},
        }

    def set_identities(self, identities: Iterable[Identity] | None) -> None:
        """Turn authentication and RBAC on with these identities, or off (None: everything allowed)."""
        self._authorizer = None if identities is None else Authorizer(identities)

    def identities(self) -> tuple[Identity, ...] | None:
        """The identities in force (None: RBAC off), so a caller can add one to them with ``set_identities``."""
        return None if self._authorizer is None else tuple(self._authorizer.identities.values())

    def add_fault(self, fault: Fault | str) -> int:
        """Install a fault (a spec string, see faults.py); returns its id. Call on the emulator's loop once started
        (``ServerThread.run_sync``) or over HTTP (``POST /_emu/faults``)."""
        return self.faults.add(fault)

    def remove_fault(self, fault_id: int) -> bool:
        return self.faults.remove(fault_id)

    def clear_faults(self) -> None:
        self.faults.clear()

    def access_log(self) -> frozenset[Access]:
        """Every distinct (User-Agent, RBAC attributes) seen so far; see ``access.py``. O(distinct)."""
        return self._access.snapshot()

    # ------------------------------------------------------------ dispatch
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/_emu/"):
            return await self._admin(request)
        label = [request.method, ""]  # _route fills in the verb and resource as soon as it knows them
        access = request_attributes(request.method, request.path, request.query,
                                    user_agent=request.headers.get("User-Agent", ""))
        self._access.record(access)
        code = 500
        try:
            self._authorize(request, access)
            resp = await self._route(request, label)
            code = resp.status
            return resp
        except E.ApiError as e:
            code = e.code
            return _json(e.status(), e.code, headers=e.headers)
        except asyncio.CancelledError:
            code = 499
            raise
        finally:
            self._stats[(label[0], label[1], code)] += 1

    async def _admin(self, request: web.Request) -> web.Response:
        """``/_emu/faults``: list (GET), add one spec (POST, the spec as the body), clear (DELETE), or
        ``DELETE /_emu/faults/ID``. For test drivers in other processes; not authenticated, not recorded."""
        parts = [p for p in request.path.split("/") if p]
        if parts[:2] != ["_emu", "faults"] or len(parts) > 3:
            return _json({"error": "not found; see /_emu/faults"}, 404)
        if len(parts) == 3:
            if request.method != "DELETE" or not parts[2].isdigit():
                return _json({"error": "DELETE /_emu/faults/ID"}, 405)
            return _json({"removed": self.remove_fault(int(parts[2]))})
        if request.method == "GET":
            return _json({"faults": self.faults.listing(), "fired": self.faults.counts()})
        if request.method == "POST":
            try:
                return _json({"id": self.add_fault((await request.text()).strip())}, 201)
            except FaultSpecError as e:
                return _json({"error": str(e)}, 400)
        if request.method == "DELETE":
            self.clear_faults()
            return _json({"cleared": True})
        return _json({"error": "GET, POST or DELETE"}, 405)

    def _authorize(self, request: web.Request, access: Access) -> None:
        """Authenticate and authorize (when identities are configured); remember who asked, for SSARs."""
        authorizer = self._authorizer
        if authorizer is None:
            request[_SUBJECT] = UNCHECKED
            return
        subject = authorizer.authenticate(request.headers.get("Authorization", ""))
        request[_SUBJECT] = subject
        if not authorizer.decide(subject.user, subject.rules or (), access).allowed:
            raise forbidden(subject.user, access)

    async def _route(self, request: web.Request, label: list[str]) -> web.StreamResponse:
        assert self.store is not None
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if parts in (["healthz"], ["readyz"], ["livez"]):
            label[1] = "healthz"
            return web.Response(text="ok")
        if parts == ["version"]:
            label[1] = "version"
            return _json(KUBE_VERSION)
        if parts == ["api"]:
            label[1] = "discovery"
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]})
        if parts == ["apis"]:
            label[1] = "discovery"
            return _json(self._group_list())
        if len(parts) == 2 and parts[0] == "apis":
            group = self._group(parts[1])
            if group is None:
                raise NOT_FOUND
            label[1] = "discovery"
            return _json({"kind": "APIGroup", "apiVersion": "v1", **group})
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            infos = [i for i in self.store.resources() if i.group == group and i.version == version]
            if not infos:
                raise NOT_FOUND
            body: dict[str, Any] = {"kind": "APIResourceList"}
            if group:
                body["apiVersion"] = "v1"
            body["groupVersion"] = f"{group}/{version}" if group else version
            body["resources"] = [r for i in sorted(infos, key=lambda i: i.plural) for r in i.discovery()]
            label[1] = "discovery"
            return _json(body)
        if len(parts) >= 3 and parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise NOT_FOUND
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise NOT_FOUND
        info = self.store.info(group, version, rest[0])
        if info is None:
            raise NOT_FOUND
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if (ns is not None and not info.namespaced) or (info.namespaced and ns is None and name is not None):
            raise NOT_FOUND
        if sub and not ((sub == "status" and info.status_subresource) or (sub == "finalize" and info.key == "/namespaces")):
            raise NOT_FOUND
        if sub == "finalize":
            sub = "status"
        resource = info.plural + (f"/{sub}" if sub else "")
        label[1] = resource
        q = request.query
        verb = _VERBS.get((method, name is not None), method)
        if verb == "LIST" and q.get("watch") in ("true", "1"):
            verb = "WATCH"
        label[0] = verb
        fault = self.faults.request(verb.lower(), info.group, resource, ns or "", name or "")
        if fault is not None:
            raise fault.error(info.target, name or "")
        if info.key in (SSAR, SSR):
            if verb != "CREATE":
                raise E.method_not_allowed("the server does not allow this method on the requested resource")
            subject, body = request[_SUBJECT], await self._body(request)
            if info.key == SSR:
                return _json(self_subject_review(body, subject=subject, now=now_rfc3339()), 201)
            return _json(self_subject_access_review(body, user=subject.user, rules=subject.rules), 201)
        if name is None and (ns is not None or not info.namespaced or verb in ("LIST", "WATCH")):
            if verb == "WATCH":
                return await self._watch(request, info, ns)
            if verb == "LIST":
                return self._list(info, ns, q)
            if verb == "CREATE":
                author = _author(request, "CreateOptions")
                body = await self._body(request)
                self._refuse_terminating(info, "create")
                r = self.store.create(info, ns or "", body, dry_run=self._dry_run(q),
                                      field_validation=q.get("fieldValidation", "Warn"), author=author)
                return _json(r.body, r.code, r.warnings)
            if verb == "DELETECOLLECTION":
                return self._delete_collection(info, ns or "", q, await _delete_options(request))
        elif name is not None:
            nsv = ns or ""
            if verb == "GET":
                return _json(self.store.get(info, nsv, name))
            if verb == "UPDATE":
                author = _author(request, "UpdateOptions")
                body = await self._body(request)
                r = self.store.update(info, nsv, name, body, subresource=sub, dry_run=self._dry_run(q),
                                      field_validation=q.get("fieldValidation", "Warn"), author=author)
                return _json(r.body, r.code, r.warnings)
            if verb == "PATCH":
                r = await self._patch(request, info, nsv, name, sub)
                return _json(r.body, r.code, r.warnings)
            if verb == "DELETE" and not sub:
                options = await _delete_options(request)
                r = self.store.delete(info, nsv, name, options, dry_run=self._dry_run(q))
                return _json(r.body, r.code)
        raise E.method_not_allowed("the server does not allow this method on the requested resource")

    # ------------------------------------------------------------ helpers
    def _refuse_terminating(self, info: ResourceInfo, verb: str) -> None:
        assert self.store is not None
        if self.store.is_terminating_crd(info):
            raise E.method_not_allowed(f"{verb} not allowed while custom resource definition is terminating")

    @staticmethod
    def _dry_run(q: Any) -> bool:
        values = q.getall("dryRun", [])
        for v in values:
            if v != "All":
                raise E.bad_request(f"Invalid dry run value: {v!r}; supported values: \"All\"") from None
        return bool(values)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.content_type
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise E.bad_request(f"couldn't get version/kind; json parse error: {e}") from None

    def _group_list(self) -> dict[str, Any]:
        assert self.store is not None
        groups = sorted({i.group for i in self.store.resources() if i.group}, key=lambda g: (g != CRD_GROUP, g))
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in groups]}

    def _group(self, group: str) -> dict[str, Any] | None:
        assert self.store is not None
        versions = sort_versions(i.version for i in self.store.resources() if i.group == group)
        if not group or not versions:
            return None
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": vs, "preferredVersion": vs[0]}

    def _selectors(self, info: ResourceInfo, q: Any) -> Any:
        labels = parse_label_selector(q.get("labelSelector"))
        fields = parse_field_selector(q.get("fieldSelector"), allowed=info.field_selectors, custom=info.custom)
        return matcher(labels, fields), labels.empty and fields.empty

    def _list(self, info: ResourceInfo, ns: str | None, q: Any) -> web.Response:
        assert self.store is not None
        match, unfiltered = self._selectors(info, q)
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError:
            raise E.bad_request(f"limit: Invalid value: {q.get('limit')!r}") from None
        start, rv = "", self.store.rv
        if q.get("continue"):
            rv, start = decode_continue(q["continue"])
        items, last, remaining = self.store.list(info, ns, match, limit=max(limit, 0), start=start)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if last:
            meta["continue"] = encode_continue(rv, last)
            if unfiltered and remaining is not None:
                meta["remainingItemCount"] = remaining
        if not info.custom:
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in items]
        return _json({"apiVersion": info.api_version, "items": items, "kind": f"{info.kind}List", "metadata": meta})

    def _delete_collection(self, info: ResourceInfo, ns: str, q: Any, options: dict[str, Any]) -> web.Response:
        assert self.store is not None
        match, _ = self._selectors(info, q)
        items, _, _ = self.store.list(info, ns if info.namespaced else None, match, limit=0, start="")
        deleted = []
        for obj in items:
            m = obj["metadata"]
            r = self.store.delete(info, m.get("namespace", ""), m["name"], options, dry_run=self._dry_run(q))
            deleted.append(r.body if r.body.get("kind") != "Status" else obj)
        return _json({"apiVersion": info.api_version, "items": deleted, "kind": f"{info.kind}List",
                      "metadata": {"resourceVersion": str(self.store.rv)}})

    async def _patch(self, request: web.Request, info: ResourceInfo, ns: str, name: str, sub: str) -> Any:
        assert self.store is not None
        q = request.query
        ctype = request.content_type
        accepted = [JSONPATCH, MERGE] + ([] if info.custom else [STRATEGIC]) + [APPLY]
        if ctype not in accepted:
            raise E.unsupported_media_type(accepted)
        author = _author(request, "PatchOptions")
        raw = await request.read()
        fv = q.get("fieldValidation", "Warn")
        if ctype == APPLY:
            return self._apply(info, ns, name, sub, raw, q, fv)
        try:
            patch = json.loads(raw)
        except ValueError as e:
            raise E.bad_request(str(e)) from None
        current = self.store.get(info, ns, name)
        try:
            if ctype == JSONPATCH:
                patched = json_patch(current, patch)
            elif ctype == MERGE:
                if not isinstance(patch, dict):
                    raise E.bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
                patched = merge_patch(current, patch)
            else:
                patched = strategic_merge_patch(current, patch)
        except PatchDecodeError as e:
            raise E.bad_request(str(e)) from None
        except PatchApplyError:
            # v1.36 says no more than this, whatever failed (a test op, a missing path): details are empty.
            raise E.ApiError(422, "Invalid", "the server rejected our request due to an error in our request", {}) from None
        return self.store.update(info, ns, name, patched, subresource=sub, dry_run=self._dry_run(q),
                                 field_validation=fv, is_patch=True, author=author)

    def _apply(self, info: ResourceInfo, ns: str, name: str, sub: str, raw: bytes, q: Any, fv: str) -> Any:
        """Server-side apply, minimal: create if absent, else merge the applied config in.

        managedFields are kept as the real one keeps them (the applier owns exactly what it
        applied, conflicts with other managers are 409 unless ``force=true``), but the object is
        merged like a merge patch: associative lists are replaced, not merged by key, and fields
        the applier stopped applying are not removed.
        """
        assert self.store is not None
        if not q.get("fieldManager"):
            raise E.ApiError(422, "Invalid",
                             'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
                             {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                                 {"reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
                                  "field": "fieldManager"}]})
        try:
            applied = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise E.bad_request(f"error decoding YAML: {e}") from None
        if not isinstance(applied, dict):
            raise E.bad_request("invalid object type: expected an object")
        meta = applied.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise E.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if isinstance(meta, dict) and meta.get("managedFields") is not None:
            raise E.bad_request("metadata.managedFields must be nil")
        author = Author(q["fieldManager"], applied=applied, force=q.get("force") in ("true", "1"))
        key = (ns if info.namespaced else "", name)
        if key not in self.store.objects[info.key]:
            if sub:
                raise E.not_found(info.target, name)
            applied.setdefault("metadata", {})["name"] = name
            return self.store.create(info, ns, copy.deepcopy(applied), dry_run=self._dry_run(q), field_validation=fv,
                                     author=author)
        current = self.store.get(info, ns, name)
        return self.store.update(info, ns, name, merge_patch(current, applied), subresource=sub,
                                 dry_run=self._dry_run(q), field_validation=fv, is_patch=True, author=author)

    async def _watch(self, request: web.Request, info: ResourceInfo, ns: str | None) -> web.StreamResponse:
        assert self.store is not None
        q = request.query
        match, _ = self._selectors(info, q)
        rv_text = q.get("resourceVersion", "")
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else random.uniform(1800, 3600)
            since = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError:
            raise E.bad_request(f"resourceVersion: Invalid value: {rv_text!r}: must be an integer") from None
        watcher = Watcher(key=info.key, namespace=ns if info.namespaced else None, match=match,
                          api_version=info.api_version, kind=info.kind,
                          bookmarks=q.get("allowWatchBookmarks") in ("true", "1"))
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        faults, where = self.faults, (info.group, info.plural, ns or "")
        try:
            if since is not None and faults.watch_gone(*where):
                raise E.expired(f"too old resource version: {since} ({self.store.rv})")
            if since is None:
                items, _, _ = self.store.list(info, watcher.namespace, match, limit=0, start="")
                for obj in items:
                    watcher.put(json.dumps({"type": "ADDED", "object": obj}, separators=(",", ":")).encode() + b"\n")
            self.store.hub.subscribe(watcher, since=since)
        except E.ApiError as e:
            if e.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(json.dumps({"type": "ERROR", "object": e.status()}, separators=(",", ":")).encode() + b"\n")
            await resp.write_eof()
            return resp
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        lifetime: tuple[float, bool] | None = None
        cut_at, faults_seen = deadline, -1
        cut: bool | None = None  # set when a fault ends the stream: True aborts the connection, False ends it cleanly
        try:
            while cut is None:
                if faults.version != faults_seen:  # at open, and when faults are added or removed while it is open
                    faults_seen, lifetime = faults.version, faults.watch_lifetime(*where)
                    cut_at = loop.time() + lifetime[0] if lifetime else deadline
                left = min(deadline, cut_at) - loop.time()
                if left <= 0:
                    if lifetime is not None and cut_at < deadline:
                        cut = lifetime[1]
                    break
                try:
                    line = await asyncio.wait_for(watcher.queue.get(), timeout=min(left, 1.0))
                except asyncio.TimeoutError:
                    continue
                if line is None:
                    break
                chunk = [line]
                while not watcher.queue.empty():
                    more = watcher.queue.get_nowait()
                    if more is None:
                        watcher.closed = True
                        break
                    chunk.append(more)
                if faults.has_event_cuts():
                    for i in range(len(chunk)):
                        fire, abort = faults.cut_before_event(*where)
                        if fire:
                            chunk, cut = chunk[:i], abort
                            break
                if chunk:
                    await resp.write(b"".join(chunk))
                if watcher.closed:
                    break
            if cut is not None:
                faults.note_cut()
            if cut and request.transport is not None:
                request.transport.abort()  # the connection drops mid-stream, as through a failing proxy
            else:
                await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            self.store.hub.unsubscribe(watcher)
        return resp
