"""Authentication (401) and RBAC (403) as the real SDK meets them."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.rest import HttpRequest

from testbed.azuresim import NO_RESPONSE, OpName, Permission, SimVm
from tests.testbed.azure_fixtures import (
    RG,
    SUB,
    aio_compute_client,
    authorization_client,
    azure_sim,
    azure_sim_factory,
    compute_client,
    default_vms,
    fast_config,
    resource_client,
    sim_of,
    vm_scope,
)

__all__ = ["azure_sim", "azure_sim_factory"]

VM_URL = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm-1?api-version=2026-04-01"


def test_missing_token_is_401_authentication_failed(azure_sim) -> None:
    sim = sim_of(azure_sim)
    response = requests.get(sim.endpoint + VM_URL, verify=sim.ca_file, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"
    assert "'Authorization' header is missing" in response.json()["error"]["message"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    malformed = requests.get(sim.endpoint + VM_URL, headers={"Authorization": "Basic abc"}, verify=sim.ca_file, timeout=10)
    assert malformed.status_code == 401 and malformed.json()["error"]["code"] == "AuthenticationFailedInvalidHeader"


def test_wrong_token_raises_client_authentication_error_once(azure_sim) -> None:
    client = compute_client(azure_sim, token="not-the-token")
    with pytest.raises(ClientAuthenticationError) as e:
        client.virtual_machines.get(RG, "vm-1")
    assert e.value.status_code == 401
    assert e.value.error.code == "InvalidAuthenticationToken"
    # the WWW-Authenticate challenge must not make azure-core retry or loop
    assert azure_sim.run_sync(sim_of(azure_sim).count, OpName.GET, 401) == 1


async def test_aio_wrong_token(azure_sim) -> None:
    async with aio_compute_client(azure_sim, token="nope") as client:
        with pytest.raises(ClientAuthenticationError):
            await client.virtual_machines.begin_start(RG, "vm-1")
    assert azure_sim.run_sync(sim_of(azure_sim).count, OpName.START, 401) == 1


def test_missing_permission_is_403_naming_action_and_scope(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(restricted_tokens={
        "reader": ["Microsoft.Compute/virtualMachines/read"],
        "operator": ["Microsoft.Compute/virtualMachines/*", "Microsoft.Resources/tags/read"],
    }))
    reader = compute_client(thread, token="reader")
    assert reader.virtual_machines.get(RG, "vm-1").name == "vm-1"
    assert len(list(reader.virtual_machines.list_all(status_only="true"))) == 5
    with pytest.raises(HttpResponseError) as view:
        reader.virtual_machines.instance_view(RG, "vm-1")
    assert view.value.status_code == 403 and view.value.error.code == "AuthorizationFailed"
    assert "'Microsoft.Compute/virtualMachines/instanceView/read'" in view.value.error.message
    with pytest.raises(HttpResponseError) as start:
        reader.virtual_machines.begin_start(RG, "vm-1")
    message = start.value.error.message
    assert start.value.status_code == 403
    assert "does not have authorization to perform action 'Microsoft.Compute/virtualMachines/start/action'" in message
    assert f"over scope '{vm_scope('vm-1')}'" in message

    # an operator without locations/operations/read can start, but cannot poll the operation
    operator = compute_client(thread, token="operator")
    poller = operator.virtual_machines.begin_start(RG, "vm-1")
    with pytest.raises(HttpResponseError) as poll:
        poller.result()
    assert poll.value.status_code == 403
    assert "Microsoft.Compute/locations/operations/read" in poll.value.error.message
    with pytest.raises(HttpResponseError) as tags:
        resource_client(thread, token="operator").tags.begin_update_at_scope(
            vm_scope("vm-1"), {"operation": "Merge", "properties": {"tags": {"a": "b"}}})
    assert tags.value.status_code == 403 and "Microsoft.Resources/tags/write" in tags.value.error.message


def test_admin_endpoints_need_the_full_token(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(restricted_tokens={"reader": ["*"]}))
    sim = sim_of(thread)
    url = sim.endpoint + "/_sim/vms"
    assert requests.get(url, verify=sim.ca_file, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer reader"}, verify=sim.ca_file, timeout=10).status_code == 403
    ok = requests.get(url, headers={"Authorization": f"Bearer {sim.token}"}, verify=sim.ca_file, timeout=10)
    assert ok.status_code == 200 and len(ok.json()) == 5
    assert NO_RESPONSE not in {st for _, st in thread.run_sync(sim.counters)}  # admin calls are not recorded
    assert thread.run_sync(sim.counters) == {}


# ------------------------------------------------------------------ the caller's permissions

CONTRIBUTOR = Permission(
    ("*",),
    ("Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write", "Microsoft.Authorization/elevateAccess/Action"),
)


def permissions_of(thread, token: str, resource_group: str = RG) -> list[tuple[list[str], list[str]]]:
    client = authorization_client(thread, token=token)
    try:
        return [(p.actions, p.not_actions) for p in client.permissions.list_for_resource_group(resource_group)]
    finally:
        client.close()


def test_permissions_api_answers_each_tokens_grants_through_the_sdk(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(restricted_tokens={
        "operator": ["Microsoft.Compute/virtualMachines/read", "Microsoft.Authorization/permissions/read"],
        "two-roles": [CONTRIBUTOR, Permission(("*/read",))],
    }))
    sim = sim_of(thread)
    assert permissions_of(thread, sim.token) == [(["*"], [])]
    assert permissions_of(thread, "operator") == [
        (["Microsoft.Compute/virtualMachines/read", "Microsoft.Authorization/permissions/read"], [])]
    assert permissions_of(thread, "two-roles") == [(list(CONTRIBUTOR.actions), list(CONTRIBUTOR.not_actions)), (["*/read"], [])]
    assert thread.run_sync(sim.count, OpName.PERMISSIONS, 200) == 3


def test_permissions_api_needs_permissions_read_and_an_existing_group(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(restricted_tokens={"vm-reader": ["Microsoft.Compute/virtualMachines/read"]}))
    with pytest.raises(HttpResponseError) as denied:
        permissions_of(thread, "vm-reader")
    assert denied.value.status_code == 403
    assert "'Microsoft.Authorization/permissions/read'" in denied.value.error.message
    assert f"over scope '/subscriptions/{SUB}/resourceGroups/{RG}'" in denied.value.error.message
    with pytest.raises(HttpResponseError) as missing:
        permissions_of(thread, sim_of(thread).token, "rg-nowhere")
    assert missing.value.status_code == 404 and missing.value.error.code == "ResourceGroupNotFound"


def test_not_actions_take_away_what_the_same_assignment_grants(azure_sim_factory) -> None:
    """Contributor's '*' minus its notActions; another assignment can still grant an excluded action."""
    no_start = Permission(("Microsoft.Compute/virtualMachines/*",), ("Microsoft.Compute/virtualMachines/start/action",))
    thread = azure_sim_factory(fast_config(restricted_tokens={
        "no-start": [no_start],
        "no-start-but-another-role": [no_start, Permission(("Microsoft.Compute/virtualMachines/start/action",
                                                            "Microsoft.Compute/locations/operations/read"))],
    }))
    blocked = compute_client(thread, token="no-start")
    assert blocked.virtual_machines.get(RG, "vm-1").name == "vm-1"
    with pytest.raises(HttpResponseError) as start:
        blocked.virtual_machines.begin_start(RG, "vm-1")
    assert start.value.status_code == 403 and "virtualMachines/start/action" in start.value.error.message
    allowed = compute_client(thread, token="no-start-but-another-role")
    allowed.virtual_machines.begin_start(RG, "vm-1").result()
    assert thread.run_sync(sim_of(thread).vm_state, "vm-1").power_state.value == "running"


def test_subscription_list_needs_only_a_valid_token(azure_sim_factory) -> None:
    other = "00000000-0000-0000-0000-0000000000bb"
    vms = [*default_vms(), SimVm(subscription_id=other, resource_group=RG, name="vm-b")]
    thread = azure_sim_factory(fast_config(restricted_tokens={"nothing": []}), vms)
    request = HttpRequest("GET", "/subscriptions", params={"api-version": "2022-12-01"})
    listed = compute_client(thread, token="nothing").send_request(request)
    assert listed.status_code == 200
    assert [s["subscriptionId"] for s in listed.json()["value"]] == [SUB, other]
    assert compute_client(thread, token="wrong").send_request(request).status_code == 401
