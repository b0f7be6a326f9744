"""What the chaos soak does to Azure, through the admin endpoints, as the real SDK then sees it:
VMs deleted and restored under the same id, opt-in tags removed and restored, a credential
expired and a new token issued."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from testbed.azuresim import OpName, PowerState
from tests.testbed.azure_fixtures import (
    RG,
    azure_sim,
    azure_sim_factory,
    compute,
    compute_client,
    long_config,
    resource_client,
    sim_of,
    vm_scope,
)

__all__ = ["azure_sim", "azure_sim_factory", "compute"]


def admin(thread, method: str, path: str, body: object = None, *, token: str | None = None) -> requests.Response:
    sim = sim_of(thread)
    return requests.request(method, f"{sim.endpoint}/_sim/{path}", json=body, verify=sim.ca_file, timeout=30,
                            headers={"Authorization": f"Bearer {token or sim.token}"})


def test_a_vm_deleted_in_azure_and_restored_under_the_same_id(azure_sim, compute) -> None:
    before = compute.virtual_machines.get(RG, "vm-2", expand="instanceView")
    assert admin(azure_sim, "DELETE", f"vms/{RG}/vm-2").json() == {"deleted": True}
    with pytest.raises(ResourceNotFoundError) as e:
        compute.virtual_machines.get(RG, "vm-2")
    assert e.value.error.code == "ResourceNotFound"
    assert "vm-2" not in {vm.name for vm in compute.virtual_machines.list_all(status_only="true")}
    assert [vm.name for vm in compute.virtual_machines.list(RG)] == ["vm-1", "vm-3", "vm-hib"]  # the group stays
    with pytest.raises(ResourceNotFoundError):
        compute.virtual_machines.begin_start(RG, "vm-2")
    assert admin(azure_sim, "DELETE", f"vms/{RG}/vm-2").status_code == 404  # already gone
    restored = admin(azure_sim, "POST", f"vms/{RG}/vm-2/restore", {"powerState": "deallocated"})
    assert restored.status_code == 200 and restored.json()["powerState"] == "deallocated"
    after = compute.virtual_machines.get(RG, "vm-2", expand="instanceView")
    assert (after.id, after.vm_id) == (before.id, before.vm_id)
    assert [s.code for s in after.instance_view.statuses][1] == "PowerState/deallocated"
    assert [vm.name for vm in compute.virtual_machines.list(RG)] == ["vm-1", "vm-2", "vm-3", "vm-hib"]
    compute.virtual_machines.begin_start(RG, "vm-2").result()  # a VM like any other again
    assert admin(azure_sim, "POST", f"vms/{RG}/vm-2/restore").status_code == 404  # nothing deleted to restore


def test_deleting_a_vm_mid_operation_cancels_the_operation(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    client = compute_client(thread)
    poller = client.virtual_machines.begin_start(RG, "vm-1")
    thread.run_sync(lambda: sim_of(thread).delete_vm("vm-1"))
    with pytest.raises(Exception) as e:
        poller.result()
    assert getattr(getattr(e.value, "error", None), "code", None) == "OperationPreempted"
    thread.run_sync(lambda: sim_of(thread).restore_vm("vm-1", tags={"team": "ml"}))
    state = thread.run_sync(lambda: sim_of(thread).vm_state("vm-1"))
    assert state.operation is None and state.power_state is PowerState.STARTING  # where the start left it
    assert dict(state.tags) == {"team": "ml"}


def test_opt_in_tags_removed_and_restored(azure_sim) -> None:
    tags = resource_client(azure_sim).tags
    original = dict(tags.get_at_scope(vm_scope("vm-1")).properties.tags)
    assert original == {"team": "ml"}
    assert admin(azure_sim, "PUT", f"vms/{RG}/vm-1/tags", {"tags": {}}).json()["tags"] == {}
    assert tags.get_at_scope(vm_scope("vm-1")).properties.tags == {}
    assert admin(azure_sim, "PUT", f"vms/{RG}/vm-1/tags", {"tags": original}).status_code == 200
    assert tags.get_at_scope(vm_scope("vm-1")).properties.tags == original
    assert admin(azure_sim, "PUT", f"vms/{RG}/vm-1/tags", {"tags": {"a": 1}}).status_code == 400


def test_an_expired_token_is_refused_as_arm_does_and_a_new_one_works(azure_sim) -> None:
    issued = admin(azure_sim, "POST", "tokens", {})
    assert issued.status_code == 201
    token = issued.json()["token"]
    client = compute_client(azure_sim, token=token)
    assert client.virtual_machines.get(RG, "vm-1").name == "vm-1"
    assert admin(azure_sim, "POST", "tokens/expire", {"token": token}).json() == {"expired": True}
    with pytest.raises(ClientAuthenticationError) as e:
        client.virtual_machines.get(RG, "vm-1")
    assert e.value.status_code == 401 and e.value.error.code == "ExpiredAuthenticationToken"
    assert "is earlier than current UTC time" in e.value.error.message
    challenge = e.value.response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge and "error_description=" in challenge
    assert admin(azure_sim, "GET", "vms", token=token).status_code == 401  # expired everywhere
    fresh = admin(azure_sim, "POST", "tokens", {"like": token}).json()["token"]
    assert compute_client(azure_sim, token=fresh).virtual_machines.get(RG, "vm-1").name == "vm-1"
    counters = azure_sim.run_sync(sim_of(azure_sim).counters)
    assert counters[(OpName.GET.value, 401)] == 1 and counters[(OpName.GET.value, 200)] == 2
    # One identity throughout: the new token is the same principal signed in again.
    log = azure_sim.run_sync(sim_of(azure_sim).request_log)
    assert len({r.principal for r in log if r.principal}) == 1


def test_a_restricted_tokens_successor_keeps_its_permissions(azure_sim_factory) -> None:
    from tests.testbed.azure_fixtures import fast_config

    thread = azure_sim_factory(fast_config(restricted_tokens={"reader": ["Microsoft.Compute/virtualMachines/read"]}))
    fresh = thread.run_sync(lambda: sim_of(thread).issue_token(like="reader"))
    client = compute_client(thread, token=fresh)
    assert client.virtual_machines.get(RG, "vm-1").name == "vm-1"
    with pytest.raises(Exception) as e:
        client.virtual_machines.begin_start(RG, "vm-1")
    assert e.value.error.code == "AuthorizationFailed"
    assert admin(thread, "GET", "vms", token=fresh).status_code == 403  # no admin rights either


def test_a_reader_follows_the_log_and_learns_what_it_missed(azure_sim_factory) -> None:
    from tests.testbed.azure_fixtures import fast_config

    thread = azure_sim_factory(fast_config(log_size=4))
    client = compute_client(thread)
    client.virtual_machines.get(RG, "vm-1")
    first = admin(thread, "GET", "log?since=0")
    assert [r["vm"] for r in first.json()] == ["vm-1"] and first.headers["X-Sim-Log-Total"] == "1"
    assert admin(thread, "GET", "log?since=1").json() == []
    for _ in range(5):  # more than the log keeps
        client.virtual_machines.get(RG, "vm-2")
    later = admin(thread, "GET", "log?since=1")
    assert len(later.json()) == 4 and later.headers["X-Sim-Log-Total"] == "6"  # 6 - 1 - 4 = 1 missed


def test_operations_since_a_time_leave_out_only_the_ones_over_before_it(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config())
    client = compute_client(thread)
    client.virtual_machines.begin_start(RG, "vm-2", polling=False)  # running already: over at once
    done = admin(thread, "GET", "operations").json()
    assert len(done) == 1 and done[0]["end"] is not None
    client.virtual_machines.begin_start(RG, "vm-1", polling=False)  # runs for long_config's transition
    everything = admin(thread, "GET", "operations").json()
    later = admin(thread, "GET", f"operations?since={done[0]['end'] + 1e-6}").json()
    assert len(everything) == 2 and [o["vm"] for o in later] == ["vm-1"] and later[0]["end"] is None
