"""Authentication (401) and RBAC (403) as the real SDK meets them."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from testbed.azuresim import NO_RESPONSE, OpName
from tests.testbed.azure_fixtures import (
    RG,
    SUB,
    aio_compute_client,
    azure_sim,
    azure_sim_factory,
    compute_client,
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
