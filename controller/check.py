"""``gpuvm-operator check``: every prerequisite of the operator, one line each, with its fix.

The pre-flights of the operators people trust (``flux check --pre``, ``linkerd check``,
``cmctl check api``) walk through what must hold and say which one does not and what to do.
This one takes the same flags and environment as ``run`` and asks the real APIs:

- Kubernetes: the configuration loads; the API server answers; its version; the CRDs this build
  ships (``controller/data``) are installed, established and the same; the identity may make
  every request the operator makes (a SelfSubjectAccessReview per verb, resource and namespace).
- Azure: the credential yields a token (the text ``run`` logs when it does not); Resource Manager
  answers; at each resource group the GpuVms name (or ``--resource-group``) the identity's
  effective permissions hold every action of ``deploy/azure/gpuvm-power-operator.role.json``, and
  no more.
- Consent: the VMs the GpuVms name exist, carry the opt-in tag and allow the GpuVms' namespaces.

``--pre`` runs what can be checked before anything is installed. Nothing here changes anything:
reads, reviews and a token request only (never a start or deallocate), each bounded by
``--connect-timeout``. ``preflight`` is the part ``run`` does before kopf starts, so that each
start-up mistake ends in one line and an exit code of its own (the table in README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import logging
import re
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from azure.identity import CredentialUnavailableError

from controller import __version__
from controller.azure_compute import ROLE_FILE, ROLE_NAME, AzureCompute, AzureFailureError, Grant, translate
from controller.config import ConfigError, OperatorConfig, add_run_arguments, config_from_args
from controller.credentials import CredentialConfigError, build_credential, precedence_warning
from controller.gpuvm import (
    GROUP,
    PLURAL,
    RESOURCE_GROUP_PATTERN,
    SUBSCRIPTION_PATTERN,
    VERSION,
    SpecError,
    VmRef,
    parse_spec,
)
from controller.guard import GuardSettings, owner_of, tag_value
from controller.guard import check as consent_of
from controller.kube import (
    NAMESPACE_SCAN_ACCESS,
    OPERATOR_ACCESS,
    Connection,
    KubeAccess,
    KubeCallError,
    KubeConfigError,
    access_allowed,
    connect,
    list_namespaces,
    list_objects,
    list_page,
    peering_access,
    read_crd,
    served_resources,
    served_versions,
    server_version,
    whoami,
)

log = logging.getLogger("gpuvm.check")

# Exit codes of `run` for start-up mistakes (and of `check`: 0 all passed, 1 a check failed).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_KUBECONFIG = 3
EXIT_API_UNREACHABLE = 4
EXIT_CRD = 5
EXIT_RBAC = 6
EXIT_PORT = 7

# The CRD uses CEL validation rules (x-kubernetes-validations), generally available since 1.29.
MIN_KUBERNETES = (1, 29)
# Read only with claims (--cluster-name): the tag gpuvm-owner through the Tags API.
CLAIM_ACTIONS = frozenset({"Microsoft.Resources/tags/read", "Microsoft.Resources/tags/write"})
# What reading one's own permissions needs (Permissions - List For Resource Group):
# https://learn.microsoft.com/rest/api/authorization/permissions/list-for-resource-group
PERMISSIONS_READ = "Microsoft.Authorization/permissions/read"
CRD_FIX = f"kubectl apply -f deploy/crds/ (of gpuvm-operator {__version__}, this build)"
_LISTED = 8  # names shown in one line before "and N more"


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"  # works, but not as it should be (broader rights than needed, a guard disabled)
    FAIL = "fail"
    SKIP = "skip"  # not checked, and the line says why


@dataclass(frozen=True)
class Result:
    name: str  # stable, for --output json: "kubernetes.api", "azure.permissions./subscriptions/…"
    section: str
    title: str
    status: Status
    detail: str = ""
    fix: str = ""


# ------------------------------------------------------------------ pure: what the answers mean

def listed(items: Sequence[str], limit: int = _LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def kubernetes_version(git_version: str) -> tuple[int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)", git_version)
    return (int(match.group(1)), int(match.group(2))) if match else None


@cache
def expected_crds() -> tuple[Mapping[str, Any], ...]:
    """The CRDs this build ships in controller/data (symlinks into deploy/crds): every one must be
    installed. A CRD the project adds there is checked without a change here."""
    import yaml

    found: list[Mapping[str, Any]] = []
    for entry in sorted(resources.files("controller").joinpath("data").iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            found += [d for d in yaml.safe_load_all(entry.read_text()) if isinstance(d, dict)
                      and d.get("kind") == "CustomResourceDefinition"]
    return tuple(found)


@cache
def role_actions() -> tuple[str, ...]:
    """The actions of the custom role, as shipped in controller/data (a symlink to deploy/azure)."""
    role = json.loads(resources.files("controller").joinpath("data", "gpuvm-power-operator.role.json").read_text())
    return tuple(role["Actions"])


def _served(crd: Mapping[str, Any]) -> list[str]:
    return [v["name"] for v in crd["spec"]["versions"] if v.get("served")]


def _schema(crd: Mapping[str, Any], version: str) -> Any:
    found = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return ((found[0].get("schema") or {}).get("openAPIV3Schema")) if found else None


def _paths(schema: Any, prefix: str = "") -> set[str]:
    """Every property path a structural schema declares ("status.startFailures.count")."""
    if not isinstance(schema, Mapping):
        return set()
    out: set[str] = set()
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out |= {path} | _paths(sub, path)
    if isinstance(schema.get("items"), Mapping):
        out |= _paths(schema["items"], prefix + "[]")
    return out


def crd_result(expected: Mapping[str, Any], installed: Mapping[str, Any] | None) -> Result:
    """Installed, established, serving the versions this build uses, with this build's schema."""
    name = expected["metadata"]["name"]
    base = dict(name=f"kubernetes.crd.{name}", section="Kubernetes", title=f"CRD {name}")
    if installed is None:
        return Result(**base, status=Status.FAIL, detail="not installed", fix=CRD_FIX)
    conditions = {c.get("type"): c for c in (installed.get("status") or {}).get("conditions") or []}
    for kind in ("NamesAccepted", "Established"):
        condition = conditions.get(kind) or {}
        if condition.get("status") != "True":
            why = condition.get("message") or "no such condition yet"
            return Result(**base, status=Status.FAIL, detail=f"installed but not {kind}: {why}",
                          fix=f"kubectl describe crd {name}; a name conflict with another CRD is the usual cause")
    missing = [v for v in _served(expected) if v not in _served(installed)]
    if missing:
        return Result(**base, status=Status.FAIL,
                      detail=f"serves {', '.join(_served(installed)) or 'no version'}, "
                             f"not {', '.join(missing)} which this build uses",
                      fix=CRD_FIX)
    differs = []
    for version in _served(expected):
        ours, theirs = _paths(_schema(expected, version)), _paths(_schema(installed, version))
        if _schema(expected, version) != _schema(installed, version):
            gone, extra = sorted(ours - theirs), sorted(theirs - ours)
            part = f"{version}: schema differs"
            if gone:
                part += f"; fields of this build it lacks: {listed(gone, 5)}"
            if extra:
                part += f"; fields this build does not know: {listed(extra, 5)}"
            differs.append(part)
    if differs:
        return Result(**base, status=Status.WARN,
                      detail="installed and established, but not this build's: " + " | ".join(differs),
                      fix=f"an older CRD prunes the status fields this build writes: {CRD_FIX}; after a rollback "
                          "of the operator, keep the newer CRD unless the release notes say otherwise")
    return Result(**base, status=Status.OK,
                  detail=f"installed, established, this build's ({', '.join(_served(expected))})")


