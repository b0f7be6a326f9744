"""Fixtures and helpers for tests that need the Azure Compute simulator.

Fixtures: ``azure_sim_factory`` (make more simulators, each in its own ServerThread, stopped at
teardown), ``azure_sim`` (one started simulator with the default VMs and fast timings),
``compute`` / ``aio_compute`` (real ``azure.mgmt.compute`` clients pointed at ``azure_sim``),
``resources`` / ``aio_resources`` (real ``azure.mgmt.resource.resources`` clients for the Tags API).
Import them explicitly into a test module (``from tests.testbed.azure_fixtures import azure_sim``)
or from ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.aio import ComputeManagementClient as AioComputeManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.aio import (
    ResourceManagementClient as AioResourceManagementClient,
)

from testbed.azuresim import (
    AsyncStaticTokenCredential,
    AzureComputeSimulator,
    SimulatorConfig,
    SimVm,
    StaticTokenCredential,
    Timings,
)
from testbed.serving import ServerThread

T = TypeVar("T")

SUB = "00000000-0000-0000-0000-0000000000aa"
RG = "rg-gpu"
OTHER_RG = "rg-other"
SCOPES = ["https://management.azure.com/.default"]
FAST = Timings(start=0.15, deallocate=0.15, power_off=0.15, restart=0.15, hibernate=0.15)
# For tests that look at a transient state: long enough that no slow machine sees it end on its own;
# such tests end the transition with ``sim.fast_forward(name)`` instead of waiting.
LONG = Timings(start=60, deallocate=60, power_off=60, restart=60, hibernate=60)


def default_vms() -> list[SimVm]:
    """vm-1 deallocated, vm-2 running, vm-3 stopped, vm-hib running (hibernation enabled), vm-9 elsewhere."""
    return [
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-1", power_state="deallocated", tags={"team": "ml"}),
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-2", power_state="running"),
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-3", power_state="stopped"),
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-hib", power_state="running", hibernation_enabled=True,
              size="Standard_NV36ads_A10_v5"),
        SimVm(subscription_id=SUB, resource_group=OTHER_RG, name="vm-9", power_state="deallocated", location="westeurope"),
    ]


def spot_and_hibernation_vms() -> list[SimVm]:
    """hib running with hibernation enabled; spot running and spot-capped deallocated (max price
    0.75) Spot VMs; plain (priority Regular) and legacy (no priority given) running."""
    return [
        SimVm(subscription_id=SUB, resource_group=RG, name="hib", power_state="running", hibernation_enabled=True),
        SimVm(subscription_id=SUB, resource_group=RG, name="spot", power_state="running", priority="Spot"),
        SimVm(subscription_id=SUB, resource_group=RG, name="spot-capped", power_state="deallocated", priority="Spot",
              max_price=0.75, size="Standard_NC24ads_A100_v4"),
        SimVm(subscription_id=SUB, resource_group=RG, name="plain", power_state="running", priority="Regular"),
        SimVm(subscription_id=SUB, resource_group=RG, name="legacy", power_state="running"),
    ]


def fast_config(**overrides: Any) -> SimulatorConfig:
    """Transitions of 0.15 s and a 20 ms Retry-After, so whole operations finish in well under a second."""
    settings: dict[str, Any] = {"timings": FAST, "retry_after": 0.02}
    settings.update(overrides)
    return SimulatorConfig(**settings)


def long_config(**overrides: Any) -> SimulatorConfig:
    """Like :func:`fast_config`, but transitions take a minute (use ``fast_forward`` to end them)."""
    return fast_config(**{"timings": LONG, **overrides})


def sim_of(thread: ServerThread) -> AzureComputeSimulator:
    server = thread.server
    assert isinstance(server, AzureComputeSimulator)
    return server


def client_kwargs(sim: AzureComputeSimulator, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "base_url": sim.endpoint,
        "connection_verify": sim.ca_file,
        "credential_scopes": SCOPES,
        "polling_interval": 0.02,
        "retry_backoff_factor": 0.01,
    }
    kwargs.update(overrides)
    return kwargs


def compute_client(thread: ServerThread, *, token: str | None = None, **overrides: Any) -> ComputeManagementClient:
    sim = sim_of(thread)
    return ComputeManagementClient(StaticTokenCredential(token or sim.token), SUB, **client_kwargs(sim, **overrides))


def aio_compute_client(thread: ServerThread, *, token: str | None = None, **overrides: Any) -> AioComputeManagementClient:
    sim = sim_of(thread)
    return AioComputeManagementClient(AsyncStaticTokenCredential(token or sim.token), SUB, **client_kwargs(sim, **overrides))


def resource_client(thread: ServerThread, *, token: str | None = None, **overrides: Any) -> ResourceManagementClient:
    sim = sim_of(thread)
    return ResourceManagementClient(StaticTokenCredential(token or sim.token), SUB, **client_kwargs(sim, **overrides))


def aio_resource_client(thread: ServerThread, *, token: str | None = None, **overrides: Any) -> AioResourceManagementClient:
    sim = sim_of(thread)
    return AioResourceManagementClient(AsyncStaticTokenCredential(token or sim.token), SUB, **client_kwargs(sim, **overrides))


def authorization_client(thread: ServerThread, *, token: str | None = None) -> AuthorizationManagementClient:
    sim = sim_of(thread)
    return AuthorizationManagementClient(StaticTokenCredential(token or sim.token), SUB, **client_kwargs(sim))


def add_fault(thread: ServerThread, spec: str) -> int:
    """Install a fault spec in the simulator running in ``thread``; returns its id."""
    return thread.run_sync(sim_of(thread).add_fault, spec)


def vm_scope(name: str, resource_group: str = RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/{name}"


def power_code(statuses: Any) -> str | None:
    """The ``PowerState/…`` code of an instance view's statuses, or None when it is missing."""
    for status in statuses or []:
        if status.code and status.code.startswith("PowerState/"):
            return status.code
    return None


@pytest.fixture
def azure_sim_factory() -> Iterator[Callable[..., ServerThread]]:
    threads: list[ServerThread] = []

    def make(config: SimulatorConfig | None = None, vms: list[SimVm] | None = None) -> ServerThread:
        sim = AzureComputeSimulator(config or fast_config(), default_vms() if vms is None else vms)
        thread = ServerThread(sim, name="azuresim").start()
        threads.append(thread)
        return thread

    yield make
    for thread in threads:
        thread.stop()


@pytest.fixture
def azure_sim(azure_sim_factory: Callable[..., ServerThread]) -> ServerThread:
    return azure_sim_factory()


@pytest.fixture
def compute(azure_sim: ServerThread) -> Iterator[ComputeManagementClient]:
    client = compute_client(azure_sim)
    yield client
    client.close()


@pytest.fixture
async def aio_compute(azure_sim: ServerThread) -> AsyncIterator[AioComputeManagementClient]:
    client = aio_compute_client(azure_sim)
    yield client
    await client.close()


@pytest.fixture
def resources(azure_sim: ServerThread) -> Iterator[ResourceManagementClient]:
    client = resource_client(azure_sim)
    yield client
    client.close()


@pytest.fixture
async def aio_resources(azure_sim: ServerThread) -> AsyncIterator[AioResourceManagementClient]:
    client = aio_resource_client(azure_sim)
    yield client
    await client.close()
