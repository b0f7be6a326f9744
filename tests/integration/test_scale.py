"""Bulk observation, paced and fair action, metrics, and sharding by label."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from testbed.azuresim import SimulatorConfig, SimVm, ThrottlingConfig
from testbed.azuresim.throttling import BucketLimit
from testbed.sandbox import Sandbox, free_port, scrape, settled, wait_for
from tests.integration.conftest import CRDS, FAST, MANAGED, NS, RG, SUB, Azure, Cluster, vm_id


def settle_all(cluster: Cluster, names: list[str], timeout: float = 60) -> None:
    wait_for(lambda: all(settled(cluster.get(n) or {"metadata": {}}) for n in names), timeout, interval=0.05,
             what="all GpuVms settled")


def test_settled_vms_are_observed_in_bulk(cluster: Cluster, azure: Azure, start_operator) -> None:
    names = [f"vm-{i}" for i in range(1, 7)]
    start_operator(["--resync-interval", "0.5"])
    for name in names:
        cluster.create(name, {"vm": {"resourceId": vm_id(name)}, "desiredState": "Deallocated"})
    settle_all(cluster, names)
    gets, walks = azure.count("VirtualMachines.Get"), azure.count("VirtualMachines.ListAll")
    wait_for(lambda: azure.count("VirtualMachines.ListAll") >= walks + 4, 30, what="four more walks")
    assert azure.count("VirtualMachines.Get") == gets  # no per-VM reads while everything is settled
    assert azure.count("VirtualMachines.InstanceView") == 0


@pytest.mark.parametrize("azure_vms", [[SimVm(subscription_id=SUB, resource_group=RG, name=f"b-{i}", tags=MANAGED)
                                         for i in range(30)]], ids=["30 VMs"])
def test_a_spec_edit_of_many_gpuvms_that_needs_no_action_is_confirmed_in_bulk(
        cluster: Cluster, azure: Azure, start_operator, azure_vms: list[SimVm]) -> None:
    # A new generation counts as reached only on a look from after it (f7ab667); when a GitOps sync
    # edits many GpuVms at once, that look must come from walks, not one GET per VM.
    names = [vm.name for vm in azure_vms]
    start_operator()
    for name in names:
        cluster.create(name, {"vm": {"resourceId": vm_id(name)}, "desiredState": "Deallocated"})
    settle_all(cluster, names)
    gets, walks = azure.count("VirtualMachines.Get"), azure.count("VirtualMachines.ListAll")
    for name in names:
        cluster.patch_spec(name, {"driftPolicy": "Report"})
    settle_all(cluster, names)
    assert all(azure.power(n) == "deallocated" for n in names)
    gets, walks = azure.count("VirtualMachines.Get") - gets, azure.count("VirtualMachines.ListAll") - walks
    # At most two lone GETs (twice the one page a round costs) before each round and after the
    # last, however edits and rounds interleave (20 of 30 at worst); a GET per GpuVm would be 30.
    assert walks >= 1
    assert gets <= 2 * (walks + 1) and gets < len(names), (gets, walks)


def test_out_of_band_change_is_seen_by_the_walk(cluster: Cluster, azure: Azure, start_operator) -> None:
    start_operator(["--resync-interval", "0.5", "--transition-poll", "30"])  # own reads would be too slow
    cluster.create("w", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated", "driftPolicy": "Report"})
    settle_all(cluster, ["w"])
    azure.out_of_band("vm-1", "start")
    wait_for(lambda: cluster.status("w").get("powerState") == "Running" and cluster.reason("w") == "Drifted", 30)


def test_listing_refused_at_subscription_scope_walks_resource_groups(cluster: Cluster, azure: Azure, start_operator) -> None:
    azure.fault("kind=http op=listAll status=403 error=AuthorizationFailed")
    start_operator(["--resync-interval", "0.5"])
    cluster.create("g", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated"})
    settle_all(cluster, ["g"])
    wait_for(lambda: azure.count("VirtualMachines.List", 200) >= 2, 30, what="resource-group walks")


def test_a_burst_drains_under_the_operation_cap_without_conflicts(cluster: Cluster, azure: Azure, start_operator) -> None:
    cluster.namespace("team-a")
    cluster.namespace("team-b")
    start_operator(["--max-operations", "2"])
    names = [f"vm-{i}" for i in range(1, 7)]
    for i, name in enumerate(names):
        cluster.create(name, {"vm": {"resourceId": vm_id(name)}, "desiredState": "Running"}, ns="team-a" if i % 2 else "team-b")
    wait_for(lambda: all(settled(o) for o in cluster.all_objects()) and len(cluster.all_objects()) == 6, 90, interval=0.05)
    assert all(azure.power(n) == "running" for n in names)
    assert azure.overlaps() == []
    assert [r for r in azure.requests() if r.status == 409] == []
    # Never more than two operations at once: each start began after an earlier one ended.
    starts = sorted(r.time for r in azure.requests() if r.operation == "VirtualMachines.Start")
    assert len(starts) == 6
    assert starts[2] - starts[0] >= FAST.start * 0.9


def test_metrics(cluster: Cluster, azure: Azure, start_operator) -> None:
    port = free_port()
    start_operator(["--metrics-port", str(port)])
    cluster.create("m", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.wait_reason("m", "Reconciled")
    # Metrics are updated around the status write, not before it: wait for all of them.
    expected = (
        "gpuvm_intent_to_desired_seconds_count 1.0",
        'gpuvm_azure_requests_total{code="202",operation="VirtualMachines.Start"} 1.0',
        f'gpuvm_power_state{{name="m",namespace="{NS}",state="Running",vm="vm-1"}} 1.0',
        'gpuvm_operation_duration_seconds_count{action="Start",result="Succeeded"} 1.0',
        'gpuvm_operations_in_flight{action="Start"} 0.0',
    )
    text = wait_for(lambda: (t := urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
                    and all(line in t for line in expected) and t, 30, what=f"metrics {expected}")
    assert "gpuvm_reconcile_duration_seconds_bucket" in text
    billed = next(line for line in text.splitlines() if line.startswith("gpuvm_billed_seconds_total{"))
    assert 'name="m"' in billed and float(billed.rsplit(" ", 1)[1]) > 0


def test_two_operators_share_a_cluster_by_label(cluster: Cluster, azure: Azure, start_operator) -> None:
    first = start_operator(["--selector", "shard=a"])
    cluster.create("a", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"}, labels={"shard": "a"})
    cluster.create("b", {"vm": {"resourceId": vm_id("vm-2")}, "desiredState": "Running"}, labels={"shard": "b"})
    cluster.wait_reason("a", "Reconciled")
    b = cluster.get("b")
    assert "status" not in b and not b["metadata"].get("finalizers")  # the shard-a operator never touched it
    second = start_operator(["--selector", "shard=b"])
    cluster.wait_reason("b", "Reconciled")
    assert azure.power("vm-1") == azure.power("vm-2") == "running"
    assert len(azure.power_requests("vm-1", "start")) == len(azure.power_requests("vm-2", "start")) == 1
    first.stop()
    second.stop()


def test_throttling_pauses_the_subscription_and_recovers(tmp_path) -> None:
    limits = {"SubscriptionWrites": BucketLimit(capacity=2, per_second=0.5)}
    config = SimulatorConfig(timings=FAST, retry_after=0.05, throttling=ThrottlingConfig(limits=limits))
    vms = [SimVm(subscription_id=SUB, resource_group=RG, name=f"t-{i}", tags=MANAGED) for i in range(4)]
    with Sandbox(crds=CRDS, simulator=config, vms=vms, workdir=tmp_path, namespace=NS) as world:
        world.start_operator(world.operator_flags(subscription=SUB, timing=("--operation-poll", "0.05", "--azure-budget-share", "0")))
        for vm in vms:
            world.cluster.create(vm.name, {"vm": {"resourceGroup": RG, "name": vm.name}, "desiredState": "Running"})
        wait_for(lambda: all(settled(o) for o in world.cluster.all_objects()), 90, interval=0.05)
        starts = [r for r in world.azure.requests() if r.operation == "VirtualMachines.Start"]
        throttled = [r for r in starts if r.status == 429]
        assert throttled, "the tiny write bucket should have answered 429 at least once"
        # After a 429 the subscription's writes pause for Retry-After (>= 1 s here): apart from
        # requests already on the wire when it arrived, none reach Azure in that window.
        for t429 in throttled:
            assert [r.time - t429.time for r in starts if 0.1 < r.time - t429.time < 0.9] == []
        assert len([r for r in starts if r.status == 202]) == 4
        assert world.azure.overlaps() == []


def test_two_operators_share_a_cluster_by_namespace_pattern(cluster: Cluster, azure: Azure, start_operator) -> None:
    for ns in ("team-a1", "team-b1"):
        cluster.namespace(ns)
    start_operator(["--namespace", "team-a*"])
    cluster.create("a", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"}, ns="team-a1")
    cluster.create("b", {"vm": {"resourceId": vm_id("vm-2")}, "desiredState": "Running"}, ns="team-b1")
    cluster.wait_reason("a", "Reconciled", ns="team-a1")
    b = cluster.get("b", ns="team-b1")
    assert "status" not in b and not b["metadata"].get("finalizers")
    start_operator(["--namespace", "team-b*"])
    cluster.wait_reason("b", "Reconciled", ns="team-b1")
    assert len(azure.power_requests("vm-1", "start")) == len(azure.power_requests("vm-2", "start")) == 1


def test_a_metrics_port_in_use_stops_the_start_with_a_clear_error(start_operator) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError) as e:
            start_operator(["--metrics-port", str(port)])
    assert str(e.value) == f"start-up failed: cannot serve metrics on port {port}: Address already in use"


@pytest.mark.parametrize("by_group", [False, True], ids=["subscription", "resource-groups"])
def test_tags_are_read_in_bulk_and_used_for_consent(cluster: Cluster, azure: Azure, start_operator, by_group: bool) -> None:
    listing = "VirtualMachines.List" if by_group else "VirtualMachines.ListAll"
    if by_group:  # an identity with a role on resource groups only: listing the subscription is refused
        azure.fault("kind=http op=listAll status=403 error=AuthorizationFailed")
    start_operator(["--resync-interval", "0.3", "--tag-refresh-interval", "0.5"])
    cluster.create("t", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Deallocated"})
    settle_all(cluster, ["t"])
    gets = azure.count("VirtualMachines.Get")
    # Someone removes the opt-in tag in the portal; only a bulk read of tags can tell.
    azure.call(lambda: azure.sim.set_tags("vm-1", {}))
    pages = azure.count(listing)
    wait_for(lambda: azure.count(listing) >= pages + 4, 30, what="a few more walks, tags pages among them")
    cluster.patch_spec("t", {"desiredState": "Running"})
    cluster.wait_reason("t", "NotManaged")
    assert azure.count("VirtualMachines.Get") == gets  # the consent came from the bulk read, not a read per VM
    assert azure.power_requests("vm-1", "start") == []


def test_a_cold_start_reaches_every_settled_gpuvm_with_bulk_reads_and_writes_only_what_changed(
    cluster: Cluster, azure: Azure, start_operator
) -> None:
    names = [f"vm-{i}" for i in range(1, 7)] + ["vm-running"]
    for name in names:
        cluster.create(name, {"vm": {"resourceId": vm_id(name)}, "desiredState": "Deallocated" if name != "vm-running" else "Running"})
    first = start_operator()
    wait_for(lambda: all(settled(o) for o in cluster.objects().values()), 20, what="all settled")
    first.stop()
    azure.out_of_band("vm-6", "start")  # while no operator runs: its stored status is now stale
    wait_for(lambda: azure.power("vm-6") == "running", 10)
    before = len(azure.requests())
    port = free_port()
    start_operator(["--metrics-port", str(port), "--resync-interval", "300"])
    wait_for(lambda: scrape(port).get("gpuvm_intent_to_desired_seconds_count", 0) == len(names), 20,
             what="every GpuVm Ready again under the new operator")
    requests = azure.requests()[before:]
    assert [(r.operation, r.vm) for r in requests if r.operation in ("VirtualMachines.Get", "VirtualMachines.InstanceView")] == []
    walks = [r for r in requests if r.operation == "VirtualMachines.ListAll"]
    assert 1 <= len(walks) <= 3  # one statusOnly walk and the tag pages (one page each here)
    metrics = scrape(port)
    # vm-6 was corrected (its deallocate and the status it changed); nothing else was written.
    assert metrics.get('gpuvm_status_writes_total{cause="repair"}', 0) == 0
    assert metrics.get('gpuvm_status_writes_total{cause="change"}', 0) >= 1
    assert azure.power_requests("vm-6", "deallocate")


def test_no_operation_goes_unobserved_longer_than_its_budget_allows(tmp_path) -> None:
    """The starvation guard (issue 15): 40 starts run while 200 more GpuVms appear and compete for
    the same read budget. With polls at P per second shared by N operations polled every I
    seconds, each operation is looked at least every I + N / P seconds; a walk (every busy
    interval) may look sooner. Bound here: I 0.5 s + 40 / 5 s + 2 s slack for a loaded machine
    = 10.5 s. Before the read lanes, the new GpuVms' GETs pre-charged the read bucket and
    operations went unobserved for minutes."""
    flips = [SimVm(subscription_id=SUB, resource_group=RG, name=f"flip-{i:02d}", tags=MANAGED, timings={"start": 2.0})
             for i in range(40)]
    crowd = [SimVm(subscription_id=SUB, resource_group=RG, name=f"crowd-{i:03d}", tags=MANAGED) for i in range(200)]
    config = SimulatorConfig(timings=FAST, retry_after=0.05)
    budget = ("--azure-budget", "read=30/15", "--azure-budget", "poll=5/5", "--azure-budget", "list=5/2")
    with Sandbox(crds=CRDS, simulator=config, vms=flips + crowd, workdir=tmp_path, namespace=NS) as world:
        assert world.cluster is not None and world.azure is not None
        world.start_operator(world.operator_flags(subscription=SUB, timing=("--operation-poll", "0.5", *budget)))
        for vm in flips:
            world.cluster.create(vm.name, {"vm": {"resourceGroup": RG, "name": vm.name}, "desiredState": "Deallocated"})
        wait_for(lambda: sum(1 for o in world.cluster.all_objects() if settled(o)) == 40, 40, interval=0.1, what="flips settled")
        for vm in flips:
            world.cluster.patch_spec(vm.name, {"desiredState": "Running"})
        for vm in crowd:
            world.cluster.create(vm.name, {"vm": {"resourceGroup": RG, "name": vm.name}, "desiredState": "Deallocated"})
        wait_for(lambda: sum(1 for o in world.cluster.all_objects() if settled(o)) == 240, 90, interval=0.2,
                 what="every GpuVm settled")
        guard = [u for u in world.azure.unobserved() if u.action == "start"]
        assert len(guard) == 40
        worst = max(guard, key=lambda u: u.longest)
        assert worst.longest <= 10.5, f"{worst.vm}'s start went {worst.longest:.1f} s without a telling read"
        assert all(u.seen_ended_after is not None for u in guard)