def granted(action: str, grants: Iterable[Grant]) -> bool:
    """Azure's rule: some role assignment has a matching action and no matching notAction."""
    def match(pattern: str) -> bool:
        return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), action, re.IGNORECASE) is not None

    return any(any(map(match, g.actions)) and not any(map(match, g.not_actions)) for g in grants)


def permission_result(scope: str, grants: Sequence[Grant], *, claims: bool) -> Result:
    """Every action of the role granted at ``scope`` (the tags ones only with claims), and
    whether the identity holds more than the role: Contributor's '*', VM Contributor's ..."""
    actions = role_actions()
    required = [a for a in actions if claims or a not in CLAIM_ACTIONS]
    missing = [a for a in required if not granted(a, grants)]
    ours = {a.lower() for a in actions}
    extra = sorted({a for g in grants for a in g.actions if a.lower() not in ours}, key=lambda a: ("*" not in a, a))
    base = dict(name=f"azure.permissions.{scope}", section="Azure", title=f"permissions at {scope}")
    assign = (f"assign the custom role '{ROLE_NAME}' ({ROLE_FILE}; deploy/azure/setup.sh creates it) to the "
              f"operator's identity at {scope}")
    if missing:
        return Result(**base, status=Status.FAIL, detail=f"missing {listed(missing)}",
                      fix=assign + "; a new assignment can take a few minutes to apply")
    if extra:
        wildcard = next((a for a in extra if a == "*"), None)
        what = " ('*' is Contributor or Owner: it may create, change and delete anything here)" if wildcard else ""
        return Result(**base, status=Status.WARN,
                      detail=f"every action the operator uses is granted, and more than it needs: "
                             f"{listed(extra, 5)}{what}",
                      fix=assign + " and remove the broader role assignment")
    note = "" if claims else " (the tags actions are used only with --cluster-name)"
    return Result(**base, status=Status.OK, detail=f"the {len(required)} actions the operator uses, nothing more{note}")


