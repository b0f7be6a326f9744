"""Optional authentication and RBAC: bearer tokens name identities, identities have rules.

Off by default (every request allowed, as the emulator always was). When identities are given,
each request is authenticated by its ``Authorization: Bearer`` token (an unknown token: 401; no
token: the anonymous user) and authorized against the identity's rules with RBAC's matching
(``plugin/pkg/auth/authorizer/rbac/rbac.go``, ``pkg/apis/rbac/v1/evaluation_helpers.go``): verbs,
API groups, resources with ``resource/subresource`` and ``*/subresource``, resource names, and the
namespaces a rule is bound in (a RoleBinding) or none (a ClusterRoleBinding). Refusals carry the
apiserver's message (``endpoints/handlers/responsewriters/errors.go``, ``forbiddenMessage``).

Every authenticated identity also has what the default cluster roles give ``system:authenticated``
(``system:discovery``, ``system:basic-user``, ``system:public-info-viewer``): discovery, /version,
health, and creating SelfSubjectAccessReviews and SelfSubjectReviews; the anonymous user only /version
and health.

Rules can be written out (``Rule``) or taken from RBAC manifests (``Identity.from_rbac``: the
Roles, ClusterRoles and bindings naming a subject), so a test can run with the RBAC a deployment ships.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .access import Access
from .errors import ApiError, Target, go_quote, invalid, invalid_object

ANONYMOUS = "system:anonymous"


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule, bound cluster-wide (``namespaces`` empty) or in the given namespaces."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    source: str = ""  # what the allow reason names, e.g. 'ClusterRoleBinding "x" of ClusterRole "y" to User "z"'

    def __post_init__(self) -> None:
        for name in ("verbs", "api_groups", "resources", "resource_names", "non_resource_urls", "namespaces"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"Rule.{name} must be a sequence of strings, not the string {value!r}")
            object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_policy_rule(cls, rule: Mapping[str, Any], *, namespaces: Sequence[str] = (), source: str = "") -> Rule:
        """A rule as written in a Role/ClusterRole (camelCase keys), plus the emulator's ``namespaces``."""
        return cls(verbs=tuple(rule.get("verbs") or ()), api_groups=tuple(rule.get("apiGroups") or ()),
                   resources=tuple(rule.get("resources") or ()), resource_names=tuple(rule.get("resourceNames") or ()),
                   non_resource_urls=tuple(rule.get("nonResourceURLs") or ()),
                   namespaces=tuple(rule.get("namespaces") or namespaces), source=source)

    def allows(self, a: Access) -> bool:
        if not ("*" in self.verbs or a.verb in self.verbs):
            return False
        if not a.is_resource_request:
            return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                       for u in self.non_resource_urls)
        if self.namespaces and a.namespace not in self.namespaces:
            return False
        if not ("*" in self.api_groups or a.api_group in self.api_groups):
            return False
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        if not any(r == "*" or r == combined or (a.subresource and r == f"*/{a.subresource}") for r in self.resources):
            return False
        return not self.resource_names or (bool(a.name) and a.name in self.resource_names)


_DISCOVERY = ("/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
              "/version", "/version/")
