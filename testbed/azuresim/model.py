"""The simulated virtual machines: their state, and the power state machine that moves them.

Everything here runs on the simulator's event loop; time is the loop clock and transitions
are scheduled with ``loop.call_later``, so a transition costs nothing while it waits and tests
can use fractions of a second where the demo uses minutes.

Allowed-from table (what a power action does from each steady state; any action while another
operation is in flight on the VM is refused with 409 ``OperationNotAllowed`` "…since another
operation is in progress."):

============  ========================  ========================  ===========================
action        from running              from stopped              from deallocated
============  ========================  ========================  ===========================
start         no-op success             starting -> running       starting -> running
                                                                   (resumes a hibernated VM)
deallocate    deallocating ->           deallocating ->           no-op success; a hibernated
              deallocated               deallocated               VM: deallocating ->
                                                                   deallocated (hibernation
                                                                   state discarded)
hibernate     deallocating ->           409 (must be running)     409 (must be running)
              deallocated + Hibernated
evict (Spot)  deallocating ->           deallocating ->           409 (nothing allocated)
              deallocated               deallocated
powerOff      stopping -> stopped       no-op success             409 "…deallocated or marked
                                                                   to be deallocated."
restart       starting -> running       409 "requires the VM to   409 "requires the VM to be
                                        be running (or set to     running (or set to run)."
                                        run)."
============  ========================  ========================  ===========================

Azure documents start on a running VM and deallocate on a deallocated VM as accepted and
completing at once; the other refusals use messages from Azure's VM error-message list.
Hibernate is refused on a VM without ``additionalCapabilities.hibernationEnabled``, and a Spot VM
cannot have that capability at all (Azure refuses to create one: "Hibernation capability isn't
supported for Spot VMs"), so a Spot VM's hibernate gets the same refusal. Evict is the platform
taking a Spot VM back (``simulateEviction``, or :meth:`AzureComputeSimulator.evict`): its
eviction policy ``Deallocate`` deallocates it; afterwards its instance view is that of any
deallocated VM.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any


class PowerState(str, enum.Enum):
    """The ``PowerState/<value>`` code of an instance view."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEALLOCATING = "deallocating"
    DEALLOCATED = "deallocated"

    @property
    def display(self) -> str:
        return f"VM {self.value}"

    @property
    def steady(self) -> bool:
        return self in _STEADY


_STEADY = frozenset({PowerState.RUNNING, PowerState.STOPPED, PowerState.DEALLOCATED})


class PowerAction(str, enum.Enum):
    """A power operation, named as in the REST path (``…/virtualMachines/{vm}/<value>``)."""

    START = "start"
    DEALLOCATE = "deallocate"
    POWER_OFF = "powerOff"
    RESTART = "restart"


class OperationStatus(str, enum.Enum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


class Origin(str, enum.Enum):
    """Who asked for an operation: an API client, "someone in the portal" (out of band), or the
    platform evicting a Spot VM."""

    API = "api"
    OUT_OF_BAND = "out-of-band"
    EVICTION = "eviction"


SPOT = "Spot"
REGULAR = "Regular"


@dataclass(frozen=True)
class Timings:
    """Seconds each power transition takes. Defaults are the order of magnitude of a GPU VM."""

    start: float = 120.0
    deallocate: float = 90.0
    power_off: float = 45.0
    restart: float = 90.0
    hibernate: float = 150.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"timing {f.name!r} must be a number of seconds >= 0, not {value!r}")

    def of(self, action: PowerAction, *, hibernate: bool = False) -> float:
        if action is PowerAction.DEALLOCATE and hibernate:
            return self.hibernate
        return {
            PowerAction.START: self.start,
            PowerAction.DEALLOCATE: self.deallocate,
            PowerAction.POWER_OFF: self.power_off,
            PowerAction.RESTART: self.restart,
        }[action]

    def overridden(self, overrides: Mapping[str, float]) -> "Timings":
        return replace(self, **dict(overrides)) if overrides else self


TIMING_NAMES = tuple(f.name for f in fields(Timings))