@dataclass(frozen=True)
class Named:
    """A GpuVm in the operator's scope and the VM its spec names (or why it names none)."""

    namespace: str
    name: str
    vm: VmRef | SpecError

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def consent_results(named: Sequence[Named], tags: Mapping[str, Mapping[str, str] | None],
                    settings: GuardSettings) -> list[Result]:
    """The consent the VMs give, judged by the operator's own guard (controller/guard.py).

    ``tags`` maps a VM's key to its tags, None when the VM does not exist; a VM missing from it was
    not read (its resource group failed, reported on its own line).
    """
    lines: list[Result] = []
    invalid = [f"{n.ref} ({n.vm})" for n in named if isinstance(n.vm, SpecError)]
    if invalid:
        lines.append(Result("consent.specs", "Consent", "GpuVm specs", Status.FAIL,
                            f"{len(invalid)} name no VM: {listed(invalid)}",
                            "fix spec.vm; GpuVms giving resourceGroup + name need --subscription-id or "
                            "spec.vm.subscriptionId"))
    read = [(n, n.vm) for n in named if isinstance(n.vm, VmRef) and n.vm.key in tags]
    absent = sorted({f"{vm.name} in {vm.resource_group} ({n.ref})" for n, vm in read if tags[vm.key] is None})
    if absent:
        lines.append(Result("consent.vms", "Consent", "VMs exist", Status.FAIL, f"not found: {listed(absent)}",
                            "check spec.vm: the VM, its resource group and subscription must exist and be visible "
                            "to the identity"))
    verdicts = [(n, vm, found, consent_of(found, namespace=n.namespace, settings=settings))
                for n, vm in read if (found := tags[vm.key]) is not None]
    vms = {vm.key for _, vm, _, _ in verdicts}

    def failing(code: str) -> list[tuple[Named, VmRef, Mapping[str, str]]]:
        return [(n, vm, found) for n, vm, found, f in verdicts if f is not None and f.code == code]

    if settings.managed_tag is None:
        lines.append(Result("consent.opt-in", "Consent", "opt-in tag", Status.WARN,
                            f"the guard is off (--managed-tag none): any of the {len(vms)} VMs the GpuVms name may "
                            "be driven", "set --managed-tag NAME=VALUE and tag the VMs that may be switched"))
    elif vms:
        tag = "=".join(settings.managed_tag)
        untagged = failing("NotManaged")
        names = sorted({vm.name for _, vm, _ in untagged})
        counted = f"{len(vms) - len(names)} of {len(vms)} VMs the GpuVms name carry {tag}"
        lines.append(Result("consent.opt-in", "Consent", "opt-in tag", Status.FAIL, f"{counted}; not: {listed(names)}",
                            f"az tag update --operation Merge --tags {tag} --resource-id {untagged[0][1].resource_id}, "
                            "and the same for each VM listed") if untagged
                     else Result("consent.opt-in", "Consent", "opt-in tag", Status.OK, counted))
    ns_tag = settings.namespaces_tag
    excluded = [f"{n.ref} -> {vm.name} ({ns_tag}={tag_value(found, ns_tag)})"
                for n, vm, found in failing("NamespaceNotAllowed")]
    if excluded:
        lines.append(Result("consent.namespaces", "Consent", "namespaces", Status.FAIL,
                            f"a VM's {ns_tag} tag excludes the namespace of {listed(excluded)}",
                            f"add the namespace to the VM's {ns_tag} tag, or move the GpuVm to an allowed namespace"))
    elif vms:
        lines.append(Result("consent.namespaces", "Consent", "namespaces", Status.OK,
                            f"no VM's {ns_tag} tag excludes the namespace of a GpuVm naming it"))
    if settings.cluster_name:
        claimed = sorted({f"{vm.name} ({settings.owner_tag}={owner_of(found, settings)})"
                          for _, vm, found in failing("OwnedByOtherCluster")})
        lines.append(Result("consent.claims", "Consent", "claims", Status.FAIL,
                            f"claimed by other clusters: {listed(claimed)}",
                            f"delete the GpuVm in the other cluster, or remove the VM's {settings.owner_tag} tag if "
                            "that cluster no longer uses it") if claimed
                     else Result("consent.claims", "Consent", "claims", Status.OK,
                                 f"no VM is claimed by a cluster other than {settings.cluster_name}"))
    if not named:
        lines.append(Result("consent.gpuvms", "Consent", "GpuVms", Status.SKIP,
                            "no GpuVm in the operator's namespaces yet: nothing to consent to"))
    return lines


# ------------------------------------------------------------------ output

_SYMBOLS = {Status.OK: "✔", Status.FAIL: "✖", Status.WARN: "!", Status.SKIP: "-"}
_WORDS = {Status.OK: "OK  ", Status.FAIL: "FAIL", Status.WARN: "WARN", Status.SKIP: "SKIP"}


def render_text(results: Sequence[Result], *, tty: bool) -> str:
    """One line per check (✔/✖ on a terminal, OK/FAIL otherwise), the fix under each failure."""
    lines: list[str] = []
    section = None
    for r in results:
        if r.section != section:
            section = r.section
            lines.append(section)
        mark = _SYMBOLS[r.status] if tty else _WORDS[r.status]
        lines.append(f"  {mark} {r.title}: {r.detail}" if r.detail else f"  {mark} {r.title}")
        if r.fix and r.status in (Status.FAIL, Status.WARN):
            lines.append(f"      fix: {r.fix}")
    failed = sum(r.status is Status.FAIL for r in results)
    warned = sum(r.status is Status.WARN for r in results)
    if failed:
        lines.append(f"{failed} of {len(results)} checks failed" + (f", {warned} warned" if warned else "") + ".")
    else:
        lines.append(f"All {sum(r.status is not Status.SKIP for r in results)} checks passed"
                     + (f", {warned} with a warning" if warned else "") + ".")
    return "\n".join(lines)


