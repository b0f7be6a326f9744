"""Power states, intents and what one look at a VM tells us.

Azure reports a VM's state as a list of instance-view statuses such as
``ProvisioningState/succeeded`` and ``PowerState/running``. The list has no fixed order and the
PowerState entry can be missing altogether (documented, and the cause of the ``statuses[1]``
crashes in the scripts this project replaces), so parsing looks for codes by prefix and turns
absence into ``PowerState.UNKNOWN`` instead of guessing.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.reasons import Failure


class PowerState(str, enum.Enum):
    """The VM's power state as the GpuVm status shows it (``status.powerState``)."""

    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DEALLOCATING = "Deallocating"
    DEALLOCATED = "Deallocated"
    HIBERNATED = "Hibernated"  # deallocated with its memory on the OS disk: a start resumes it
    UNKNOWN = "Unknown"

    @property
    def settled(self) -> bool:
        """A state Azure leaves a VM in until someone asks for something else."""
        return self in (PowerState.RUNNING, PowerState.STOPPED, PowerState.DEALLOCATED, PowerState.HIBERNATED)

    def reaches(self, target: PowerState) -> bool:
        """The VM is where ``target`` asks it to be: a hibernated VM is deallocated too (Azure
        shows ``PowerState/deallocated`` for it), so hibernating is one way to reach Deallocated."""
        return self is target or (self is PowerState.HIBERNATED and target is PowerState.DEALLOCATED)

    @property
    def transitional(self) -> bool:
        return self in (PowerState.STARTING, PowerState.STOPPING, PowerState.DEALLOCATING)

    @property
    def billed(self) -> bool:
        """Compute is billed from starting to stopped; only (de)allocating, deallocated and
        hibernated are free (a hibernated VM pays for its disks only)."""
        return self in (PowerState.STARTING, PowerState.RUNNING, PowerState.STOPPING, PowerState.STOPPED)


class ProvisioningState(str, enum.Enum):
    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"
    MIGRATING = "Migrating"
    UNKNOWN = "Unknown"

    @property
    def busy(self) -> bool:
        """Azure is working on the VM: a new power operation would be refused with 409."""
        return self in (
            ProvisioningState.CREATING,
            ProvisioningState.UPDATING,
            ProvisioningState.DELETING,
            ProvisioningState.MIGRATING,
        )


class DesiredState(str, enum.Enum):
    """What ``spec.desiredState`` may ask for. ``Stopped`` is absent on purpose: it is billed.

    ``Running`` and ``Deallocated`` are overrides (a maintenance switch, a GitOps pin); ``Auto``
    lets demand decide (claims, the schedule, the idle timeout: ``controller.demand``), so it has
    no power state of its own until ``decide`` resolves it to one of the other two.
    """

    RUNNING = "Running"
    DEALLOCATED = "Deallocated"
    AUTO = "Auto"

    @property
    def power_state(self) -> PowerState:
        if self is DesiredState.AUTO:
            raise ValueError("desiredState Auto has no power state of its own: resolve it from the demand first")
        return PowerState(self.value)

    @property
    def is_override(self) -> bool:
        """Running or Deallocated: claims and the schedule are ignored."""
        return self is not DesiredState.AUTO


class StopMode(str, enum.Enum):
    """How "off" is reached (``spec.stopMode``). Hibernate needs a VM created hibernation-capable."""

    DEALLOCATE = "Deallocate"
    HIBERNATE = "Hibernate"


class DriftPolicy(str, enum.Enum):
    ENFORCE = "Enforce"
    REPORT = "Report"


class DeletionPolicy(str, enum.Enum):
    RETAIN = "Retain"
    DEALLOCATE = "Deallocate"


class Action(str, enum.Enum):
    """A power operation the operator may request. One per VM in flight, at most."""

    START = "Start"
    DEALLOCATE = "Deallocate"

    @property
    def target(self) -> PowerState:
        return PowerState.RUNNING if self is Action.START else PowerState.DEALLOCATED

    @property
    def transient(self) -> PowerState:
        return PowerState.STARTING if self is Action.START else PowerState.DEALLOCATING

    @property
    def verb(self) -> str:
        return "start" if self is Action.START else "deallocate"


