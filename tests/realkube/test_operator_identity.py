"""The operator as the ServiceAccount of deploy/manifests, on a real API server with RBAC on.

The default install's ServiceAccount, ClusterRole and binding, and the CRDs, are applied to the
real server; the operator runs with a token of that ServiceAccount minted by the TokenRequest API
(what the Deployment's projected token volume gives it). That it then runs GpuVms, answers claims,
posts Events and holds and releases its finalizer proves the shipped ClusterRole suffices on a
real authorizer — the emulator's RBAC is our reading of it. The audit log shows that no request
of the operator was refused, and requests it has no business making really are.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kubernetes import client

from controller.gpuvm import GROUP, PLURAL, VERSION
from testbed.realcluster import can_i
from testbed.sandbox import Azure, Cluster, OperatorRunner, settled, wait_for
from tests.deploy.conftest import OPERATOR_NAMESPACE
from tests.realkube.operated import World, as_user, gpuvm, installed, vms

FINALIZER = "gpuvm.dev/finalizer"


@pytest.fixture(scope="module")
def world(world_factory: Callable[..., World], admin_api: client.ApiClient) -> World:
    installed(admin_api, "default")
    return world_factory(vms=vms("vm-1", "vm-2", "vm-3"))


@pytest.fixture(scope="module")
def operator(world: World) -> OperatorRunner:
    """The default install's operator, cluster-wide and standalone; stopped with the World."""
    return world.start_operator()


@pytest.fixture
def azure(world: World) -> Azure:
    assert world.azure is not None
    return world.azure


def test_as_its_service_account_the_operator_runs_a_vm_answers_a_claim_and_releases_on_delete(
    world: World, operator: OperatorRunner, cluster: Cluster, azure: Azure
) -> None:
    # A pinned GpuVm: started, Ready, Events posted, kopf's finalizer on it.
    gpuvm(cluster, "pinned", "vm-1", desired="Running", deletionPolicy="Deallocate")
    obj = cluster.wait_object("pinned", lambda o: settled(o) and o["status"].get("powerState") == "Running", timeout=60,
                              what="pinned Running and Ready")
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert azure.power("vm-1") == "running"
    events = cluster.wait_events("pinned", "StartRequested", "Started", timeout=30)
    assert {r for t, r, _ in events if t == "Normal"} >= {"StartRequested", "Started"}

    # An Auto GpuVm and a claim: the operator binds it, starts the VM and says so in the claim.
    gpuvm(cluster, "auto", "vm-2", idleTimeout="0s")
    cluster.claim("job", "auto")
    wait_for(lambda: cluster.claim_ready("job") == ("Bound", "True", "VmRunning", "the VM of GpuVm auto is running"), 60,
             interval=0.1, what="the claim answered: Bound and Ready")
    assert azure.power("vm-2") == "running"
    cluster.wait_events("job", "Bound", timeout=30)
    cluster.delete_claim("job")
    wait_for(lambda: azure.power("vm-2") == "deallocated", 60, interval=0.1, what="the VM idle and off")

    # Deleted with deletionPolicy Deallocate: the finalizer holds the object until the VM is off.
    answer = cluster.delete("pinned")
    assert answer.get("metadata", {}).get("deletionTimestamp"), "the finalizer keeps it while the operator works"
    wait_for(lambda: cluster.get("pinned") is None, 60, interval=0.1, what="pinned released by the operator")
    assert azure.power("vm-1") == "deallocated"

    made = world.operator_requests()
    kinds = {(a.verb, a.resource, a.subresource) for a, _ in made}
    assert kinds >= {("watch", "gpuvms", ""), ("patch", "gpuvms", ""), ("patch", "gpuvms", "status"),
                     ("patch", "gpuvmclaims", "status"), ("create", "events", "")}, "the audit log misses the operator"
    assert not [code for _, code in made if code == 401], "the operator's token was not accepted"
    assert world.refused_by_rbac() == [], "the operator's ClusterRole refused some of its requests"
    assert operator.alive


def test_the_operators_service_account_is_refused_what_it_has_no_business_doing(
    world: World, cluster: Cluster, namespace: str
) -> None:
    """Least privilege, by the real authorizer: real requests with the operator's token."""
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": "azure-sp"}, "stringData": {"secret": "x"}})
    pod = cluster.pod("someones-job")
    with as_user(world.operator_kubeconfig) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        refused = {
            "read a Secret": lambda: core.read_namespaced_secret("azure-sp", namespace),
            "list Secrets": lambda: core.list_secret_for_all_namespaces(),
            "delete a Pod": lambda: core.delete_namespaced_pod("someones-job", namespace),
            "create a GpuVm": lambda: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuVm", "metadata": {"name": "x"},
                "spec": {"vm": {"resourceGroup": "rg", "name": "x"}}}),
            "delete a claim": lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "gpuvmclaims", "x"),
            "list ConfigMaps": lambda: core.list_namespaced_config_map(OPERATOR_NAMESPACE),
        }
        for what, call in refused.items():
            with pytest.raises(client.ApiException) as denied:
                call()
            assert denied.value.status == 403, f"{what}: {denied.value.status} {denied.value.reason}"
            assert f"system:serviceaccount:{OPERATOR_NAMESPACE}:gpuvm-operator" in denied.value.body, what
        # And what it does need, it has (the same identity, so the refusals above are not a broken token).
        assert can_i(api, "patch", PLURAL, group=GROUP, namespace=namespace, subresource="status")
        assert core.read_namespaced_pod("someones-job", namespace).metadata.uid == pod["metadata"]["uid"]