def render_json(results: Sequence[Result], *, pre: bool) -> str:
    return json.dumps({
        "ok": exit_code(results) == 0,
        "pre": pre,
        "version": __version__,
        "checks": [{"name": r.name, "section": r.section, "title": r.title, "status": r.status.value,
                    "detail": r.detail, "fix": r.fix} for r in results],
    }, indent=2)


def exit_code(results: Iterable[Result]) -> int:
    return EXIT_FAILED if any(r.status is Status.FAIL for r in results) else 0


# ------------------------------------------------------------------ Kubernetes

@dataclass
class _Kube:
    """What the Kubernetes checks learned, for the Azure and consent checks after them."""

    conn: Connection | None = None
    crds_ready: bool = False
    gpuvms: list[Mapping[str, Any]] = field(default_factory=list)
    gpuvms_read: bool = False


def _label_selector(config: OperatorConfig) -> str:
    return ",".join(key if value is None else f"{key}={value}" for key, value in config.labels)


def served_namespaces(config: OperatorConfig, conn: Connection, *, timeout: float) -> list[str]:
    """The namespaces the operator serves: "" for all; the names; or those matching the patterns."""
    if config.clusterwide:
        return [""]
    if not config.namespace_globs:
        return list(config.namespaces)
    from kopf._cogs.structs.references import match_namespace  # kopf's own matching, as the operator uses it

    return [ns for ns in list_namespaces(conn, timeout=timeout)
            if any(match_namespace(ns, p) for p in config.namespaces)]


def _kube_checks(config: OperatorConfig, *, pre: bool, out: list[Result]) -> _Kube:
    timeout = config.connect_timeout
    state = _Kube()
    section = "Kubernetes"
    try:
        conn = connect(server=config.kube_server, kubeconfig=config.kubeconfig, retries=0)
    except KubeConfigError as e:
        out.append(Result("kubernetes.config", section, "configuration", Status.FAIL, str(e),
                          "point KUBECONFIG or --kubeconfig at a kubeconfig that `kubectl config view` shows, "
                          "or run in a pod with a ServiceAccount"))
        return state
    out.append(Result("kubernetes.config", section, "configuration", Status.OK, conn.source))
    started = time.monotonic()
    try:
        version = server_version(conn, timeout=timeout)
    except KubeCallError as e:
        unauthorized = e.status == 401
        out.append(Result("kubernetes.api", section, "API server", Status.FAIL,
                          f"{conn.server} rejected the credentials of {conn.source}" if unauthorized else str(e),
                          "renew the credentials of the kubeconfig's user (e.g. az aks get-credentials)" if unauthorized
                          else "check the server address of the kubeconfig and the network path to it (VPN, firewall, "
                               "proxy); `kubectl cluster-info` must answer"))
        return state
    state.conn = conn
    elapsed = (time.monotonic() - started) * 1000
    out.append(Result("kubernetes.api", section, "API server", Status.OK,
                      f"{conn.server} answered in {elapsed:.0f} ms"))
    parsed = kubernetes_version(version)
    old = parsed is not None and parsed < MIN_KUBERNETES
    out.append(Result("kubernetes.version", section, "Kubernetes version", Status.FAIL if old else Status.OK,
                      version + (f"; the CRD needs {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]} or later (CEL rules)"
                                 if old else ""),
                      "upgrade the cluster" if old else ""))
    if pre:
        return state
    state.crds_ready = _crd_checks(conn, out, timeout=timeout)
    try:
        namespaces = served_namespaces(config, conn, timeout=timeout)
    except KubeCallError as e:
        out.append(Result("kubernetes.rbac", section, "RBAC", Status.FAIL,
                          f"cannot list namespaces to match the patterns: {e}",
                          "grant list, watch on namespaces (patterns need them), or serve namespaces by name"))
        return state
    _rbac_check(config, conn, namespaces, out, timeout=timeout)
    if config.peering:
        _peering_check(config, conn, namespaces, out, timeout=timeout)
    if state.crds_ready:
        try:
            for ns in namespaces:
                state.gpuvms += list_objects(conn, GROUP, VERSION, PLURAL, namespace=ns or None, timeout=timeout,
                                             label_selector=_label_selector(config))
            state.gpuvms_read = True
        except KubeCallError as e:
            out.append(Result("kubernetes.gpuvms", section, "GpuVms", Status.FAIL, f"cannot list them: {e}",
                              "grant list on gpuvms (deploy/manifests: base/rbac.yaml)"))
    return state


