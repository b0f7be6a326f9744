"""High availability: with kopf peering only the active replica acts; a paused replica stops
acting within kopf's daemon bound and resumes from status, forgetting GpuVms deleted meanwhile."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kopf._core.engines.peering as kopf_peering
import pytest

from testbed.azuresim import SimulatorConfig
from testbed.sandbox import Azure, Cluster, Sandbox, crd_files, free_port, probe, wait_for
from tests.integration.conftest import CRDS, FAST, FAST_FLAGS, ROOT, SUB, vm_id

PEERING = "gpuvm-operator"
TOKEN_A, TOKEN_B = "sim-token-replica-a", "sim-token-replica-b"
EVERYTHING = ["Microsoft.Compute/*", "Microsoft.Resources/*"]


def principal(token: str) -> str:
    """The simulator records each request's principal as an id derived from its token."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "azuresim-principal:" + token))


@pytest.fixture
def azure_config() -> SimulatorConfig:
    return SimulatorConfig(timings=FAST, retry_after=0.05, restricted_tokens={TOKEN_A: EVERYTHING, TOKEN_B: EVERYTHING})


@pytest.fixture
def crds() -> list[Path]:
    """This project's CRDs and kopf's peering CRDs, which an HA install applies too."""
    return [*CRDS, *crd_files(ROOT / "deploy" / "crds" / "kopf-peering")]


