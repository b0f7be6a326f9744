"""High availability on a real API server: kopf peering between two replicas of the ``ha`` overlay.

The overlay's RBAC (the operator's ClusterRole plus gpuvm-operator-peering), the peering CRDs and
the ClusterKopfPeering object are applied to the real server; both replicas run as the
operator's ServiceAccount, with the priorities of replica-a (100) and replica-b (90). kopf's
peering is a protocol on that object (each peer merge-patches its entry with a lease); the
emulator's reading of merge patches and watches is what tests/integration/test_ha.py relies on,
so here the real server carries it: the higher priority acts alone, and when it stops, the
other takes over and reconciles a change made after the hand-over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kopf._core.engines.peering as kopf_peering
import pytest
from kubernetes import client

from testbed.azuresim import SimulatorConfig
from testbed.sandbox import Azure, Cluster, free_port, probe, settled, wait_for
from tests.integration.conftest import FAST
from tests.realkube.operated import World, gpuvm, installed, vms

PEERING = "gpuvm-operator"  # the ClusterKopfPeering of deploy/manifests/overlays/ha/peering.yaml
TOKEN_A, TOKEN_B = "sim-token-replica-a", "sim-token-replica-b"
EVERYTHING = ["Microsoft.Compute/*", "Microsoft.Resources/*"]


def principal(token: str) -> str:
    """The simulator records each request's principal as an id derived from its token."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "azuresim-principal:" + token))


@pytest.fixture(scope="module")
def distinct_kopf_ids() -> Iterator[None]:
    """Each operator thread of one test process gets its own peer id (kopf uses host + pid)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kopf_peering, "detect_own_id", lambda manual: kopf_peering.Identity(f"test-{uuid.uuid4().hex[:8]}"))
        yield


@pytest.fixture(scope="module")
def world(world_factory: Callable[..., World], admin_api: client.ApiClient, distinct_kopf_ids: None) -> Iterator[World]:
    objects = installed(admin_api, "ha")
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "ClusterKopfPeering"} == {PEERING}
    made = world_factory(vms=vms("vm-ha-1"), simulator=SimulatorConfig(
        timings=FAST, retry_after=0.05, restricted_tokens={TOKEN_A: EVERYTHING, TOKEN_B: EVERYTHING}))
    yield made
    # The extra rights of the HA install go with this module: a standalone operator of another
    # module proves what the default install's ClusterRole alone allows. The replicas stop first:
    # a stopping replica patches itself out of the peering object.
    for runner in made.operators:
        runner.stop()
    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.delete_cluster_role_binding("gpuvm-operator-peering")
    rbac.delete_cluster_role("gpuvm-operator-peering")


class Replica:
    """One replica of the ha overlay: peering, its priority, a liveness endpoint, its own Azure token."""

    def __init__(self, world: World, *, token: str, priority: int) -> None:
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        # Confirm unannounced GpuVms one second after a resume instead of 30 (the default).
        self.runner = world.start_operator(["--peering", PEERING, "--priority", str(priority), "--liveness", self.liveness,
                                            "--resume-confirm", "1"], azure_token=token)
        self.principal = principal(token)

    def active(self) -> bool:
        try:
            return bool(probe(self.liveness)["operator"]["active"])
        except OSError:
            return False  # not serving yet


def power_requests_by(azure: Azure, who: Replica) -> list[tuple[str, str]]:
    return [(r.operation, r.vm or "") for r in azure.requests()
            if r.principal == who.principal and r.operation in ("VirtualMachines.Start", "VirtualMachines.Deallocate")]


def peers(admin_api: client.ApiClient) -> dict[str, Any]:
    """kopf's entries in the peering object's status: peer id -> {priority, lastseen, lifetime}."""
    body = client.CustomObjectsApi(admin_api).get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
    return {k: v for k, v in (body.get("status") or {}).items() if isinstance(v, dict)}


def test_the_higher_priority_replica_acts_and_the_other_takes_over_when_it_stops(
    world: World, cluster: Cluster, admin_api: client.ApiClient
) -> None:
    azure = world.azure
    assert azure is not None
    a = Replica(world, token=TOKEN_A, priority=100)
    b = Replica(world, token=TOKEN_B, priority=90)
    wait_for(lambda: a.active() and not b.active(), 60, interval=0.1, what="a active and b paused")
    wait_for(lambda: sorted(p.get("priority") for p in peers(admin_api).values()) == [90, 100], 30, interval=0.1,
             what="both peers in the ClusterKopfPeering's status")

    gpuvm(cluster, "shared", "vm-ha-1", desired="Running")
    cluster.wait_object("shared", lambda o: settled(o) and o["status"].get("powerState") == "Running", timeout=60)
    assert power_requests_by(azure, a) == [("VirtualMachines.Start", "vm-ha-1")]
    assert power_requests_by(azure, b) == [] and not b.active()

    # a stops cleanly (a rollout, a drain): it leaves the peering, b resumes and does the work.
    a.runner.stop()
    wait_for(b.active, 60, interval=0.1, what="b to take over")
    cluster.patch_spec("shared", {"desiredState": "Deallocated"})
    cluster.wait_object("shared", lambda o: settled(o) and o["metadata"]["generation"] == 2
                        and o["status"].get("powerState") == "Deallocated", timeout=60, what="b to reconcile the change")
    assert azure.power("vm-ha-1") == "deallocated"
    assert power_requests_by(azure, b) == [("VirtualMachines.Deallocate", "vm-ha-1")]
    assert power_requests_by(azure, a) == [("VirtualMachines.Start", "vm-ha-1")]
    assert azure.overlaps() == []
    assert not [code for _, code in world.operator_requests() if code == 401], "a replica's token was not accepted"
    assert world.refused_by_rbac() == [], "the ha overlay's RBAC refused some request of a replica"