def _crd_checks(conn: Connection, out: list[Result], *, timeout: float) -> bool:
    ready = True
    for crd in expected_crds():
        name = crd["metadata"]["name"]
        try:
            result = crd_result(crd, read_crd(conn, name, timeout=timeout))
        except KubeCallError as e:
            if e.status != 403:
                result = Result(f"kubernetes.crd.{name}", "Kubernetes", f"CRD {name}", Status.FAIL, str(e), CRD_FIX)
            else:  # the operator's identity may not read CRDs: discovery tells served or not, not the schema
                group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
                unserved = [v for v in _served(crd)
                            if plural not in (served_resources(conn, group, v, timeout=timeout) or ())]
                result = Result(f"kubernetes.crd.{name}", "Kubernetes", f"CRD {name}",
                                Status.FAIL if unserved else Status.OK,
                                f"{group}/{', '.join(unserved)} {plural} not served" if unserved
                                else f"served ({', '.join(_served(crd))}); its schema was not compared: this identity "
                                     "may not read CRDs", CRD_FIX if unserved else "")
        ready = ready and result.status is not Status.FAIL
        out.append(result)
    return ready


def _reviews(conn: Connection, needed: Iterable[tuple[KubeAccess, str]], *, timeout: float) -> list[str] | None:
    """The requests of ``needed`` the identity may not make ("verb resource in ns"), or None where
    the API server offers no SelfSubjectAccessReview (a real one always does)."""
    denied: list[str] = []
    for access, namespace in needed:
        try:
            allowed = access_allowed(conn, access, namespace, timeout=timeout)
        except KubeCallError as e:
            if e.status == 404:
                return None
            raise
        if not allowed:
            denied.append(f"{access} in {namespace or 'all namespaces'}")
    return denied


def _needed(config: OperatorConfig, namespaces: Sequence[str]) -> Iterator[tuple[KubeAccess, str]]:
    for ns in namespaces:
        for access in OPERATOR_ACCESS:
            yield access, ns
    if config.namespace_globs:
        for access in NAMESPACE_SCAN_ACCESS:
            yield access, ""
    if config.peering:
        for ns in [""] if config.clusterwide else namespaces:
            for access in peering_access(config.peering, clusterwide=config.clusterwide):
                yield access, ns


def _rbac_check(config: OperatorConfig, conn: Connection, namespaces: Sequence[str], out: list[Result], *,
                timeout: float) -> None:
    needed = list(_needed(config, namespaces))
    where = "all namespaces" if namespaces == [""] else listed([n or "all namespaces" for n in namespaces])
    try:
        denied = _reviews(conn, needed, timeout=timeout)
    except KubeCallError as e:
        out.append(Result("kubernetes.rbac", "Kubernetes", "RBAC", Status.FAIL, f"cannot ask: {e}",
                          "every authenticated identity may create SelfSubjectAccessReviews; check the API server"))
        return
    if denied is None:
        out.append(Result("kubernetes.rbac", "Kubernetes", "RBAC", Status.SKIP,
                          "not checked: the API server serves no authorization.k8s.io/v1 SelfSubjectAccessReview"))
        return
    who = whoami(conn, timeout=timeout) or "this identity"
    if denied:
        out.append(Result("kubernetes.rbac", "Kubernetes", "RBAC", Status.FAIL,
                          f"{who} may not {listed(denied)}",
                          "apply the RBAC of deploy/manifests (base/rbac.yaml; a Role per namespace as in "
                          "overlays/namespaced/rbac-ml.yaml; HA: overlays/ha/peering.yaml); check asks as the "
                          "identity it runs as: run it as the operator with "
                          "kubectl -n gpuvm-system exec deploy/gpuvm-operator -- gpuvm-operator check"))
    else:
        out.append(Result("kubernetes.rbac", "Kubernetes", "RBAC", Status.OK,
                          f"{who} may make all {len({a for a, _ in needed})} kinds of request the operator makes, "
                          f"in {where}"))


def _peering_check(config: OperatorConfig, conn: Connection, namespaces: Sequence[str], out: list[Result], *,
                   timeout: float) -> None:
    name = config.peering or ""
    plural = "clusterkopfpeerings" if config.clusterwide else "kopfpeerings"
    base = dict(name="kubernetes.peering", section="Kubernetes", title=f"peering {name}")
    try:
        if plural not in (served_resources(conn, "kopf.dev", "v1", timeout=timeout) or ()):
            out.append(Result(**base, status=Status.FAIL, detail=f"{plural}.kopf.dev is not installed",
                              fix="kubectl apply -f deploy/crds/kopf-peering/"))
            return
        missing = [ns or "cluster" for ns in ([""] if config.clusterwide else namespaces)
                   if not list_objects(conn, "kopf.dev", "v1", plural, namespace=ns or None, timeout=timeout,
                                       field_selector=f"metadata.name={name}")]
    except KubeCallError as e:
        out.append(Result(**base, status=Status.FAIL, detail=str(e),
                          fix="grant list on kopf.dev peerings (overlays/ha/peering.yaml)"))
        return
    kind = "ClusterKopfPeering" if config.clusterwide else "KopfPeering"
    if missing:
        out.append(Result(**base, status=Status.FAIL,
                          detail=f"no {kind} {name} ({listed(missing)}): without it every replica stays paused",
                          fix="create it, as deploy/manifests/overlays/ha/peering.yaml does"))
    else:
        out.append(Result(**base, status=Status.OK, detail=f"the {kind} exists"))