@pytest.fixture(autouse=True)
def distinct_kopf_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each operator thread of one test process gets its own peer id (kopf uses host + pid)."""
    monkeypatch.setattr(kopf_peering, "detect_own_id", lambda manual: kopf_peering.Identity(f"test-{uuid.uuid4().hex[:8]}"))


class Replica:
    def __init__(self, world: Sandbox, *, token: str, priority: int) -> None:
        port = free_port()
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        flags = world.operator_flags(subscription=SUB, timing=FAST_FLAGS)
        flags[flags.index("--simulator-token-file") + 1] = str(world.token_file(token))
        # Confirm unannounced GpuVms one second after a resume instead of 30 (the default).
        flags += ["--peering", PEERING, "--priority", str(priority), "--liveness", self.liveness, "--resume-confirm", "1"]
        self.runner = world.start_operator(flags)
        self.principal = principal(token)

    def health(self) -> dict[str, object]:
        return probe(self.liveness)["operator"]

    def active(self) -> bool:
        try:
            return bool(self.health()["active"])
        except OSError:
            return False  # not serving yet


@pytest.fixture
def peered(world: Sandbox, cluster: Cluster) -> Iterator[Sandbox]:
    cluster.custom.create_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}},
    )
    yield world


def power_requests_by(azure: Azure, who: Replica, *, since: int = 0) -> list[tuple[str, str]]:
    """Power requests of one replica, from the ``since``-th request the simulator saw on."""
    return [(r.operation, r.vm or "") for r in azure.requests()[since:]
            if r.principal == who.principal and r.operation in ("VirtualMachines.Start", "VirtualMachines.Deallocate")]


def walks_by(azure: Azure, who: Replica) -> int:
    return sum(1 for r in azure.requests() if r.principal == who.principal and r.operation == "VirtualMachines.ListAll")


def test_only_the_active_replica_acts_and_a_paused_one_resumes_from_status(
    peered: Sandbox, cluster: Cluster, azure: Azure
) -> None:
    b = Replica(peered, token=TOKEN_B, priority=50)
    wait_for(b.active, 20, what="b, alone, to be active")
    cluster.create("shared", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.create("doomed", {"vm": {"resourceId": vm_id("vm-2")}, "desiredState": "Running"})
    for name in ("shared", "doomed"):
        cluster.wait_reason(name, "Reconciled", timeout=20)
    assert ("VirtualMachines.Start", "vm-1") in power_requests_by(azure, b)

    # A higher-priority replica appears: b pauses within kopf's daemon bound (10 s + 5 s).
    a = Replica(peered, token=TOKEN_A, priority=100)
    started = time.monotonic()
    wait_for(lambda: not b.active(), 25, what="b to pause")
    paused_after = time.monotonic() - started
    assert paused_after < 20
    wait_for(a.active, 20, what="a to be active")
    paused_at = len(azure.requests())

    cluster.patch_spec("shared", {"desiredState": "Deallocated"})
    wait_for(lambda: cluster.status("shared").get("observedGeneration") == 2 and cluster.reason("shared") == "Reconciled", 20)
    assert power_requests_by(azure, a) == [("VirtualMachines.Deallocate", "vm-1")]
    assert power_requests_by(azure, b, since=paused_at) == []
    cluster.delete("doomed")  # a releases it (Retain): b, paused, never hears of it
    wait_for(lambda: cluster.get("doomed") is None, 20, what="doomed to be deleted")

    # a stops cleanly: b resumes at once, from status, and forgets the GpuVm deleted meanwhile.
    a.runner.stop()
    wait_for(b.active, 25, what="b to resume")
    wait_for(lambda: b.health()["gpuvms"] == 1, 20, what="b to forget the deleted GpuVm")
    resumed_at = len(azure.requests())
    azure.out_of_band("vm-2", "deallocate")  # nobody manages vm-2 any more: nobody corrects it
    seen = walks_by(azure, b)
    wait_for(lambda: walks_by(azure, b) >= seen + 3, 20, what="b to walk three more times")
    assert ("VirtualMachines.Start", "vm-2") not in power_requests_by(azure, b, since=resumed_at)
    cluster.patch_spec("shared", {"desiredState": "Running"})
    wait_for(lambda: cluster.status("shared").get("observedGeneration") == 3 and cluster.reason("shared") == "Reconciled", 20)
    assert ("VirtualMachines.Start", "vm-1") in power_requests_by(azure, b, since=resumed_at)
    assert azure.overlaps() == []


def test_a_paused_replica_stops_driving_a_deletion(peered: Sandbox, cluster: Cluster, azure: Azure) -> None:
    """Found by the chaos soak: kopf does not stop a running handler when it pauses a replica,
    and the deletion handler drives the VM in a loop of its own; the paused replica kept retrying
    a deletion's deallocate beside the new active one (two requests on one VM at once)."""
    azure.fault("kind=http op=deallocate vm=vm-1 status=500 error=InternalServerError")  # every deallocate fails
    b = Replica(peered, token=TOKEN_B, priority=50)
    wait_for(b.active, 20, what="b, alone, to be active")
    cluster.create("doomed", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running", "deletionPolicy": "Deallocate"})
    cluster.wait_reason("doomed", "Reconciled", timeout=20)
    cluster.delete("doomed")
    wait_for(lambda: ("VirtualMachines.Deallocate", "vm-1") in power_requests_by(azure, b), 20, what="b to try the deallocate")

    a = Replica(peered, token=TOKEN_A, priority=100)
    wait_for(lambda: not b.active(), 25, what="b to pause")
    paused = time.monotonic()  # the simulator's clock: a request b sent before may still arrive a moment later

    def deallocates(who: Replica, after: float) -> int:
        return sum(1 for r in azure.requests() if r.principal == who.principal and r.time > after
                   and r.operation == "VirtualMachines.Deallocate")

    # a drives the deletion now (and fails as b did, every --error-retry): b must send nothing.
    wait_for(lambda: deallocates(a, paused + 1.0) >= 4, 40, what="a to retry the deallocate")
    assert deallocates(b, paused + 1.0) == 0
    azure.call(azure.sim.clear_faults)
    wait_for(lambda: cluster.get("doomed") is None, 30, what="doomed to be deleted")
    assert azure.power("vm-1") == "deallocated"
    assert azure.overlaps() == []


def test_kopf_keeps_a_finalizer_on_the_peering_object_which_a_running_replica_releases(
    peered: Sandbox, cluster: Cluster
) -> None:
    """What docs/upgrade-uninstall.md tells HA users: the scheduler is a kopf daemon on the
    ClusterKopfPeering, so the object carries the operator's finalizer, also while no replica runs;
    deleted while a replica runs, the object goes."""

    def peering() -> dict[str, object] | None:
        items = cluster.custom.list_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings")["items"]
        return next((p for p in items if p["metadata"]["name"] == PEERING), None)

    def finalizers() -> list[str]:
        found = peering()
        return list((found or {}).get("metadata", {}).get("finalizers") or [])  # type: ignore[union-attr]

    b = Replica(peered, token=TOKEN_B, priority=50)
    wait_for(lambda: finalizers() == ["gpuvm.dev/finalizer"], 20, what="kopf's finalizer on the peering object")
    b.runner.stop()
    assert finalizers() == ["gpuvm.dev/finalizer"]  # no replica: the finalizer stays
    b = Replica(peered, token=TOKEN_B, priority=50)
    wait_for(b.active, 20, what="b active again")
    cluster.custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
    wait_for(lambda: peering() is None, 40, interval=0.2, what="the peering object released and deleted")