_PUBLIC = ("/healthz", "/livez", "/readyz", "/version", "/version/")
AUTHENTICATED_RULES = (
    Rule(verbs=("get",), non_resource_urls=_DISCOVERY, source='ClusterRoleBinding "system:discovery" of ClusterRole '
                                                              '"system:discovery" to Group "system:authenticated"'),
    Rule(verbs=("create",), api_groups=("authorization.k8s.io",), resources=("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
         source='ClusterRoleBinding "system:basic-user" of ClusterRole "system:basic-user" to Group "system:authenticated"'),
    Rule(verbs=("create",), api_groups=("authentication.k8s.io",), resources=("selfsubjectreviews",),
         source='ClusterRoleBinding "system:basic-user" of ClusterRole "system:basic-user" to Group "system:authenticated"'),
)
ANONYMOUS_RULES = (
    Rule(verbs=("get",), non_resource_urls=_PUBLIC, source='ClusterRoleBinding "system:public-info-viewer" of ClusterRole '
                                                           '"system:public-info-viewer" to Group "system:unauthenticated"'),
)


@dataclass(frozen=True)
class Identity:
    """A user (or service account) known by its bearer token, and what RBAC grants it."""

    name: str
    token: str
    rules: tuple[Rule, ...] = ()
    groups: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError(f"identity {self.name!r} needs a token")
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "groups", tuple(self.groups))

    @staticmethod
    def service_account_name(namespace: str, name: str) -> str:
        return f"system:serviceaccount:{namespace}:{name}"

    @classmethod
    def from_rbac(cls, objects: Iterable[Mapping[str, Any]], *, name: str, token: str,
                  groups: Sequence[str] = ()) -> Identity:
        """The rules RBAC manifests grant ``name`` (a user, or ``system:serviceaccount:NS:SA``).

        Bindings match the subject by kind (User, ServiceAccount, Group in ``groups``); a RoleBinding's
        rules hold in its namespace only; a ClusterRoleBinding's everywhere. Aggregated ClusterRoles
        (aggregationRule) are not expanded.
        """
        objs = list(objects)
        roles = {(o["kind"], (o.get("metadata") or {}).get("namespace", ""), o["metadata"]["name"]): o
                 for o in objs if o.get("kind") in ("Role", "ClusterRole")}
        sa = name.split(":") if name.startswith("system:serviceaccount:") else None
        rules: list[Rule] = []
        for b in objs:
            if b.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            meta, ref = b.get("metadata") or {}, b.get("roleRef") or {}
            ns = meta.get("namespace", "") if b["kind"] == "RoleBinding" else ""
            for subject in b.get("subjects") or []:
                kind, sname = subject.get("kind"), subject.get("name")
                if kind == "ServiceAccount":
                    matched = sa is not None and sa[3] == sname and sa[2] == (subject.get("namespace") or ns)
                    described = f'ServiceAccount "{sname}/{subject.get("namespace") or ns}"'
                elif kind == "User":
                    matched, described = sname == name, f'User "{sname}"'
                else:
                    matched, described = sname in groups, f'Group "{sname}"'
                if not matched:
                    continue
                role = roles.get((ref.get("kind"), ns if ref.get("kind") == "Role" else "", ref.get("name")))
                if role is None:
                    continue
                bname = f"{meta.get('name')}/{ns}" if ns else meta.get("name")
                source = f'{b["kind"]} "{bname}" of {ref.get("kind")} "{ref.get("name")}" to {described}'
                rules += [Rule.from_policy_rule(r, namespaces=(ns,) if ns else (), source=source) for r in role.get("rules") or []]
        return cls(name=name, token=token, rules=tuple(rules), groups=tuple(groups))


@dataclass(frozen=True)
class Subject:
    """Who made a request, as the authenticator tells: the name, the groups (those the identity was given,
    then the ones a service account and any authenticated user are in), and the rules (None: RBAC off)."""

    user: str
    groups: tuple[str, ...]
    rules: tuple[Rule, ...] | None