# ------------------------------------------------------------------ Azure and consent

def parse_resource_group(text: str, default_subscription: str | None) -> tuple[str, str]:
    """'rg', 'SUBSCRIPTION/rg' or '/subscriptions/S/resourceGroups/rg' -> (subscription, rg)."""
    match = re.fullmatch(r"/?subscriptions/([^/]+)/resourceGroups/([^/]+)/?", text.strip(), re.IGNORECASE)
    subscription, _, group = (match.group(1), "/", match.group(2)) if match else text.strip().rpartition("/")
    subscription = subscription or (default_subscription or "")
    if not subscription:
        raise ConfigError(f"--resource-group {text}: give SUBSCRIPTION/{group}, or set --subscription-id")
    if not (re.fullmatch(SUBSCRIPTION_PATTERN, subscription) and re.fullmatch(RESOURCE_GROUP_PATTERN, group, re.ASCII)):
        raise ConfigError(f"--resource-group {text}: expected RESOURCE_GROUP, SUBSCRIPTION/RESOURCE_GROUP "
                          "or its resource id")
    return subscription.lower(), group


def _scope(subscription: str, group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}"


def named_vms(config: OperatorConfig, gpuvms: Iterable[Mapping[str, Any]]) -> list[Named]:
    out = []
    for obj in gpuvms:
        meta = obj.get("metadata") or {}
        spec = parse_spec(obj.get("spec"), default_subscription=config.engine.default_subscription)
        vm = spec if isinstance(spec, SpecError) else spec.vm
        out.append(Named(meta.get("namespace", ""), meta.get("name", ""), vm))
    return out


