"""gpuvm-claimer, the jobs' role, as rendered: what it grants and what it does not.

Held to what the claim wrapper really does in tests/realkube/test_jobs.py: there the wrapper runs
as a job's ServiceAccount bound to this role, against the real operator on a real API server
whose authorizer enforces it, and the audit log's requests are compared with the role both ways
with the helpers here (``claimer_grants``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.demand import CLAIM_PLURAL
from controller.gpuvm import GROUP, PLURAL
from testbed.kubeemu.access import Access
from tests.deploy.conftest import Grant, denied, grants_for, named, of_kind, render

NS = "ml"
JOB = ("ServiceAccount", "trainer", NS)


def with_job_binding(objects: Sequence[dict[str, Any]], namespace: str = NS) -> list[dict[str, Any]]:
    """The rendered objects, plus the RoleBinding of gpuvm-claimer to the job that docs/api.md tells users to write."""
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "trainer-gpuvm", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gpuvm-claimer"},
        "subjects": [{"kind": "ServiceAccount", "name": JOB[1], "namespace": namespace}],
    }
    return [*objects, binding]


def claimer_grants(objects: Sequence[dict[str, Any]], namespace: str = NS) -> list[Grant]:
    """What gpuvm-claimer, bound as docs/api.md says, grants the job's ServiceAccount of ``namespace``."""
    return grants_for(with_job_binding(objects, namespace), (JOB[0], JOB[1], namespace))


def test_the_claimer_role_cannot_switch_a_vm_or_write_status() -> None:
    grants = claimer_grants(render("default"))
    agent = "gpuvm-claim/x"
    forbidden = [
        Access(agent, "patch", GROUP, PLURAL, "", NS, "a100"),  # desiredState: someone else's VM
        Access(agent, "update", GROUP, PLURAL, "", NS, "a100"),
        Access(agent, "delete", GROUP, PLURAL, "", NS, "a100"),
        Access(agent, "patch", GROUP, PLURAL, "status", NS, "a100"),
        Access(agent, "patch", GROUP, CLAIM_PLURAL, "status", NS, "c"),  # a claim's verdict is the operator's
        Access(agent, "update", GROUP, CLAIM_PLURAL, "status", NS, "c"),
        Access(agent, "create", GROUP, CLAIM_PLURAL, "", "research"),  # another namespace
        Access(agent, "list", GROUP, CLAIM_PLURAL, "", ""),  # all namespaces
        Access(agent, "get", "", "pods", "", NS, "job-x"),
        Access(agent, "create", "", "events", "", NS),
    ]
    assert denied(grants, forbidden) == sorted(forbidden)


def test_the_claimer_role_as_shipped() -> None:
    objects = render("default")
    role = named(objects, "ClusterRole", "gpuvm-claimer")
    assert role["rules"] == [
        {"apiGroups": ["gpuvm.dev"], "resources": ["gpuvmclaims"], "verbs": ["create", "get", "list", "watch", "patch", "delete"]},
        {"apiGroups": ["gpuvm.dev"], "resources": ["gpuvms"], "verbs": ["get", "list", "watch"]},
    ]
    bound = [b for b in [*of_kind(objects, "ClusterRoleBinding"), *of_kind(objects, "RoleBinding")]
             if b["roleRef"]["name"] == "gpuvm-claimer"]
    assert bound == [], "users bind it per namespace (docs/api.md)"