UNCHECKED = Subject("", (), None)  # RBAC off: nobody is authenticated, everything is allowed


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class Authorizer:
    """Tokens to identities, and RBAC decisions. Built once per configuration (immutable)."""

    def __init__(self, identities: Iterable[Identity]) -> None:
        self.identities: dict[str, Identity] = {}
        for identity in identities:
            if identity.token in self.identities:
                raise ValueError(f"two identities share a token ({self.identities[identity.token].name!r}, {identity.name!r})")
            self.identities[identity.token] = identity

    def authenticate(self, authorization: str) -> Subject:
        """Who sends an Authorization header; 401 for a token nobody has."""
        if not authorization:
            return Subject(ANONYMOUS, ("system:unauthenticated",), ANONYMOUS_RULES)
        scheme, _, token = authorization.partition(" ")
        identity = self.identities.get(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        sa = identity.name.split(":")
        implied = (("system:serviceaccounts", f"system:serviceaccounts:{sa[2]}")
                   if identity.name.startswith("system:serviceaccount:") and len(sa) == 4 else ())
        return Subject(identity.name, (*identity.groups, *implied, "system:authenticated"),
                       identity.rules + AUTHENTICATED_RULES)

    @staticmethod
    def decide(user: str, rules: Sequence[Rule], access: Access) -> Decision:
        for i, rule in enumerate(rules):
            if rule.allows(access):
                return Decision(True, f"RBAC: allowed by {rule.source or f'rule {i} of User {go_quote(user)}'}")
        return Decision(False)


def _sanitize(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def forbidden(user: str, a: Access) -> ApiError:
    """responsewriters.Forbidden: the apiserver's 403 for a request RBAC did not allow."""
    if not a.is_resource_request:
        return ApiError(403, "Forbidden", "forbidden: " + _sanitize(
            f"User {go_quote(user)} cannot {a.verb} path {go_quote(a.path)}"), {})
    resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    where = f"in the namespace {go_quote(a.namespace)}" if a.namespace else "at the cluster scope"
    why = _sanitize(f"User {go_quote(user)} cannot {a.verb} resource {go_quote(resource)} in API group "
                    f"{go_quote(a.api_group)} {where}")
    qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
    subject = f"{qualified} {go_quote(a.name)}" if a.name else qualified
    details: dict[str, Any] = {"name": a.name} if a.name else {}
    if a.api_group:
        details["group"] = a.api_group
    details["kind"] = a.resource
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {why}", details)


def self_subject_access_review(body: Any, *, user: str, rules: Sequence[Rule] | None) -> dict[str, Any]:
    """The answer to a SelfSubjectAccessReview create (``rules`` None: no authorization, all allowed)."""
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body must be a SelfSubjectAccessReview object")
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    problem = None
    if res is not None and non is not None:
        problem = ("spec.nonResourceAttributes", "cannot be specified in combination with resourceAttributes")
    elif res is None and non is None:
        problem = ("spec.resourceAttributes", "exactly one of nonResourceAttributes or resourceAttributes must be specified")
    if problem is not None:
        value = non if problem[0].endswith("nonResourceAttributes") else None
        raise invalid_object(Target("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"), "",
                             [invalid(problem[0], value, problem[1])])
    if res is not None:
        r = res if isinstance(res, dict) else {}
        access = Access("", str(r.get("verb", "")), str(r.get("group", "")), str(r.get("resource", "")),
                        str(r.get("subresource", "")), str(r.get("namespace", "")), str(r.get("name", "")))
    else:
        n = non if isinstance(non, dict) else {}
        access = Access("", str(n.get("verb", "")), path=str(n.get("path", "")) or "/")
    status: dict[str, Any] = {"allowed": True}
    if rules is not None:
        decision = Authorizer.decide(user, rules, access)
        status = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def self_subject_review(body: Any, *, subject: Subject, now: str) -> dict[str, Any]:
    """The answer to a SelfSubjectReview create (``kubectl auth whoami``): the caller as authenticated.

    As pkg/registry/authentication/selfsubjectreview: the body is only checked to be an object; empty
    fields are left out (with RBAC off nobody is authenticated, so ``userInfo`` is empty)."""
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body must be a SelfSubjectReview object")
    user_info: dict[str, Any] = {}
    if subject.user:
        user_info["username"] = subject.user
    if subject.groups:
        user_info["groups"] = list(subject.groups)
    return {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": now}, "status": {"userInfo": user_info}}


def load_identities(document: Any, *, base: pathlib.Path | None = None) -> list[Identity]:
    """Identities from the ``--rbac`` file's content; ValueError with one readable line when it is wrong.

    ::

        identities:
          - serviceAccount: gpuvm-system/gpuvm-operator   # or name: alice
            token: operator-token
            groups: [ops]                                  # optional
            rules:                                         # PolicyRules, plus optional namespaces
              - {apiGroups: [gpuvm.dev], resources: [gpuvms, gpuvms/status], verbs: [get, list, watch, patch]}
              - {apiGroups: [""], resources: [events], verbs: [create], namespaces: [ml]}
            rbac: [deploy/rendered.yaml]                   # and/or what these manifests bind to it
    """
    if not isinstance(document, dict) or not isinstance(document.get("identities"), list):
        raise ValueError("expected a mapping with a list under 'identities'")
    out = []
    for i, item in enumerate(document["identities"]):
        where = f"identities[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping")
        unknown = set(item) - {"name", "serviceAccount", "token", "groups", "rules", "rbac"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if bool(item.get("name")) == bool(item.get("serviceAccount")):
            raise ValueError(f"{where}: give either name or serviceAccount (NAMESPACE/NAME)")
        name = item.get("name")
        if item.get("serviceAccount"):
            ns, sep, sa = str(item["serviceAccount"]).partition("/")
            if not sep or not ns or not sa:
                raise ValueError(f"{where}: serviceAccount must be NAMESPACE/NAME, not {item['serviceAccount']!r}")
            name = Identity.service_account_name(ns, sa)
        if not item.get("token") or not isinstance(item["token"], str):
            raise ValueError(f"{where}: a token (string) is required")
        groups = tuple(item.get("groups") or ())
        objects: list[Any] = []
        for path in item.get("rbac") or []:
            file = pathlib.Path(base or ".") / str(path)
            try:
                objects += [d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict)]
            except (OSError, yaml.YAMLError) as e:
                raise ValueError(f"{where}: cannot read RBAC manifests {str(file)!r}: {str(e).splitlines()[0]}") from None
        from_manifests = Identity.from_rbac(objects, name=str(name), token=item["token"], groups=groups).rules
        rules = []
        for j, rule in enumerate(item.get("rules") or []):
            if not isinstance(rule, dict) or not rule.get("verbs"):
                raise ValueError(f"{where}.rules[{j}]: expected a PolicyRule with verbs")
            bad = set(rule) - {"apiGroups", "resources", "resourceNames", "nonResourceURLs", "verbs", "namespaces"}
            if bad:
                raise ValueError(f"{where}.rules[{j}]: unknown key(s) {', '.join(sorted(bad))}")
            rules.append(Rule.from_policy_rule(rule))
        out.append(Identity(name=str(name), token=item["token"], rules=tuple(rules) + from_manifests, groups=groups))
    Authorizer(out)  # tokens must be distinct
    return out