async def _bounded(awaitable: Any, timeout: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{what} did not answer within {timeout:g} s (--connect-timeout)") from None


async def _azure_checks(config: OperatorConfig, *, pre: bool, groups: Sequence[tuple[str, str]], kube: _Kube,
                        out: list[Result]) -> None:
    timeout = config.connect_timeout
    mode = config.credential.mode
    title = f"credential '{mode.value}'"
    warning = precedence_warning(mode)  # the warning `run` logs: a stray secret beats Workload Identity
    fix = (f"{warning}; " if warning else "") + (
        "set up the identity the message names (docs/install.md; README: credential errors users actually hit), "
        "or choose another with --credential")
    try:
        credential = build_credential(config.credential)
    except CredentialConfigError as e:  # `run` reports it through the same translation
        failure = translate(CredentialUnavailableError(message=str(e)), mode=mode)
        out.append(Result("azure.credential", "Azure", title, Status.FAIL, failure.message, fix))
        return
    azure = AzureCompute(credential, config.azure)
    try:
        try:
            expires = await _bounded(azure.check_credential(), timeout, "the token request")
        except (AzureFailureError, TimeoutError) as e:
            detail = e.failure.message if isinstance(e, AzureFailureError) else str(e)
            out.append(Result("azure.credential", "Azure", title, Status.FAIL, detail, fix))
            return
        token = f"token for {config.azure.scope} valid until {expires:%Y-%m-%dT%H:%M:%SZ}"
        out.append(Result("azure.credential", "Azure", title, Status.WARN, f"{token}, but {warning}",
                          "keep one identity in the pod's environment") if warning
                   else Result("azure.credential", "Azure", title, Status.OK, token))
        try:
            subscriptions = await _bounded(azure.list_subscriptions(), timeout, "Azure Resource Manager")
        except (AzureFailureError, TimeoutError) as e:
            detail = e.failure.message if isinstance(e, AzureFailureError) else str(e)
            out.append(Result("azure.arm", "Azure", "Resource Manager", Status.FAIL, detail,
                              "check --cloud/--arm-endpoint, the network path (HTTPS_PROXY, firewall) and --ca-bundle"))
            return
        out.append(Result("azure.arm", "Azure", "Resource Manager", Status.OK,
                          f"{config.azure.endpoint} answered; {len(subscriptions)} subscription(s) visible to "
                          "the identity"))
        named = [] if pre else named_vms(config, kube.gpuvms)
        scopes = dict.fromkeys([*groups, *((n.vm.subscription_id, n.vm.resource_group) for n in named
                                           if isinstance(n.vm, VmRef))])
        if not scopes:
            out.append(Result("azure.permissions", "Azure", "permissions", Status.SKIP,
                              "no resource group to check: no GpuVm names one" + ("" if pre else " yet")
                              + "; give --resource-group RESOURCE_GROUP"))
        for subscription, group in scopes:
            claims = bool(config.engine.guard.cluster_name)
            out.append(await _permission_check(azure, subscription, group, claims=claims, timeout=timeout))
        if not pre and kube.gpuvms_read:
            out.extend(await _consent_checks(azure, config, named, timeout=timeout))
    finally:
        await azure.close()


async def _permission_check(azure: AzureCompute, subscription: str, group: str, *, claims: bool,
                            timeout: float) -> Result:
    scope = _scope(subscription, group)
    base = dict(name=f"azure.permissions.{scope}", section="Azure", title=f"permissions at {scope}")
    try:
        grants = await _bounded(azure.permissions_at(subscription, group), timeout, "Azure Resource Manager")
    except TimeoutError as e:
        return Result(**base, status=Status.FAIL, detail=str(e),
                      fix="run check again; Azure may be slow or unreachable")
    except AzureFailureError as e:
        code = e.failure.code
        if code == "AuthorizationFailed":
            return Result(**base, status=Status.FAIL,
                          detail=f"the identity may not read its own permissions here: that needs {PERMISSIONS_READ}, "
                                 "so this check cannot tell whether the operator's actions are granted",
                          fix=f"update the role '{ROLE_NAME}' from {ROLE_FILE} (it includes {PERMISSIONS_READ} "
                              "for this check) and assign it here")
        if code in ("ResourceGroupNotFound", "SubscriptionNotFound"):
            what = "resource group" if code == "ResourceGroupNotFound" else "subscription"
            return Result(**base, status=Status.FAIL, detail=f"the {what} does not exist or the identity cannot see it",
                          fix="check spec.vm of the GpuVms (or --resource-group) and the identity's role assignments")
        return Result(**base, status=Status.FAIL, detail=e.failure.message, fix="read the message; run check again")
    return permission_result(scope, grants, claims=claims)


async def _consent_checks(azure: AzureCompute, config: OperatorConfig, named: Sequence[Named], *,
                          timeout: float) -> list[Result]:
    tags: dict[str, Mapping[str, str] | None] = {}
    failed: list[Result] = []
    groups = dict.fromkeys((n.vm.subscription_id, n.vm.resource_group) for n in named if isinstance(n.vm, VmRef))
    for subscription, group in groups:
        try:
            seen = await _bounded(_group_tags(azure, subscription, group), timeout, "Azure Resource Manager")
        except (AzureFailureError, TimeoutError) as e:
            detail = e.failure.message if isinstance(e, AzureFailureError) else str(e)
            failed.append(Result(f"consent.read.{_scope(subscription, group)}", "Consent",
                                 f"VMs of {_scope(subscription, group)}", Status.FAIL,
                                 f"cannot read their tags: {detail}",
                                 "the permissions line above says what is missing"))
            continue
        for n in named:
            if isinstance(n.vm, VmRef) and (n.vm.subscription_id, n.vm.resource_group) == (subscription, group):
                tags[n.vm.key] = seen.get(n.vm.key)
    return failed + consent_results(named, tags, config.engine.guard)


async def _group_tags(azure: AzureCompute, subscription: str, group: str) -> dict[str, dict[str, str]]:
    """Every VM of the resource group with its tags, page by page (bounded by the caller)."""
    seen: dict[str, dict[str, str]] = {}
    continuation: str | None = None
    while True:
        page, continuation = await azure.list_tags_page(subscription, group, continuation)
        seen.update({key: tags for key, (tags, _) in page.items()})
        if continuation is None:
            return seen


def run_checks(config: OperatorConfig, *, pre: bool, groups: Sequence[tuple[str, str]] = ()) -> list[Result]:
    results: list[Result] = []
    kube = _kube_checks(config, pre=pre, out=results)
    azure: list[Result] = []
    asyncio.run(_azure_checks(config, pre=pre, groups=groups, kube=kube, out=azure))
    results += [r for r in azure if r.section == "Azure"] + [r for r in azure if r.section == "Consent"]
    return results


# ------------------------------------------------------------------ `run`'s pre-flight

def _listen_address(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    return parts.hostname or "localhost", parts.port or 80


def _port_problem(host: str, port: int) -> str | None:
    """Why the operator could not listen on host:port, or None. SO_REUSEADDR as the servers set it,
    so a port in TIME_WAIT from the last run does not count as taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def preflight(config: OperatorConfig) -> None:
    """What ``run`` checks before kopf starts; a start-up mistake raises CliError with one line and
    its own exit code, instead of kopf's tracebacks and retries every minute."""
    from controller.cli import CliError

    listeners = [(config.metrics_port, "metrics", ("0.0.0.0", config.metrics_port or 0))]
    if config.liveness:
        listeners.append((1, "liveness", _listen_address(config.liveness)))
    for enabled, what, (host, port) in listeners:
        problem = _port_problem(host, port) if enabled else None
        if problem:
            flag = "--metrics-port" if what == "metrics" else "--liveness"
            raise CliError(f"cannot serve {what} on {host}:{port}: {problem}; stop what listens there or change {flag}",
                           exit_code=EXIT_PORT)
    try:
        conn = connect(server=config.kube_server, kubeconfig=config.kubeconfig, retries=0)
    except KubeConfigError as e:
        raise CliError(str(e), exit_code=EXIT_KUBECONFIG) from None
    _wait_for_api(conn, config.connect_timeout)
    timeout = config.connect_timeout
    try:
        _preflight_crds(conn, timeout=timeout)
        if not config.namespace_globs:
            _preflight_rbac(config, conn, timeout=timeout)
    except KubeCallError as e:
        raise CliError(f"start-up check failed: {e}", exit_code=EXIT_FAILED) from None
    log.debug("pre-flight passed: %s", conn.source)


def _wait_for_api(conn: Connection, bound: float) -> None:
    """The API server may be starting too (a cluster coming up): retry until ``bound`` seconds."""
    from controller.cli import CliError

    deadline = time.monotonic() + bound
    while True:
        remaining = deadline - time.monotonic()
        try:
            server_version(conn, timeout=max(0.1, min(5.0, remaining)))
            return
        except KubeCallError as e:
            if e.status == 401:
                raise CliError(f"the API server at {conn.server} rejected the credentials of {conn.source} (401)",
                               exit_code=EXIT_KUBECONFIG) from None
            if time.monotonic() + 1 >= deadline:
                raise CliError(f"{e} (gave up after {bound:g} s, --connect-timeout)",
                               exit_code=EXIT_API_UNREACHABLE) from None
        time.sleep(1)


def _preflight_crds(conn: Connection, *, timeout: float) -> None:
    """Discovery only (every identity may read it; the operator's may not read CRDs)."""
    from controller.cli import CliError

    missing: list[str] = []
    other: list[str] = []
    for crd in expected_crds():
        group, plural, name = crd["spec"]["group"], crd["spec"]["names"]["plural"], crd["metadata"]["name"]
        served = served_versions(conn, group, timeout=timeout)
        for version in _served(crd):
            if not served or plural not in {p for v in served for p in served_resources(conn, group, v, timeout=timeout) or ()}:
                missing.append(name)
            elif version not in served or plural not in (served_resources(conn, group, version, timeout=timeout) or ()):
                other.append(f"the API server serves {group} {', '.join(served)}, not {version} {plural}, which this operator uses")
    if missing:
        other.append(f"the CRD{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
                     f"{'are' if len(missing) > 1 else 'is'} not installed")
    if other:
        raise CliError(f"{'; '.join(other)}: {CRD_FIX}", exit_code=EXIT_CRD)


def _preflight_rbac(config: OperatorConfig, conn: Connection, *, timeout: float) -> None:
    """kopf starts with a list and a watch of GpuVms; without them it would retry forever."""
    from controller.cli import CliError

    for ns in served_namespaces(config, conn, timeout=timeout):
        try:
            list_page(conn, GROUP, VERSION, PLURAL, namespace=ns or None, timeout=timeout, limit=1)  # allowed at all?
        except KubeCallError as e:
            if e.status == 403:
                raise CliError(f"RBAC forbids listing GpuVms: {e}", exit_code=EXIT_RBAC) from None
            raise
        # kopf's watches (GpuVms, GpuVmClaims) must work for it to start; the claimant Pod watch
        # only degrades (check reports it), so it does not stop the start.
        watch = [(a, ns) for a in OPERATOR_ACCESS if a.verb == "watch" and a.group == GROUP]
        denied = _reviews(conn, watch, timeout=timeout)
        if denied:
            raise CliError(f"RBAC forbids the watches kopf needs: {listed(denied)}", exit_code=EXIT_RBAC)


# ------------------------------------------------------------------ the command

def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check every prerequisite (Kubernetes, Azure, consent) and say what is missing",
        description="Checks what the operator needs, with the same flags and environment as `run`: one line per "
                    "check, a fix for each failure; exit status 0 only when all pass.",
    )
    add_run_arguments(parser)
    mode = parser.add_argument_group("check")
    mode.add_argument("--pre", action="store_true",
                      help="only what can be checked before anything is installed (no CRDs, RBAC or GpuVms)")
    mode.add_argument("--output", choices=["text", "json"], default="text", help="text (default) or json, for CI")
    mode.add_argument("--resource-group", action="append", default=[], metavar="[SUBSCRIPTION/]RESOURCE_GROUP",
                      help="check the identity's Azure permissions here too (repeatable); without it, only where "
                           "the GpuVms' VMs are")
    mode.add_argument("--verbose", action="store_true", help="debug logging on stderr")
    parser.set_defaults(func=_check)


def _marks_print(stream: Any) -> bool:
    """✔/✖ only on a terminal that can show them (a latin-1 console would raise instead)."""
    try:
        "✔✖".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return bool(stream.isatty())


def _check(args: argparse.Namespace) -> int:
    from controller.cli import CliError

    try:
        config = config_from_args(args)
        groups = [parse_resource_group(g, config.engine.default_subscription) for g in args.resource_group]
    except ConfigError as e:
        raise CliError(str(e), exit_code=EXIT_USAGE) from None
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    if not args.verbose:
        # The lines below say what failed; the SDKs' own warnings would say it again, worse.
        for name in ("azure", "urllib3", "kubernetes"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    results = run_checks(config, pre=args.pre, groups=groups)
    if args.output == "json":
        print(render_json(results, pre=args.pre))
    else:
        print(render_text(results, tty=_marks_print(sys.stdout)))
    return exit_code(results)
