"""Who asked for what: each request's RBAC attributes, as kube-apiserver's authorizer sees them.

The emulator does no authorization, but the deployment's RBAC rules are derived from what the
operator really calls. So every request is reduced to the attributes an RBAC rule is matched
against — verb, API group, resource, subresource, namespace, name, or the path of a
non-resource URL — and remembered once per distinct combination with the client's User-Agent.

The derivation follows ``k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``: a GET without
a name is ``list`` (``watch`` with ``watch=true``), a DELETE without a name is
``deletecollection``, ``/apis/{group}`` and ``/apis/{group}/{version}`` are non-resource
(discovery) URLs, and a list/watch whose field selector pins ``metadata.name`` carries that name
(so ``resourceNames`` rules can match it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_TRUE = frozenset({"true", "1", "True", "TRUE", "t", "T"})


class Access(NamedTuple):
    """One kind of request. ``path`` is set for non-resource requests only, ``resource`` for the others."""

    user_agent: str
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource_request(self) -> bool:
        return not self.path


def _selected_name(field_selector: str | None) -> str:
    for term in (field_selector or "").split(","):
        for op in ("==", "="):
            key, sep, value = term.partition(op)
            if sep and key.strip() == "metadata.name" and not key.endswith("!"):
                return value.strip()
    return ""


def request_attributes(method: str, path: str, query: Mapping[str, str], *, user_agent: str = "") -> Access:
    """The authorizer's view of one HTTP request (verb, group, resource, ... or a non-resource path)."""
    parts = [p for p in path.split("/") if p]
    non_resource = Access(user_agent, method.lower(), path=path or "/")
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    rest = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    rest = rest[1:]  # the version
    if rest[0] in ("watch", "proxy"):  # deprecated /watch/... and /proxy/... forms
        if len(rest) < 2:
            return non_resource
        verb, rest, by_method = rest[0], rest[1:], False
    else:
        verb, by_method = _METHOD_VERBS.get(method.upper(), ""), True
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if by_method and not name and verb == "get":
        verb = "watch" if query.get("watch") in _TRUE else "list"
        name = _selected_name(query.get("fieldSelector"))
    if by_method and not name and verb == "delete":
        verb = "deletecollection"
    return Access(user_agent, verb, group, resource, sub, namespace, name)


class AccessLog:
    """Distinct accesses in arrival order; bounded: past ``limit`` distinct ones are only counted."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._seen: dict[Access, None] = {}

    def record(self, access: Access) -> None:
        if access in self._seen:
            return
        if len(self._seen) >= self.limit:
            self.dropped += 1
            return
        self._seen[access] = None

    def snapshot(self) -> frozenset[Access]:
        return frozenset(self._seen)
