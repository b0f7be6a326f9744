"""The GpuVm resource as the operator reads it: names, the spec, and its validation.

The CRD's schema makes a real apiserver reject bad specs, but the operator must not trust that:
objects may come from an apiserver without validation, from before a CRD upgrade, or from a
hand-edited etcd. So the same rules are checked here and a violation becomes
``Ready=False, reason InvalidSpec`` naming the field — never an exception in a handler.
The patterns below are the CRD's own (a test keeps them equal).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.power import DeletionPolicy, DesiredState, DriftPolicy, StopMode
from controller.reasons import SpecError
from controller.schedule import Schedule, parse_schedule

GROUP = "gpuvm.dev"
VERSION = "v1alpha1"
PLURAL = "gpuvms"
KIND = "GpuVm"

SUBSCRIPTION_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
RESOURCE_GROUP_PATTERN = r"^[-\w.()]{0,89}[-\w()]$"
VM_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
RESOURCE_ID_PATTERN = (
    r"^/[Ss]ubscriptions/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"/[Rr]esource[Gg]roups/([-\w.()]{0,89}[-\w()])"
    r"/[Pp]roviders/[Mm]icrosoft\.[Cc]ompute/[Vv]irtual[Mm]achines/([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})$"
)

# spec.idleTimeout: hours, minutes and seconds in this order, each optional but not all (the CRD
# adds minLength 2 for that), like a Go duration limited to what a timeout needs (no ms, no fractions).
DURATION_PATTERN = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$"
# The operator's default when spec.idleTimeout is absent (no CRD default: the operator decides it).
DEFAULT_IDLE_TIMEOUT = dt.timedelta(minutes=10)

# re.ASCII: the apiserver evaluates these with Go's RE2, where \w is ASCII-only.
_SUBSCRIPTION = re.compile(SUBSCRIPTION_PATTERN, re.ASCII)
_RESOURCE_GROUP = re.compile(RESOURCE_GROUP_PATTERN, re.ASCII)
_VM_NAME = re.compile(VM_NAME_PATTERN, re.ASCII)
_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN, re.ASCII)
_DURATION = re.compile(DURATION_PATTERN, re.ASCII)


@dataclass(frozen=True)
class VmRef:
    """Which Azure VM. ARM names are case-insensitive, so identity uses ``key``."""

    subscription_id: str
    resource_group: str
    name: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def key(self) -> str:
        return self.resource_id.lower()


@dataclass(frozen=True)
class GpuVmSpec:
    """The parsed spec. ``idle_timeout`` and ``schedule`` matter only under desiredState Auto."""

    vm: VmRef
    desired_state: DesiredState
    drift_policy: DriftPolicy
    deletion_policy: DeletionPolicy
    idle_timeout: dt.timedelta = DEFAULT_IDLE_TIMEOUT
    stop_mode: StopMode = StopMode.DEALLOCATE
    schedule: Schedule | None = None


_SHOWN = 64  # characters of a bad value quoted back: a 1 MB string must not become a 1 MB message


def _shown(value: Any) -> str:
    """A bad value as the message quotes it: strings as they are, anything else as JSON-ish
    text, cut to a readable length on one line."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split()) if text.strip() else text
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(text)} characters)"


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as kubectl users know them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _enum(spec: Mapping[str, Any], name: str, enum_type: type, default: Any) -> Any:
    value = spec.get(name, default.value)
    try:
        return enum_type(value)
    except (ValueError, TypeError):
        allowed = ", ".join(f'"{m.value}"' for m in enum_type)
        raise _Invalid(f"spec.{name}", f'unsupported value "{_shown(value)}": supported values: {allowed}') from None


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.error = SpecError(field, message)