@dataclass(frozen=True)
class SimVm:
    """One VM to simulate, as given by a test or a YAML file.

    ``timings`` holds per-VM overrides of the simulator's :class:`Timings` (only the keys given).
    ``vm_id`` defaults to a UUID derived from the resource id, so a VM keeps its id across runs.
    """

    subscription_id: str
    resource_group: str
    name: str
    location: str = "eastus"
    size: str = "Standard_NC24ads_A100_v4"
    power_state: PowerState | str = PowerState.DEALLOCATED
    tags: Mapping[str, str] = field(default_factory=dict)
    hibernation_enabled: bool = False
    vm_id: str | None = None
    time_created: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    # ``properties.priority`` (left out of the resource when None, as for a VM created without
    # one); a Spot VM's eviction policy defaults to Deallocate and its max price to -1.
    priority: str | None = None
    eviction_policy: str | None = None
    max_price: float | None = None

    def __post_init__(self) -> None:
        for name in ("subscription_id", "resource_group", "name", "location", "size"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"SimVm.{name} must be a non-empty string, not {value!r}")
        self._check_priority()
        state = PowerState(self.power_state)
        if not state.steady:
            raise ValueError(f"SimVm.power_state must be running, stopped or deallocated, not {state.value!r}")
        object.__setattr__(self, "power_state", state)
        unknown = set(self.timings) - set(TIMING_NAMES)
        if unknown:
            raise ValueError(f"SimVm.timings: unknown keys {sorted(unknown)} (known: {', '.join(TIMING_NAMES)})")
        Timings().overridden(self.timings)  # validates the values

    def _check_priority(self) -> None:
        """Azure's creation-time rules for Spot VMs (its messages; see error-codes-spot)."""
        if self.priority not in (None, REGULAR, SPOT):
            raise ValueError(f"SimVm.priority must be {REGULAR!r} or {SPOT!r}, not {self.priority!r}")
        if self.priority != SPOT:
            if self.eviction_policy is not None:
                raise ValueError("EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines: Eviction policy can be set "
                                 "only on Azure Spot Virtual Machines.")
            if self.max_price is not None:
                raise ValueError("MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines: Max price is supported only "
                                 "for Azure Spot Virtual Machines.")
            return
        if self.hibernation_enabled:
            raise ValueError("OperationNotAllowed: Hibernation capability isn't supported for Spot VMs.")
        if self.eviction_policy not in (None, "Deallocate"):
            raise ValueError(f"SimVm.eviction_policy: only 'Deallocate' is simulated (a VM cannot be deleted "
                             f"here), not {self.eviction_policy!r}")
        price = -1.0 if self.max_price is None else self.max_price
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not (price == -1 or price > 0):
            raise ValueError("MaxPriceValueInvalid: Invalid max price value. The only supported values for max "
                             "price are -1 or a decimal greater than zero.")
        object.__setattr__(self, "eviction_policy", "Deallocate")
        object.__setattr__(self, "max_price", float(price))

    @property
    def spot(self) -> bool:
        return self.priority == SPOT

    @property
    def resource_id(self) -> str:
        return vm_resource_id(self.subscription_id, self.resource_group, self.name)


def vm_resource_id(subscription_id: str, resource_group: str, name: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


VmKey = tuple[str, str, str]  # (subscription, resource group, name), lower-cased: ARM is case-insensitive


def vm_key(subscription_id: str, resource_group: str, name: str) -> VmKey:
    return (subscription_id.lower(), resource_group.lower(), name.lower())


@dataclass(frozen=True)
class OperationError:
    code: str
    message: str


class Operation:
    """A long-running operation: what ``Azure-AsyncOperation`` points at. Loop-owned, mutable."""

    __slots__ = (
        "id", "vm", "action", "hibernate", "origin", "status", "start_time", "end_time", "error",
        "initial_power", "handle", "pending",
    )

    def __init__(self, *, vm: "VmRecord", action: PowerAction, hibernate: bool, origin: Origin, now: float) -> None:
        self.id = str(uuid.uuid4())
        self.vm = vm
        self.action = action
        self.hibernate = hibernate
        self.origin = origin
        self.status = OperationStatus.IN_PROGRESS
        self.start_time = now
        self.end_time: float | None = None
        self.error: OperationError | None = None
        self.initial_power = vm.power
        self.handle: Any = None  # the loop TimerHandle of the next step
        self.pending: tuple[Any, tuple[Any, ...]] | None = None  # that step's (callback, args), to fast-forward

    @property
    def done(self) -> bool:
        return self.status is not OperationStatus.IN_PROGRESS

    @property
    def label(self) -> str:
        return "hibernate" if self.hibernate else self.action.value


class VmRecord:
    """The simulator's live state of one VM. Loop-owned and mutable; snapshots go out as :class:`VmSnapshot`."""

    __slots__ = (
        "spec", "key", "id", "vm_id", "tags", "timings", "power", "hibernated", "provisioning",
        "failure", "operation", "status_time", "time_created", "evictions",
    )

    def __init__(self, spec: SimVm, *, timings: Timings, time_created: str, now: float) -> None:
        self.spec = spec
        self.key = vm_key(spec.subscription_id, spec.resource_group, spec.name)
        self.id = spec.resource_id
        self.vm_id = spec.vm_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "azuresim:" + self.id.lower()))
        self.tags: dict[str, str] = dict(spec.tags)
        self.timings = timings.overridden(spec.timings)
        self.power = PowerState(spec.power_state)
        self.hibernated = False
        self.provisioning = "succeeded"  # succeeded | updating | failed
        self.failure: OperationError | None = None
        self.operation: Operation | None = None
        self.status_time = now
        self.time_created = spec.time_created or time_created
        self.evictions = 0


