"""Working with a real API server (testbed/controlplane.py) the way an installation does.

The emulator is loaded with CRDs and identities in-process; a real API server is not: whatever
the tests need there is sent over the API, as ``kubectl apply`` and a kubelet would send it. Here:
applying rendered manifests (server-side apply, CRDs waited for until Established), minting a
ServiceAccount's token with the TokenRequest API (what a projected token volume gives a pod), and
an audit policy whose log shows which requests each ServiceAccount made, so that a role can be
compared with the requests really sent, as the emulator's access log allows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from testbed.kubeemu.access import Access

FIELD_MANAGER = "gpuvm-testbed"

# Metadata (who, which verb on which object, the answer) of every request a ServiceAccount outside
# kube-system makes: the identities under test. The controller manager's own controllers are
# ServiceAccounts of kube-system (--use-service-account-credentials): left out, as is every
# request of the tests' administrator, so the log stays small on a busy session.
AUDIT_POLICY: Mapping[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def audit_flags(workdir: Path) -> tuple[str, ...]:
    """kube-apiserver flags that write the audit log of ``AUDIT_POLICY`` to ``workdir/audit.log``.

    Blocking mode (the log backend's default, spelled out): an event is written before the
    response is sent, so once a client has its answer, the log shows the request.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(dict(AUDIT_POLICY)))
    return (f"--audit-policy-file={policy}", f"--audit-log-path={workdir / 'audit.log'}", "--audit-log-mode=blocking",
            "--audit-log-format=json", "--audit-log-maxsize=0")


def _events(log: Path, user: str) -> list[tuple[Access, dict[str, Any]]]:
    """``user``'s audit events, each with its request as a testbed.kubeemu.access.Access record
    (so the RBAC comparisons written for the emulator's access log apply unchanged)."""
    out: list[tuple[Access, dict[str, Any]]] = []
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if (event.get("user") or {}).get("username") != user:
            continue
        ref = event.get("objectRef")
        agent = event.get("userAgent", "")
        if ref is None:
            access = Access(agent, event["verb"], path=event["requestURI"].split("?")[0])
        else:
            access = Access(agent, event["verb"], ref.get("apiGroup", ""), ref.get("resource", ""),
                            ref.get("subresource", ""), ref.get("namespace", ""), ref.get("name", ""))
        out.append((access, event))
    return out


def audited(log: Path, user: str) -> list[tuple[Access, int]]:
    """The requests ``user`` made, from the audit log, each with the HTTP status it got."""
    return [(access, int((event.get("responseStatus") or {}).get("code", 0))) for access, event in _events(log, user)]


def forbidden(log: Path, user: str) -> list[Access]:
    """The requests of ``user`` that the authorizer (RBAC) refused, from the audit log.

    Not every 403 is RBAC's: admission refuses what RBAC allowed, e.g. an Event posted into a
    namespace that is being deleted (NamespaceLifecycle). The audit event says which: its
    ``authorization.k8s.io/decision`` annotation is ``forbid`` only for the authorizer's refusals.
    """
    return [access for access, event in _events(log, user)
            if (event.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"]


def apply(api: client.ApiClient, objects: Iterable[Mapping[str, Any]], *, timeout: float = 60.0) -> None:
    """``kubectl apply --server-side --force-conflicts`` of ``objects``, CRDs first and waited for
    until Established (the API serves their kinds only then), idempotent: a session's tests may
    install the same manifests more than once."""
    objects = list(objects)
    crds = [o for o in objects if o.get("kind") == "CustomResourceDefinition"]
    rest = [o for o in objects if o.get("kind") != "CustomResourceDefinition"]
    if crds:
        _apply(DynamicClient(api), crds)
        extensions = client.ApiextensionsV1Api(api)
        deadline = time.monotonic() + timeout
        for crd in crds:
            name = crd["metadata"]["name"]
            while not any(c.type == "Established" and c.status == "True"
                          for c in extensions.read_custom_resource_definition(name).status.conditions or []):
                if time.monotonic() > deadline:
                    raise AssertionError(f"CRD {name} not Established within {timeout} s")
                time.sleep(0.1)
    if rest:
        _apply(DynamicClient(api), rest)  # a new client: its discovery knows the new kinds


def _apply(dynamic: DynamicClient, objects: Sequence[Mapping[str, Any]]) -> None:
    # Namespaces before what lives in them.
    for obj in sorted(objects, key=lambda o: o.get("kind") != "Namespace"):
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dynamic.server_side_apply(resource, body=dict(obj), namespace=obj["metadata"].get("namespace"),
                                  field_manager=FIELD_MANAGER, force_conflicts=True)


def service_account_token(api: client.ApiClient, namespace: str, name: str, *, seconds: int = 3600) -> str:
    """A bound token of the ServiceAccount, minted by the API server's TokenRequest API (as the
    kubelet does for a projected token volume): signed with the server's key, its user is
    ``system:serviceaccount:<namespace>:<name>``."""
    body = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, body)
    return str(answer.status.token)


def service_account(api: client.ApiClient, namespace: str, name: str) -> None:
    """Create the ServiceAccount unless it exists."""
    try:
        client.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except client.ApiException as e:
        if e.status != 409:
            raise


def role_binding(api: client.ApiClient, namespace: str, name: str, *, cluster_role: str, service_account: str) -> None:
    """``kubectl create rolebinding NAME -n NAMESPACE --clusterrole=ROLE --serviceaccount=NAMESPACE:SA``."""
    body = {
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    }
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(namespace, body)


def can_i(api: client.ApiClient, verb: str, resource: str, *, group: str = "", namespace: str = "",
          subresource: str = "") -> bool:
    """``kubectl auth can-i`` as the client's own identity (a SelfSubjectAccessReview)."""
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(verb=verb, group=group, resource=resource,
                                                        namespace=namespace or None, subresource=subresource or None)))
    return bool(client.AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed)