def _string(vm: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = vm.get(name)
    if not isinstance(value, str):
        raise _Invalid(f"spec.vm.{name}", f"must be a string, got {json_type(value)}")
    if not pattern.fullmatch(value):
        raise _Invalid(f"spec.vm.{name}", f'"{_shown(value)}" is not {what}')
    return value


def _vm_ref(vm: Any, default_subscription: str | None) -> VmRef:
    if vm is None:
        raise _Invalid("spec.vm", "required: give resourceId, or resourceGroup and name")
    if not isinstance(vm, Mapping):
        raise _Invalid("spec.vm", f"must be an object with resourceId, or resourceGroup and name; got {json_type(vm)}")
    by_id = "resourceId" in vm
    by_name = "resourceGroup" in vm or "name" in vm
    if by_id and (by_name or "subscriptionId" in vm):
        raise _Invalid("spec.vm", "give either resourceId, or resourceGroup and name (with an optional subscriptionId), not both")
    if by_id:
        rid = vm["resourceId"]
        if not isinstance(rid, str):
            raise _Invalid("spec.vm.resourceId", f"must be a string, got {json_type(rid)}")
        if not (m := _RESOURCE_ID.fullmatch(rid)):
            raise _Invalid(
                "spec.vm.resourceId",
                f'"{_shown(rid)}" is not a VM resource id '
                "(/subscriptions/<uuid>/resourceGroups/<group>/providers/Microsoft.Compute/virtualMachines/<name>)",
            )
        return VmRef(subscription_id=m.group(1).lower(), resource_group=m.group(2), name=m.group(3))
    if "resourceGroup" not in vm or "name" not in vm:
        missing = "resourceGroup" if "resourceGroup" not in vm else "name"
        raise _Invalid(f"spec.vm.{missing}", "required: give resourceId, or resourceGroup and name")
    group = _string(vm, "resourceGroup", _RESOURCE_GROUP, "a resource group name")
    name = _string(vm, "name", _VM_NAME, "a VM name")
    if "subscriptionId" in vm:
        subscription = _string(vm, "subscriptionId", _SUBSCRIPTION, "a subscription id (a UUID)")
    elif default_subscription:
        subscription = default_subscription
    else:
        raise _Invalid(
            "spec.vm.subscriptionId",
            "required: this operator has no default subscription (set --subscription-id or AZURE_SUBSCRIPTION_ID)",
        )
    return VmRef(subscription_id=subscription.lower(), resource_group=group, name=name)


def parse_duration(value: Any) -> dt.timedelta | None:
    """``10m``, ``0s``, ``1h30m`` -> timedelta; None for anything else (the callers say where)."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if match is None:
        return None
    hours, minutes, seconds = (int(part[:-1]) if part else 0 for part in match.groups())
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _idle_timeout(spec: Mapping[str, Any]) -> dt.timedelta:
    value = spec.get("idleTimeout")
    if value is None:
        return DEFAULT_IDLE_TIMEOUT
    parsed = parse_duration(value)
    if parsed is None:
        shown = f'"{value}"' if isinstance(value, str) else f"a {type(value).__name__}"
        raise _Invalid("spec.idleTimeout", f"{shown} is not a duration: give hours, minutes and seconds in this order, like 10m, 0s or 1h30m")
    return parsed


def parse_spec(spec: Any, *, default_subscription: str | None) -> GpuVmSpec | SpecError:
    """Turn ``.spec`` into a GpuVmSpec, or say which field is wrong and how."""
    if spec is None:
        return SpecError("spec", "required")
    if not isinstance(spec, Mapping):
        return SpecError("spec", f"must be an object, got {json_type(spec)}")
    try:
        vm = _vm_ref(spec.get("vm"), default_subscription)
        desired = _enum(spec, "desiredState", DesiredState, DesiredState.DEALLOCATED)
        drift = _enum(spec, "driftPolicy", DriftPolicy, DriftPolicy.ENFORCE)
        deletion = _enum(spec, "deletionPolicy", DeletionPolicy, DeletionPolicy.RETAIN)
        idle_timeout = _idle_timeout(spec)
        stop_mode = _enum(spec, "stopMode", StopMode, StopMode.DEALLOCATE)
    except _Invalid as e:
        return e.error
    schedule = None if spec.get("schedule") is None else parse_schedule(spec["schedule"])
    if isinstance(schedule, SpecError):
        return schedule
    return GpuVmSpec(vm=vm, desired_state=desired, drift_policy=drift, deletion_policy=deletion,
                     idle_timeout=idle_timeout, stop_mode=stop_mode, schedule=schedule)
