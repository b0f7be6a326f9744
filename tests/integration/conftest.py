"""The real operator (kopf + azure-mgmt-compute aio) against the emulator and the simulator.

Each test gets a fresh sandbox — a Kubernetes emulator loaded with the CRDs from deploy/crds and
an Azure simulator over HTTPS with fast transitions — and starts operators in their own threads
and event loops, configured through the same flags a user passes to ``gpuvm-operator run``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from testbed.azuresim import SimulatorConfig, SimVm, Timings
from testbed.sandbox import Azure, Cluster, OperatorRunner, Sandbox, crd_files

ROOT = Path(__file__).parents[2]
CRDS = crd_files(ROOT / "deploy" / "crds")
SUB = "3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a"
RG = "rg-gpu"
NS = "ml"
MANAGED = {"gpuvm-managed": "true"}
FAST = Timings(start=0.4, deallocate=0.3, power_off=0.3, restart=0.3, hibernate=0.3)
READ_ONLY_TOKEN = "sim-token-read-only"
NO_TAG_WRITE_TOKEN = "sim-token-no-tag-write"
FAST_FLAGS = (
    "--resync-interval", "1",
    "--transition-poll", "0.3",
    "--operation-poll", "0.05",
    "--capacity-backoff", "0.5",
    "--capacity-backoff-max", "2",
    "--error-retry", "0.5",
    "--denied-retry", "1",
)


def vm_id(name: str, rg: str = RG) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"


def default_vms() -> list[SimVm]:
    vms = [SimVm(subscription_id=SUB, resource_group=RG, name=f"vm-{i}", tags=MANAGED) for i in range(1, 7)]
    vms += [
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-running", power_state="running", tags=MANAGED),
        # Starts for ten minutes: tests end it with the simulator's fast_forward, so no slow machine
        # can see it end early.
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-slow", tags=MANAGED, timings={"start": 600.0}),
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-untagged"),
        SimVm(subscription_id=SUB, resource_group=RG, name="vm-research", tags={**MANAGED, "gpuvm-namespaces": "research"}),
    ]
    return vms


@pytest.fixture
def azure_vms() -> list[SimVm]:
    return default_vms()


@pytest.fixture
def azure_config() -> SimulatorConfig:
    return SimulatorConfig(
        timings=FAST,
        retry_after=0.05,
        # An identity that may read VMs but not power them: the 403 users hit with a too-small role.
        restricted_tokens={
            READ_ONLY_TOKEN: ["Microsoft.Compute/virtualMachines/read", "Microsoft.Compute/virtualMachines/instanceView/read"],
            NO_TAG_WRITE_TOKEN: [
                "Microsoft.Compute/virtualMachines/*",
                "Microsoft.Compute/locations/operations/read",
                "Microsoft.Resources/tags/read",
            ],
        },
    )


@pytest.fixture
def crds() -> list[Path]:
    """The CRDs the emulator serves: this project's, as deploy/crds installs them."""
    return CRDS


@pytest.fixture
def world(azure_config: SimulatorConfig, azure_vms: list[SimVm], crds: list[Path], tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(crds=crds, simulator=azure_config, vms=azure_vms, workdir=tmp_path, namespace=NS) as sandbox:
        yield sandbox


@pytest.fixture
def cluster(world: Sandbox) -> Cluster:
    assert world.cluster is not None
    return world.cluster


@pytest.fixture
def azure(world: Sandbox) -> Azure:
    assert world.azure is not None
    return world.azure


@pytest.fixture
def operator_flags(world: Sandbox) -> list[str]:
    return world.operator_flags(subscription=SUB, timing=FAST_FLAGS)


@pytest.fixture
def start_operator(world: Sandbox, operator_flags: list[str]) -> Callable[..., OperatorRunner]:
    def start(extra: Sequence[str] = (), *, flags: Sequence[str] | None = None, env: dict[str, str] | None = None) -> OperatorRunner:
        return world.start_operator([*(operator_flags if flags is None else flags), *extra], env)

    return start


@pytest.fixture
def operator(start_operator: Callable[..., OperatorRunner]) -> OperatorRunner:
    return start_operator()


def replace_flag(flags: Sequence[str], name: str, value: str) -> list[str]:
    """The same flags with one option's value changed (or added)."""
    out = list(flags)
    if name in out:
        out[out.index(name) + 1] = value
    else:
        out += [name, value]
    return out