@dataclass(frozen=True)
class VmSnapshot:
    """A VM's state at one moment, safe to hand to another thread."""

    subscription_id: str
    resource_group: str
    name: str
    power_state: PowerState
    provisioning_state: str
    hibernated: bool
    failure: OperationError | None
    tags: Mapping[str, str]
    operation: str | None  # the in-flight action ("start", "hibernate", …), if any
    operation_origin: Origin | None
    priority: str | None = None
    evictions: int = 0  # how often the platform evicted it (Azure's instance view does not say)

    @classmethod
    def of(cls, vm: VmRecord) -> "VmSnapshot":
        op = vm.operation
        return cls(
            subscription_id=vm.spec.subscription_id,
            resource_group=vm.spec.resource_group,
            name=vm.spec.name,
            power_state=vm.power,
            provisioning_state=vm.provisioning,
            hibernated=vm.hibernated,
            failure=vm.failure,
            tags=dict(vm.tags),
            operation=op.label if op else None,
            operation_origin=op.origin if op else None,
            priority=vm.spec.priority,
            evictions=vm.evictions,
        )


class Refusal(Exception):
    """An action the state machine refuses from the VM's current state (answered 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Phase = tuple[PowerState, float]


def plan(vm: VmRecord, action: PowerAction, *, hibernate: bool) -> list[Phase] | None:
    """The transient states ``action`` passes through from the VM's state, or None for a no-op.

    Raises :class:`Refusal` when the allowed-from table (module docstring) forbids the action.
    """
    name = vm.spec.name
    state = vm.power
    seconds = vm.timings.of(action, hibernate=hibernate)
    if vm.operation is not None:
        raise Refusal(f"Operation '{action.value}' is not allowed on VM '{name}' since another operation is in progress.")
    if action is PowerAction.START:
        return None if state is PowerState.RUNNING else [(PowerState.STARTING, seconds)]
    if action is PowerAction.DEALLOCATE and hibernate:
        if not vm.spec.hibernation_enabled:
            raise Refusal(
                "The Hibernate-Deallocate Operation can only be triggered on a VM that is enabled for hibernation. "
                "Enable the property additionalCapabilities.hibernationEnabled during VM creation, or after "
                "stopping and deallocating the VM."
            )
        if state is not PowerState.RUNNING:
            raise Refusal(
                "The Hibernate-Deallocate Operation can only be triggered on a VM that is successfully "
                "provisioned and is running."
            )
        return [(PowerState.DEALLOCATING, seconds)]
    if action is PowerAction.DEALLOCATE:
        done = state is PowerState.DEALLOCATED and not vm.hibernated
        return None if done else [(PowerState.DEALLOCATING, seconds)]
    if action is PowerAction.POWER_OFF:
        if state is PowerState.DEALLOCATED:
            raise Refusal(
                f"Operation 'powerOff' is not allowed on VM '{name}' since the VM is either deallocated "
                "or marked to be deallocated."
            )
        return None if state is PowerState.STOPPED else [(PowerState.STOPPING, seconds)]
    # restart
    if state is not PowerState.RUNNING:
        raise Refusal("The operation requires the VM to be running (or set to run).")
    return [(PowerState.STARTING, seconds)]


def plan_eviction(vm: VmRecord) -> list[Phase]:
    """The platform takes a Spot VM back: it deallocates (the only eviction policy simulated).

    Raises :class:`Refusal` for a VM that is not Spot, holds nothing to take back, or is in the
    middle of another operation.
    """
    name = vm.spec.name
    if not vm.spec.spot:
        raise Refusal(f"Operation 'simulateEviction' is not allowed on VM '{name}' since it is not an Azure Spot "
                      "Virtual Machine.")
    if vm.operation is not None:
        raise Refusal(f"Operation 'simulateEviction' is not allowed on VM '{name}' since another operation is in progress.")
    if vm.power is PowerState.DEALLOCATED:
        raise Refusal(f"Operation 'simulateEviction' is not allowed on VM '{name}' since the VM is deallocated.")
    return [(PowerState.DEALLOCATING, vm.timings.deallocate)]


def final_state(action: PowerAction) -> PowerState:
    return {
        PowerAction.START: PowerState.RUNNING,
        PowerAction.RESTART: PowerState.RUNNING,
        PowerAction.POWER_OFF: PowerState.STOPPED,
        PowerAction.DEALLOCATE: PowerState.DEALLOCATED,
    }[action]


def as_dict(snapshot: VmSnapshot) -> dict[str, Any]:
    """JSON-ready form of a snapshot, for the admin endpoints."""
    return {
        "subscriptionId": snapshot.subscription_id,
        "resourceGroup": snapshot.resource_group,
        "name": snapshot.name,
        "powerState": snapshot.power_state.value,
        "provisioningState": snapshot.provisioning_state,
        "hibernated": snapshot.hibernated,
        "failure": None if snapshot.failure is None else {"code": snapshot.failure.code, "message": snapshot.failure.message},
        "tags": dict(snapshot.tags),
        "operation": snapshot.operation,
        "operationOrigin": None if snapshot.operation_origin is None else snapshot.operation_origin.value,
        "priority": snapshot.priority,
        "evictions": snapshot.evictions,
    }