class Trigger(str, enum.Enum):
    """Why an operation was requested (``status.lastOperation.trigger``)."""

    SPEC = "Spec"
    DRIFT = "Drift"
    DELETION = "Deletion"
    CLAIM = "Claim"  # desiredState Auto: a live GpuVmClaim wants the VM
    IDLE = "Idle"  # desiredState Auto: idleTimeout passed with no demand
    SCHEDULE = "Schedule"  # desiredState Auto: a schedule window opened
    EVICTION = "Eviction"  # a Spot VM Azure deallocated while wanted is started again


_POWER_CODES: Mapping[str, PowerState] = {
    "starting": PowerState.STARTING,
    "running": PowerState.RUNNING,
    "stopping": PowerState.STOPPING,
    "stopped": PowerState.STOPPED,
    "deallocating": PowerState.DEALLOCATING,
    "deallocated": PowerState.DEALLOCATED,
}

_PROVISIONING_CODES: Mapping[str, ProvisioningState] = {s.value.lower(): s for s in ProvisioningState}


@dataclass(frozen=True)
class ParsedStatuses:
    power_state: PowerState
    provisioning_state: ProvisioningState
    provisioning_error: str | None = None  # the error code of ``ProvisioningState/failed/<code>``
    hibernated: bool = False
    unknown_power_code: str | None = None  # a PowerState/… code this operator does not know


def parse_statuses(codes: Iterable[str | None]) -> ParsedStatuses:
    """Read power and provisioning state from instance-view status codes, in any order.

    Unknown power codes (``PowerState/unknown``, anything new Azure invents) map to UNKNOWN;
    so does a missing entry. Codes are compared case-insensitively as Azure's casing varies.
    ``PowerState/deallocated`` with ``HibernationState/Hibernated`` is HIBERNATED.
    """
    power = PowerState.UNKNOWN
    provisioning = ProvisioningState.UNKNOWN
    error: str | None = None
    hibernated = False
    unknown: str | None = None
    for code in codes:
        if not code:
            continue
        parts = code.split("/")
        kind = parts[0].lower()
        value = parts[1].lower() if len(parts) > 1 else ""
        if kind == "powerstate":
            power = _POWER_CODES.get(value, PowerState.UNKNOWN)
            unknown = None if power is not PowerState.UNKNOWN else code[:64]
        elif kind == "provisioningstate":
            provisioning = _PROVISIONING_CODES.get(value, ProvisioningState.UNKNOWN)
            error = "/".join(parts[2:]) or None
        elif kind == "hibernationstate":
            hibernated = value == "hibernated"
    if hibernated and power is PowerState.DEALLOCATED:
        power = PowerState.HIBERNATED
    return ParsedStatuses(power, provisioning, error, hibernated, unknown)


@dataclass(frozen=True)
class VmFacts:
    """What does not change with power: shown in ``status.vm``."""

    resource_id: str | None  # None when Azure's answer left it out
    name: str | None
    vm_id: str | None = None
    size: str | None = None
    location: str | None = None
    priority: str | None = None  # "Spot", "Regular", or None: not given at creation, or not in this source
    hibernation_enabled: bool | None = None  # additionalCapabilities.hibernationEnabled; None: not in this source


@dataclass(frozen=True)
class Observation:
    """One look at a VM, from whichever source: a GET, a list page, or a finished operation.

    ``tags`` is None when the source does not carry them reliably (statusOnly list pages):
    the tag guard then keeps the last tags it saw instead of treating the VM as untagged.
    """

    power_state: PowerState
    provisioning_state: ProvisioningState
    observed_at: dt.datetime
    facts: VmFacts | None = None
    tags: Mapping[str, str] | None = None
    provisioning_failure: Failure | None = None  # from ProvisioningState/failed/<code>, translated
    source: str = "get"
    power_code: str | None = None  # the raw PowerState/… code when Azure sent one this operator does not know

    @property
    def busy(self) -> bool:
        """Azure is in the middle of something on this VM: asking for more now gets a 409."""
        return self.power_state.transitional or self.provisioning_state.busy
