"""What the simulator puts on the wire: ARM operation names, JSON shapes and error bodies.

Kept apart from the HTTP plumbing so the shapes can be read (and compared with the REST spec)
in one place. Messages are Azure's own wording where it is documented.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .model import OperationError, PowerState, SimVm, VmRecord


class OpName(str, enum.Enum):
    """The operation a request maps to; used in the request log, counters and fault matching."""

    GET = "VirtualMachines.Get"
    INSTANCE_VIEW = "VirtualMachines.InstanceView"
    LIST = "VirtualMachines.List"
    LIST_ALL = "VirtualMachines.ListAll"
    START = "VirtualMachines.Start"
    DEALLOCATE = "VirtualMachines.Deallocate"
    POWER_OFF = "VirtualMachines.PowerOff"
    RESTART = "VirtualMachines.Restart"
    SIMULATE_EVICTION = "VirtualMachines.SimulateEviction"
    OPERATION_STATUS = "Operations.Status"
    OPERATION_RESULT = "Operations.Result"
    TAGS_GET = "Tags.GetAtScope"
    TAGS_PUT = "Tags.CreateOrUpdateAtScope"
    TAGS_PATCH = "Tags.UpdateAtScope"
    TAGS_DELETE = "Tags.DeleteAtScope"
    SUBSCRIPTIONS = "Subscriptions.List"
    PERMISSIONS = "Permissions.ListForResourceGroup"
    UNKNOWN = "Unknown"

    @property
    def short(self) -> str:
        return _SHORT[self]


_SHORT = {
    OpName.GET: "get",
    OpName.INSTANCE_VIEW: "instanceView",
    OpName.LIST: "list",
    OpName.LIST_ALL: "listAll",
    OpName.START: "start",
    OpName.DEALLOCATE: "deallocate",
    OpName.POWER_OFF: "powerOff",
    OpName.RESTART: "restart",
    OpName.SIMULATE_EVICTION: "simulateEviction",
    OpName.OPERATION_STATUS: "operationStatus",
    OpName.OPERATION_RESULT: "operationResult",
    OpName.TAGS_GET: "tagsGet",
    OpName.TAGS_PUT: "tagsPut",
    OpName.TAGS_PATCH: "tagsPatch",
    OpName.TAGS_DELETE: "tagsDelete",
    OpName.SUBSCRIPTIONS: "subscriptions",
    OpName.PERMISSIONS: "permissions",
    OpName.UNKNOWN: "unknown",
}

POWER_OPS = frozenset({OpName.START, OpName.DEALLOCATE, OpName.POWER_OFF, OpName.RESTART})
READ_OPS = frozenset({OpName.GET, OpName.INSTANCE_VIEW, OpName.LIST, OpName.LIST_ALL})
TAG_OPS = frozenset({OpName.TAGS_GET, OpName.TAGS_PUT, OpName.TAGS_PATCH, OpName.TAGS_DELETE})

# RBAC action each operation needs (Microsoft's action strings). Listing subscriptions needs none:
# ARM answers every signed-in caller with the subscriptions it has any access to.
REQUIRED_ACTION: Mapping[OpName, str] = {
    OpName.GET: "Microsoft.Compute/virtualMachines/read",
    OpName.LIST: "Microsoft.Compute/virtualMachines/read",
    OpName.LIST_ALL: "Microsoft.Compute/virtualMachines/read",
    OpName.INSTANCE_VIEW: "Microsoft.Compute/virtualMachines/instanceView/read",
    OpName.START: "Microsoft.Compute/virtualMachines/start/action",
    OpName.DEALLOCATE: "Microsoft.Compute/virtualMachines/deallocate/action",
    OpName.POWER_OFF: "Microsoft.Compute/virtualMachines/powerOff/action",
    OpName.RESTART: "Microsoft.Compute/virtualMachines/restart/action",
    OpName.SIMULATE_EVICTION: "Microsoft.Compute/virtualMachines/simulateEviction/action",
    OpName.OPERATION_STATUS: "Microsoft.Compute/locations/operations/read",
    OpName.OPERATION_RESULT: "Microsoft.Compute/locations/operations/read",
    OpName.TAGS_GET: "Microsoft.Resources/tags/read",
    OpName.TAGS_PUT: "Microsoft.Resources/tags/write",
    OpName.TAGS_PATCH: "Microsoft.Resources/tags/write",
    OpName.TAGS_DELETE: "Microsoft.Resources/tags/delete",
    # https://learn.microsoft.com/rest/api/authorization/permissions/list-for-resource-group
    OpName.PERMISSIONS: "Microsoft.Authorization/permissions/read",
}


class ArmError(Exception):
    """An ARM error answer: status, ``{"error": {"code", "message"[, "details"]}}`` and extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return json.dumps({"error": error}).encode()


