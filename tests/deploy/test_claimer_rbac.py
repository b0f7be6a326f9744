"""gpuvm-claimer, the jobs' role, held to what the claim wrapper really does — enforced.

The wrapper (``gpuvm-operator claim``, a real subprocess) runs against the emulator as the job's
ServiceAccount (a bearer token in its kubeconfig), whose rules are the emulator's reading of the
*rendered* role bound by a RoleBinding in the job's namespace, the way docs/api.md tells users to
bind it: a request the role does not allow gets the apiserver's 403 and the wrapper fails. Then
the recorded requests are compared with the role both ways: all allowed, and every grant used
except the two documented for kubectl (gpuvms list and watch). The operator's part is played by
the stand-in of tests/integration/claims.py; it and the test's own client are the cluster's
administrator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from controller.claimer import USER_AGENT
from controller.demand import CLAIM_PLURAL
from controller.gpuvm import GROUP, PLURAL
from testbed.kubeemu import Identity, KubeEmulator
from testbed.kubeemu.access import Access
from testbed.sandbox import admin_identity, wait_for
from testbed.serving import ServerThread
from tests.deploy.conftest import Grant, denied, grants_for, named, of_kind, render, unused
from tests.integration.claims import NS, STUCK_LABEL, ClaimsStandIn, Kube

JOB = ("ServiceAccount", "trainer", NS)
JOB_USER = Identity.service_account_name(NS, JOB[1])
JOB_TOKEN = "trainer-token"
CLI = str(Path(sys.executable).parent / "gpuvm-operator")


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
    return grants_for(with_job_binding(objects, namespace), JOB)


def wrapper(log: frozenset[Access]) -> set[Access]:
    return {a for a in log if a.user_agent.startswith(USER_AGENT.split("/")[0] + "/")}


@pytest.fixture(scope="module")
def enforced_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[dict[str, Any]], frozenset[Access]]]:
    objects = render("default")
    job = Identity.from_rbac(with_job_binding(objects), name=JOB_USER, token=JOB_TOKEN)
    assert job.rules, "the rendered role bound to the job grants nothing"
    workdir = tmp_path_factory.mktemp("claimer-rbac")
    thread = ServerThread(KubeEmulator(of_kind(objects, "CustomResourceDefinition"), bookmark_interval=1.0,
                                       identities=[job, admin_identity()]), name="kube-emulator").start()
    kube = Kube(thread, workdir)
    stand_in = ClaimsStandIn(kube.emulator.url, token=kube.cluster.token).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBERNETES_"))}
        env.update(KUBECONFIG=str(kube.kubeconfig_with(JOB_TOKEN)))
        kube.gpuvm("a100")
        kube.gpuvm("stuck", labels={STUCK_LABEL: "AllocationFailed"})

        # 1. held by a lease, renewed while the command runs (patch), then let go (delete)
        go_on = workdir / "go-on"
        proc = subprocess.Popen([CLI, "claim", "a100", "--lease", "2s", "--", sys.executable, "-c",
                                 f"import os, time\nwhile not os.path.exists({str(go_on)!r}): time.sleep(0.05)"],
                                env=env, stderr=subprocess.PIPE, text=True)
        renewals: set[str] = set()

        def renewed() -> bool:
            renewals.update(c["spec"].get("renewTime", "") for c in kube.claims())
            return len(renewals) >= 2

        try:
            wait_for(renewed, 30, interval=0.2, what="a lease renewal")
        finally:
            go_on.touch()
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

        # 2. owned by its Pod, in the job's Pod (downward API)
        done = subprocess.run([CLI, "claim", "a100", "--", "true"], capture_output=True, text=True, timeout=90,
                              env={**env, "POD_NAME": "job-x", "POD_UID": kube.pod("job-x"), "POD_NAMESPACE": NS})
        assert done.returncode == 0, done.stderr

        # 3. a VM that never comes: the wait times out (and reads the claim's last state)
        done = subprocess.run([CLI, "claim", "stuck", "--timeout", "2s", "--", "true"], capture_output=True, text=True,
                              timeout=90, env=env)
        assert done.returncode == 124, done.stderr
        wait_for(lambda: kube.claims() == [], 10, what="no claim left")
        yield objects, kube.accesses()
    finally:
        stand_in.stop()
        kube.cluster.close()
        thread.stop()


def test_the_wrapper_needs_nothing_the_claimer_role_does_not_grant(enforced_run: Any) -> None:
    objects, log = enforced_run
    seen = wrapper(log)
    assert seen, "no request of the wrapper was recorded"
    assert denied(claimer_grants(objects), seen) == []


def test_every_grant_is_used_but_the_two_kept_for_kubectl(enforced_run: Any) -> None:
    objects, log = enforced_run
    idle = unused(claimer_grants(objects), wrapper(log))
    via = "ClusterRole/gpuvm-claimer (RoleBinding ml/trainer-gpuvm)"
    assert idle == [f"{via}: list {GROUP}/{PLURAL}", f"{via}: watch {GROUP}/{PLURAL}"]


def test_the_wrappers_requests_spelled_out(enforced_run: Any) -> None:
    _, log = enforced_run
    kinds = {(a.verb, a.resource, a.subresource) for a in wrapper(log) if a.is_resource_request}
    assert kinds == {
        ("get", PLURAL, ""),  # the GpuVm exists
        ("create", CLAIM_PLURAL, ""),
        ("list", CLAIM_PLURAL, ""),  # then watch from the list's resourceVersion
        ("watch", CLAIM_PLURAL, ""),
        ("patch", CLAIM_PLURAL, ""),  # the lease
        ("get", CLAIM_PLURAL, ""),  # the last state on a timeout
        ("delete", CLAIM_PLURAL, ""),
    }
    assert {a.namespace for a in wrapper(log) if a.is_resource_request} == {NS}
    watched = {a.name for a in wrapper(log) if a.verb in ("list", "watch")}
    assert all(watched), "the wrapper lists and watches its own claim by name, never all claims"


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
