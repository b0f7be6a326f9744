"""Malformed ARM answers (broken gateways, proxies, truncation) and the chaos fault, as the real
SDK meets them: what each fault puts on the wire, and that it stops when its count runs out."""

from __future__ import annotations

import collections

import pytest
import requests
from azure.core.exceptions import DecodeError, HttpResponseError, ServiceResponseError, TooManyRedirectsError

from testbed.azuresim import NO_RESPONSE, Fault, FaultSpecError, OpName, PowerState
from tests.testbed.azure_fixtures import (
    RG,
    add_fault,
    aio_compute,
    azure_sim,
    azure_sim_factory,
    compute,
    compute_client,
    long_config,
    power_code,
    sim_of,
)

__all__ = ["aio_compute", "azure_sim", "azure_sim_factory", "compute"]


def _raw(thread, path: str, method: str = "GET") -> requests.Response:
    sim = sim_of(thread)
    sep = "&" if "?" in path else "?"
    return requests.request(method, f"{sim.endpoint}{path}{sep}api-version=2026-04-01", verify=sim.ca_file,
                            headers={"Authorization": f"Bearer {sim.token}"}, allow_redirects=False, timeout=30)


VM1 = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg-gpu/providers/Microsoft.Compute/virtualMachines/vm-1"


def test_html_error_page_instead_of_arm_json(azure_sim) -> None:
    add_fault(azure_sim, "kind=html op=get status=502 times=4")
    raw = _raw(azure_sim, VM1)
    assert raw.status_code == 502 and raw.headers["Content-Type"].startswith("text/html")
    assert raw.text.startswith("<!DOCTYPE html>") and "502 - Web server received an invalid response" in raw.text
    client = compute_client(azure_sim, retry_total=2)
    with pytest.raises(HttpResponseError) as e:  # azure-core retried the 502 twice, all HTML
        client.virtual_machines.get(RG, "vm-1")
    assert e.value.status_code == 502 and e.value.error is None
    assert client.virtual_machines.get(RG, "vm-1").name == "vm-1"  # the fault's count ran out