def missing_api_version() -> ArmError:
    return ArmError(
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    )


def resource_group_not_found(resource_group: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found.")


def subscription_not_found(subscription_id: str) -> ArmError:
    return ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.")


def vm_not_found(resource_group: str, name: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group '{resource_group}' "
        "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def authorization_failed(object_id: str, action: str, scope: str) -> ArmError:
    return ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{object_id}' with object id '{object_id}' does not have authorization to perform action "
        f"'{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please "
        "refresh your credentials.",
    )


def _challenge(description: str) -> dict[str, str]:
    # error="invalid_token" (not "insufficient_claims"): azure-core only re-tries a 401 for a CAE
    # claims challenge, so this header makes the SDK fail at once instead of looping.
    return {
        "WWW-Authenticate": (
            'Bearer authorization_uri="https://login.microsoftonline.com/common", '
            f'error="invalid_token", error_description="{description}"'
        )
    }


def authentication_missing() -> ArmError:
    text = "Authentication failed. The 'Authorization' header is missing."
    return ArmError(401, "AuthenticationFailed", text, headers=_challenge(text))


def authentication_bad_header() -> ArmError:
    text = "Authentication failed. The 'Authorization' header is provided in an invalid format."
    return ArmError(401, "AuthenticationFailedInvalidHeader", text, headers=_challenge(text))


def authentication_invalid_token() -> ArmError:
    text = "The access token is invalid."
    return ArmError(401, "InvalidAuthenticationToken", text, headers=_challenge(text))


def authentication_expired_token(expired_at: str, now: str) -> ArmError:
    """ARM's answer to a token past its expiry (the ``exp`` claim): 401 ExpiredAuthenticationToken
    with an ``invalid_token`` challenge, as live ARM sends it."""
    text = f"The access token expiry UTC time '{expired_at}' is earlier than current UTC time '{now}'."
    return ArmError(401, "ExpiredAuthenticationToken", text, headers=_challenge(text))


def conflict(message: str) -> ArmError:
    return ArmError(409, "OperationNotAllowed", message)


def not_found_route(path: str) -> ArmError:
    return ArmError(404, "NotFound", f"The Azure simulator does not serve '{path}'.")


def invalid_request_content(reason: str) -> ArmError:
    return ArmError(400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: {reason}")


# ---- capacity and quota failures of a long-running operation ----

_ALLOCATION_GUIDANCE = "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance"


def default_failure_message(code: str, vm: SimVm | None = None, *, hibernated: bool = False) -> str:
    """Azure's wording for the failures an operator of GPU VMs meets most (of a start when
    ``hibernated``: a resume)."""
    size = vm.size if vm else ""
    location = vm.location if vm else ""
    if code == "AllocationFailed" and hibernated:
        # hibernate-resume-troubleshooting: "Unable to resume a VM"
        return (
            "VM allocation failed from hibernated state due to insufficient capacity. Try again later or "
            "alternatively stop-deallocate the VM and try starting the VM."
        )
    if code == "OverconstrainedResumeFromHibernatedStateAllocationRequest":
        return (
            "Allocation failed. VM(s) with the following constraints can't be allocated, because the condition is too "
            "restrictive. Remove some constraints and try again. Constraints applied are: Networking Constraints "
            "(such as Accelerated Networking or IPv6), Resuming from hibernated state (retry starting the VM after "
            "some time or alternatively stop-deallocate the VM and try starting the VM again)."
        )
    if code == "SkuNotAvailable":  # error-codes-spot
        resource = vm.name if vm else ""
        subscription = vm.subscription_id if vm else ""
        return (
            f"The requested tier for resource '{resource}' is currently not available in location '{location}' for "
            f"subscription '{subscription}'. Try another tier or deploy to a different location."
        )
    if code == "SpotPriceGreaterThanProvidedMaxPrice":  # error-codes-spot
        max_price = vm.max_price if vm and vm.max_price is not None else -1.0
        spot_price = max(max_price, 0.0) + 0.5  # any price above the VM's maximum
        return (
            f"Unable to perform operation 'Start' since the provided max price '{max_price:g} USD' is lower than the "
            f"current spot price '{spot_price:g} USD' for Azure Spot Virtual Machine size '{size}'."
        )
    if code == "AllocationFailed":
        return (
            "Allocation failed. We do not have sufficient capacity for the requested VM size in this region. "
            + _ALLOCATION_GUIDANCE
        )
    if code == "ZonalAllocationFailed":
        return (
            "Allocation failed. We do not have sufficient capacity for the requested VM size in this zone. "
            + _ALLOCATION_GUIDANCE
        )
    if code in ("OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest"):
        return (
            "Allocation failed. VM(s) with the following constraints cannot be allocated, because the condition "
            "is too restrictive. Please remove some constraints and try again. Constraints applied are: "
            f"- VM Size: {size}. " + _ALLOCATION_GUIDANCE
        )
    if code == "OperationNotAllowed":
        family = quota_family(size)
        return (
            f"Operation could not be completed as it results in exceeding approved {family} Cores quota. "
            f"Additional details - Deployment Model: Resource Manager, Location: {location}, Current Limit: 24, "
            "Current Usage: 24, Additional Required: 24, (Minimum) New Limit Required: 48. Submit a request for "
            "Quota increase at https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView "
            "by specifying parameters listed in the 'Details' section for deployment to succeed. Please read more "
            "about quota limits at https://docs.microsoft.com/en-us/azure/azure-supportability/per-vm-quota-requests"
        )
    if code == "OperationPreempted":
        return "Operation execution has been preempted by a more recent operation."
    return f"The operation failed with error code '{code}' (injected by the Azure simulator)."


def quota_family(size: str) -> str:
    """``Standard_NC24ads_A100_v4`` -> ``standardNCADSA100v4Family`` (Azure's quota family naming)."""
    body = size.split("_", 1)[1] if size.lower().startswith("standard_") else size
    parts = body.split("_")
    head = "".join(ch for ch in parts[0] if not ch.isdigit()).upper()
    rest = "".join(p if p[:1].lower() == "v" and p[1:].isdigit() else p.upper() for p in parts[1:])
    return f"standard{head}{rest}Family"


# ---- resource shapes ----


def instance_view(vm: VmRecord, wall: str, *, hide_power_state: bool = False) -> dict[str, Any]:
    """``properties.instanceView``: provisioning status, power status (unless hidden), hibernation."""
    if vm.provisioning == "failed" and vm.failure is not None:
        prov: dict[str, Any] = {
            "code": f"ProvisioningState/failed/{vm.failure.code}",
            "level": "Error",
            "displayStatus": "Provisioning failed",
            "message": vm.failure.message,
            "time": wall,
        }
    elif vm.provisioning == "updating":
        prov = {"code": "ProvisioningState/updating", "level": "Info", "displayStatus": "Updating", "time": wall}
    else:
        prov = {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": wall}
    statuses = [prov]
    if not hide_power_state:
        statuses.append({"code": f"PowerState/{vm.power.value}", "level": "Info", "displayStatus": vm.power.display})
    if vm.hibernated and vm.power is PowerState.DEALLOCATED:
        statuses.append({"code": "HibernationState/Hibernated", "level": "Info", "displayStatus": "VM hibernated"})
    return {"computerName": vm.spec.name, "statuses": statuses}


_PROVISIONING = {"succeeded": "Succeeded", "updating": "Updating", "failed": "Failed"}


def vm_resource(vm: VmRecord, *, view: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``VirtualMachine`` resource as GET and list return it (instance view only when asked)."""
    spec = vm.spec
    props: dict[str, Any] = {
        "vmId": vm.vm_id,
        "hardwareProfile": {"vmSize": spec.size},
        "provisioningState": _PROVISIONING[vm.provisioning],
        "timeCreated": vm.time_created,
    }
    if spec.hibernation_enabled:
        props["additionalCapabilities"] = {"hibernationEnabled": True}
    if spec.priority is not None:
        props["priority"] = spec.priority
    if spec.spot:
        props["evictionPolicy"] = spec.eviction_policy
        props["billingProfile"] = {"maxPrice": spec.max_price}
    if view is not None:
        props["instanceView"] = view
    body: dict[str, Any] = {
        "name": spec.name,
        "id": vm.id,
        "type": "Microsoft.Compute/virtualMachines",
        "location": spec.location,
    }
    if vm.tags:
        body["tags"] = dict(vm.tags)
    body["properties"] = props
    return body


def vm_status_only(vm: VmRecord, view: dict[str, Any]) -> dict[str, Any]:
    """A list item under ``statusOnly=true``: identity plus the instance view, nothing else.

    Deliberately lean (no tags, no hardware profile): what live Azure adds here is unverified, so a
    client must not come to rely on more than the power state from these pages.
    """
    return {
        "name": vm.spec.name,
        "id": vm.id,
        "type": "Microsoft.Compute/virtualMachines",
        "location": vm.spec.location,
        "properties": {"vmId": vm.vm_id, "instanceView": view},
    }


def tags_resource(vm: VmRecord) -> dict[str, Any]:
    return {
        "id": vm.id + "/providers/Microsoft.Resources/tags/default",
        "name": "default",
        "type": "Microsoft.Resources/tags",
        "properties": {"tags": dict(vm.tags)},
    }


def operation_status(
    op_id: str, status: str, start: str, end: str | None, error: OperationError | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": op_id, "status": status, "startTime": start}
    if end is not None:
        body["endTime"] = end
    if error is not None:
        body["error"] = {"code": error.code, "message": error.message}
    return body


# ---- tag rules (ARM) ----

TAG_NAME_FORBIDDEN = frozenset("<>%&\\?/")
MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256


def validate_tags(tags: Mapping[str, Any], *, check_values: bool = True) -> None:
    """Raise ARM's 400 errors for tag names or values that break its rules."""
    bad_chars = [n for n in tags if any(c in TAG_NAME_FORBIDDEN or ord(c) < 32 for c in n)]
    if any(not n.strip() for n in tags):
        raise ArmError(
            400, "InvalidTagName",
            "The tag name must be non-null, non-empty and non-whitespace only. Please provide an actual value.",
        )
    if bad_chars:
        raise ArmError(
            400, "InvalidTagNameCharacters",
            f"The tag names '{', '.join(bad_chars)}' have reserved characters '<,>,%,&,\\,?,/' or control characters.",
        )
    too_long = [n for n in tags if len(n) > MAX_TAG_NAME]
    if too_long:
        raise ArmError(
            400, "InvalidTagName",
            f"Tag key too large. Following tag name '{', '.join(too_long)}' exceeded the maximum length. "
            f"Maximum allowed length for tag name - '{MAX_TAG_NAME}' characters.",
        )
    if not check_values:
        return
    for value in tags.values():
        if not isinstance(value, str):
            raise invalid_request_content(f"tag values must be strings, not {type(value).__name__}")
    long_values = [v for v in tags.values() if len(v) > MAX_TAG_VALUE]
    if long_values:
        raise ArmError(
            400, "InvalidTagValueLength",
            f"Tag value too large. Following tag value '{', '.join(long_values)}' exceeded the maximum length. "
            f"Maximum allowed length for tag value - '{MAX_TAG_VALUE}' characters.",
        )


def check_tag_count(tags: Mapping[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise ArmError(
            400, "InvalidTags",
            f"Too many tags specified. Requested tag count - '{len(tags)}'. Maximum number of tags allowed - '{MAX_TAGS}'.",
        )


def merge_tags(current: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """Merge ``new`` into ``current``; tag names compare case-insensitively and keep their first casing."""
    merged = dict(current)
    lower = {k.lower(): k for k in merged}
    for name, value in new.items():
        merged[lower.get(name.lower(), name)] = value
    return merged


def delete_tags(current: Mapping[str, str], remove: Mapping[str, str]) -> dict[str, str]:
    """Delete by name, or by name and value when a value is given (names case-insensitive, values not)."""
    wanted = {k.lower(): v for k, v in remove.items()}
    kept = {}
    for name, value in current.items():
        if name.lower() in wanted and wanted[name.lower()] in ("", value):
            continue
        kept[name] = value
    return kept


def subscriptions(ids: Iterable[str]) -> dict[str, Any]:
    """Subscriptions - List (api-version 2022-12-01): one page, as a tenant with few has it."""
    return {"value": [
        {"id": f"/subscriptions/{sid}", "subscriptionId": sid, "displayName": f"simulated {sid[:8]}",
         "state": "Enabled", "tenantId": SIMULATED_TENANT}
        for sid in ids
    ]}


SIMULATED_TENANT = "00000000-0000-0000-0000-00000000a2e5"


def permissions(grants: Iterable[tuple[tuple[str, ...], tuple[str, ...]]]) -> dict[str, Any]:
    """Permissions - List For Resource Group: one entry per role assignment (actions, notActions)."""
    return {"value": [
        {"actions": list(actions), "notActions": list(not_actions), "dataActions": [], "notDataActions": []}
        for actions, not_actions in grants
    ]}
