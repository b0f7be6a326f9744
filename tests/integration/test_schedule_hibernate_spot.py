"""Schedules, hibernation with its fallback, and Spot evictions, with the real operator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from testbed.azuresim import SimVm
from testbed.sandbox import Azure, Cluster, OperatorRunner, wait_for
from tests.integration.conftest import MANAGED, RG, SUB, default_vms, vm_id


@pytest.fixture
def azure_vms() -> list[SimVm]:
    return default_vms() + [
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-hib", tags=MANAGED, hibernation_enabled=True,
              power_state="running"),
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-plain", tags=MANAGED, power_state="running"),
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-spot", tags=MANAGED, priority="Spot"),
    ]


@pytest.fixture
def operator(start_operator: Callable[..., OperatorRunner]) -> OperatorRunner:
    return start_operator(["--deallocation-warning", "1"])


def demand(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.status(name).get("demand") or {}


def hhmm(when: dt.datetime) -> str:
    return when.strftime("%H:%M")


@pytest.mark.timeout(240)
def test_a_schedule_window_is_a_standing_claim_and_its_end_starts_the_grace(
    cluster: Cluster, azure: Azure, operator: OperatorRunner
) -> None:
    clock = dt.datetime.now(dt.timezone.utc)
    now = clock.replace(second=0, microsecond=0)
    # The window ends at a minute boundary 15 to 75 s away: open long enough for a busy machine
    # to start the VM in it, short enough for the test.
    end = now + dt.timedelta(minutes=1 if clock.second < 45 else 2)
    day = now.strftime("%a")
    window = {"days": day, "start": hhmm(now), "end": hhmm(end) if end.date() == now.date() else "24:00"}
    with cluster.history("office") as history:
        cluster.create("office", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Auto", "idleTimeout": "0s",
                                  "schedule": {"timeZone": "UTC", "windows": [window]}})
        # The VM may run for seconds only: the versions tell, a poll under load can miss them.
        started = history.wait(lambda v: (v.get("status") or {}).get("demand", {}).get("decidedBy") == "Schedule"
                               and (v["status"].get("lastOperation") or {}).get("trigger") == "Schedule", 30,
                               what="started by the open window")
    wait_for(lambda: [r.status for r in azure.power_requests("vm-1", "start")] == [202], 30, what="the start in Azure")
    nxt = started["status"]["demand"]["nextTransitions"][0]
    assert nxt["to"] == "Deallocated" and nxt["at"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    wait_for(lambda: azure.power("vm-1") == "deallocated" and cluster.status("office")["lastOperation"]["trigger"] == "Idle",
             120, interval=0.2, what="switched off when the window closed")
    assert demand(cluster, "office")["decidedBy"] == "Idle"


def test_a_malformed_schedule_is_invalid_spec_naming_the_field(cluster: Cluster, operator: OperatorRunner) -> None:
    cluster.create("typo", {"vm": {"resourceId": vm_id("vm-2")}, "desiredState": "Auto",
                            "schedule": {"timeZone": "Europe/Berlln", "windows": [{"days": "Mon", "start": "08:00", "end": "09:00"}]}})
    status = cluster.wait_reason("typo", "InvalidSpec")
    message = status["conditions"][0]["message"]
    assert message.startswith("spec.schedule.timeZone:") and "Europe/Berlin" in message


def test_hibernate_where_azure_allows_it(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    cluster.create("warm", {"vm": {"resourceId": vm_id("vm-hib")}, "desiredState": "Deallocated", "stopMode": "Hibernate"})
    wait_for(lambda: cluster.status("warm").get("powerState") == "Hibernated" and cluster.reason("warm") == "Reconciled", 20)
    (request,) = [r for r in azure.power_requests("vm-hib", "deallocate") if r.status == 202]
    assert request and azure.snapshot("vm-hib").hibernated
    assert "stopMode" not in cluster.status("warm")  # it did what the spec asked
    cluster.patch_spec("warm", {"desiredState": "Running"})  # a resume is a start
    wait_for(lambda: cluster.status("warm").get("powerState") == "Running" and cluster.reason("warm") == "Reconciled", 20)


def test_hibernate_falls_back_to_a_plain_deallocate_when_azure_refuses(
    cluster: Cluster, azure: Azure, operator: OperatorRunner
) -> None:
    cluster.create("cold", {"vm": {"resourceId": vm_id("vm-plain")}, "desiredState": "Deallocated", "stopMode": "Hibernate"})
    wait_for(lambda: cluster.status("cold").get("powerState") == "Deallocated" and cluster.reason("cold") == "Reconciled", 20)
    stop_mode = cluster.status("cold")["stopMode"]
    assert stop_mode["requested"] == "Hibernate" and stop_mode["effective"] == "Deallocate"
    assert "hibernat" in stop_mode["reason"].lower()
    wait_for(lambda: "HibernationNotSupported" in {r for _, r, _ in cluster.events("cold")}, 10, what="the Warning Event")
    assert not azure.snapshot("vm-plain").hibernated


def test_an_evicted_spot_vm_is_restarted_and_counted_not_treated_as_drift(
    cluster: Cluster, azure: Azure, operator: OperatorRunner
) -> None:
    cluster.create("spot", {"vm": {"resourceId": vm_id("vm-spot")}, "desiredState": "Running", "driftPolicy": "Report"})
    cluster.wait_reason("spot", "Reconciled", timeout=20)
    azure.evict("vm-spot")
    wait_for(lambda: (cluster.status("spot").get("evictions") or {}).get("count") == 1, 20, what="the eviction counted")
    wait_for(lambda: azure.power("vm-spot") == "running" and cluster.reason("spot") == "Reconciled", 20,
             what="restarted although driftPolicy is Report")
    status = cluster.status("spot")
    assert status["lastOperation"]["trigger"] == "Eviction" and status["evictions"]["count"] == 1
    wait_for(lambda: "Evicted" in {r for _, r, _ in cluster.events("spot")}, 10, what="the Evicted Warning")


def test_a_claim_of_an_evicted_vm_says_so(cluster: Cluster, azure: Azure, operator: OperatorRunner) -> None:
    azure.fault("op=start vm=vm-spot error=SkuNotAvailable times=1")  # Azure has no Spot capacity at first
    cluster.create("spotty", {"vm": {"resourceId": vm_id("vm-spot")}, "desiredState": "Auto", "idleTimeout": "0s"})
    cluster.claim("job", "spotty")
    wait_for(lambda: azure.power("vm-spot") == "running", 60, what="started after the capacity back-off")
    wait_for(lambda: (cluster.claim_ready("job") or ("", ""))[1] == "True", 20)
    azure.evict("vm-spot")
    seen: list[str] = []

    def evicted_message() -> bool:
        ready = cluster.claim_ready("job") or ("", "", "", "")
        seen.append(ready[3])
        return ready[2] == "WaitingForVm" and "evicted" in ready[3]

    wait_for(evicted_message, 20, what=f"the claim to report the eviction (saw {seen[-1:]})")
    wait_for(lambda: (cluster.claim_ready("job") or ("", ""))[1] == "True", 60, what="Ready again after the restart")