def test_truncated_json(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=truncated op=get,listAll times=2")
    whole = _raw(azure_sim, VM1 + "?$expand=instanceView")
    add_fault(azure_sim, "kind=truncated op=instanceView times=1")
    assert whole.status_code == 200 and whole.content.startswith(b"{") and not whole.content.endswith(b"}")
    with pytest.raises(ValueError):
        whole.json()
    with pytest.raises(DecodeError):
        list(compute.virtual_machines.list_all())
    with pytest.raises(DecodeError):
        compute.virtual_machines.instance_view(RG, "vm-1")
    assert compute.virtual_machines.get(RG, "vm-1").name == "vm-1"


def test_empty_200(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=empty op=get,start times=2")
    with pytest.raises(ValueError):  # a bare JSONDecodeError from the SDK, no HttpResponseError
        compute.virtual_machines.get(RG, "vm-1")
    compute.virtual_machines.begin_start(RG, "vm-1").result()  # a 200 without a body "succeeds" at once ...
    assert azure_sim.run_sync(sim_of(azure_sim).vm_state, "vm-1").power_state is PowerState.DEALLOCATED  # not started
    assert azure_sim.run_sync(sim_of(azure_sim).count, OpName.START, 200) == 1


def test_redirect(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=redirect op=get status=307 times=2")
    raw = _raw(azure_sim, VM1)
    assert raw.status_code == 307 and raw.headers["Location"].endswith(f"{VM1}?api-version=2026-04-01")
    assert compute.virtual_machines.get(RG, "vm-1").name == "vm-1"  # azure-core follows it (one left, then served)
    counters = azure_sim.run_sync(sim_of(azure_sim).counters)
    assert counters[(OpName.GET.value, 307)] == 2 and counters[(OpName.GET.value, 200)] == 1
    add_fault(azure_sim, "kind=redirect op=instanceView")  # forever: a loop
    with pytest.raises(TooManyRedirectsError):
        compute.virtual_machines.instance_view(RG, "vm-1")
    add_fault(azure_sim, "kind=redirect op=start location=https://login.example.invalid/ times=1")
    with pytest.raises(HttpResponseError) as e:  # a POST is not redirected by azure-core
        compute.virtual_machines.begin_start(RG, "vm-2")
    assert e.value.status_code == 302


def test_vm_without_properties(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=no-properties times=2")
    raw = _raw(azure_sim, VM1).json()
    assert raw["name"] == "vm-1" and "properties" not in raw
    assert [vm.provisioning_state for vm in compute.virtual_machines.list(RG)] == [None] * 4
    assert compute.virtual_machines.get(RG, "vm-1").provisioning_state == "Succeeded"


def test_unknown_power_code(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=power-code power=frozen op=instanceView,listAll times=2")
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-2").statuses) == "PowerState/frozen"
    page = list(compute.virtual_machines.list_all(status_only="true"))
    assert {power_code(vm.instance_view.statuses) for vm in page} == {"PowerState/frozen"}
    assert power_code(compute.virtual_machines.instance_view(RG, "vm-2").statuses) == "PowerState/running"
    with pytest.raises(FaultSpecError, match="applies to get, instanceView, list and listAll only"):
        Fault.parse("kind=power-code op=start")


def test_malformed_operation_status_polls(azure_sim, compute) -> None:
    """Status polls of a running start: an HTML 502 and a redirect do not end the operation."""
    add_fault(azure_sim, "kind=html op=operationStatus times=1")
    add_fault(azure_sim, "kind=redirect op=operationStatus status=307 times=1")
    compute.virtual_machines.begin_start(RG, "vm-1").result()
    assert azure_sim.run_sync(sim_of(azure_sim).vm_state, "vm-1").power_state is PowerState.RUNNING
    counters = azure_sim.run_sync(sim_of(azure_sim).counters)
    assert counters[(OpName.OPERATION_STATUS.value, 502)] == 1 and counters[(OpName.OPERATION_STATUS.value, 307)] == 1


def test_lost_answer_is_served_but_never_answered(azure_sim, compute) -> None:
    add_fault(azure_sim, "kind=lost-answer op=start times=1")
    with pytest.raises(ServiceResponseError):
        compute.virtual_machines.begin_start(RG, "vm-1")
    state = azure_sim.run_sync(sim_of(azure_sim).vm_state, "vm-1")
    assert state.operation == "start" or state.power_state is PowerState.RUNNING  # Azure took it all the same
    assert azure_sim.run_sync(sim_of(azure_sim).count, OpName.START, NO_RESPONSE) == 1


def test_timeout_holds_the_answer_then_closes(azure_sim) -> None:
    add_fault(azure_sim, "kind=timeout op=get delay=0.3 times=1")
    client = compute_client(azure_sim, retry_total=0)
    with pytest.raises(ServiceResponseError):
        client.virtual_machines.get(RG, "vm-1")
    assert azure_sim.run_sync(sim_of(azure_sim).count, OpName.GET, NO_RESPONSE) == 1


def test_chaos_faults_a_share_of_all_requests_replayably(azure_sim_factory) -> None:
    """One spec, 10 % of every request from a seed: throttling, 5xx, timeouts, drops, 409s,
    capacity failures, missing power states — the same draws for the same requests."""

    def run() -> tuple[list[tuple[str, int]], dict[str, int]]:
        thread = azure_sim_factory(long_config())  # operations never end by themselves: the same state each run
        add_fault(thread, "kind=chaos p=0.1 seed=7 retry-after=0 delay=0.05")
        sim = sim_of(thread)
        client = compute_client(thread, retry_total=0)
        for i in range(400):
            name = ("vm-1", "vm-2", "vm-3")[i % 3]
            try:
                if i % 2 == 0:
                    client.virtual_machines.begin_start(RG, name, polling=False)
                else:
                    client.virtual_machines.instance_view(RG, name)
            except Exception:  # noqa: BLE001 - the point is that they fail
                pass
        log = thread.run_sync(sim.request_log)
        [fault] = thread.run_sync(sim.faults)
        return [(r.operation, r.status) for r in log], fault["drawn"]

    first, drawn = run()
    second, drawn_again = run()
    assert first == second and drawn == drawn_again  # replayable from the seed
    assert 20 <= sum(drawn.values()) <= 65, drawn  # about 10 % of 400
    assert set(drawn) == {"throttle", "500", "503", "timeout", "drop", "409", "capacity", "no-power-state"}, drawn
    statuses = collections.Counter(status for _, status in first)
    # 429 and 409 also come from the simulator's own throttling and state machine, not only from chaos.
    assert statuses[429] >= drawn["throttle"] and statuses[NO_RESPONSE] == drawn["timeout"] + drawn["drop"]
    assert statuses[500] == drawn["500"] and statuses[503] == drawn["503"] and statuses[409] >= drawn["409"]


def test_chaos_draws_only_what_fits_the_operation() -> None:
    fault = Fault.parse("kind=chaos p=1 seed=1 mix=409,capacity,no-power-state")
    import random

    rng = random.Random(1)
    assert {fault.chaos_choice(OpName.GET, rng).spec for _ in range(50)} == {"no-power-state"}
    assert {fault.chaos_choice(OpName.DEALLOCATE, rng).spec for _ in range(50)} == {"409"}
    assert {fault.chaos_choice(OpName.START, rng).spec for _ in range(50)} == {"409", "capacity"}
    with pytest.raises(FaultSpecError, match="needs seed"):
        Fault.parse("kind=chaos p=0.1")
    with pytest.raises(FaultSpecError, match="mix: unknown"):
        Fault.parse("kind=chaos p=0.1 seed=1 mix=throttle,meteor")
